"""How a sparse net's budget of weights is shared among its hidden layers (train.py --distribution): uniform, each
layer at the target; or Erdős–Rényi-Kernel's (Evci et al. 2020, after Mocanu et al. 2018), each layer's density
proportional to (n_in + n_out) / (n_in · n_out), so that the large layers give up more than the small ones, scaled
so that the hidden layers together keep what the target leaves.
"""
DISTRIBUTIONS = ["uniform", "erk"]


def kept_counts(shapes, target, distribution="uniform"):
    """(the number of weights each hidden layer of `shapes` ([out, in] each) keeps at `target` percent, a note
    or ""). ERK's density can exceed 1 in a small layer at a low target: that layer is then kept whole and the
    others share the rest, as the RigL code does, and the note says so."""
    sizes = [rows * columns for rows, columns in shapes]
    if distribution == "uniform":  # as per-layer pruning counts: round(fraction · n) pruned
        return [n - round(target / 100 * n) for n in sizes], ""
    if distribution != "erk":
        raise ValueError(f"unknown distribution {distribution!r}: expected one of {DISTRIBUTIONS}")
    budget = sum(sizes) - round(target / 100 * sum(sizes))
    raw = [(rows + columns) / (rows * columns) for rows, columns in shapes]
    dense = set()
    while True:
        rest = budget - sum(sizes[i] for i in dense)
        scale = rest / sum(sizes[i] * raw[i] for i in range(len(sizes)) if i not in dense)
        over = {i for i in range(len(sizes)) if i not in dense and scale * raw[i] > 1}
        if not over:
            break
        dense |= over
    counts = [sizes[i] if i in dense else round(scale * raw[i] * sizes[i]) for i in range(len(sizes))]
    note = ""
    if dense:
        named = ", ".join(str(i + 1) for i in sorted(dense))
        note = (f"ERK at {target:g} % would give hidden layer{'s' * (len(dense) > 1)} {named} a density above 1: "
                f"kept whole, the other layers share the rest")
    return counts, note
