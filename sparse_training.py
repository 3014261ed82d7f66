"""Training the net to be sparse, from its initialisation, rather than pruning it after training.

gmp: gradual magnitude pruning (Zhu & Gupta 2017). Each hidden layer's sparsity rises from 0 to the target
on the cubic schedule s_t = s_f · (1 − (1 − (t − t0) / (n·Δt))³), the masks recomputed from |w| every Δt
steps, the pruned weights held at exactly zero after each step (prune.hold_at_zero), so that the net trains
on with what it keeps; once a layer's mask prunes most of it, its steps cost what its kept weights do
(masked_layer.py). The schedule starts after GMP_START of the training steps and ends at GMP_END,
leaving the rest to train the final masks, as the paper's schedules do. gmp-global ranks the hidden layers'
weights together, as global pruning does, so that each layer ends with the sparsity its magnitudes earn it.

vd: sparse variational dropout (Molchanov et al. 2017), its layers in sparse_layers.py. The loss is the
cross-entropy plus the KL divergence from the log-uniform prior, divided by the number of training images,
its weight warmed up from 0 so that the net first learns what the data needs, to 0.1 by default. At 1, the
ELBO of the paper, the net zeroes 99.7 % of its hidden weights but loses about 3 points of accuracy in the 15
epochs here; at 0.1 it zeroes 97 % and keeps within 1.5 points of the dense net (docs/sparse-training.md).

l0, l0-unit: L0 regularisation (Louizos et al. 2018), a hard-concrete gate on each hidden weight (l0) or on
each unit's row of weights (l0-unit), its layers in sparse_layers.py. The loss adds strength / (training
images) times the expected number of weights whose gate is open.

vd and l0 swap the hidden layers for layers of their own while they train; finish() puts plain ones back,
holding the trained values unthresholded (vd: θ; l0: θ·ẑ where the gate is open, θ where it is closed),
so that every pruning method applies to the checkpoint, and returns the learned scores by which eval.py
--sparsity learned ranks the weights (vd: −log α; l0: the gate's log α).
"""

import torch
from torch import nn

import utils
from masked_layer import MaskedLinear, mask_hidden, unmask_hidden
from prune import global_magnitude, hold_at_zero, per_layer, weight_mask
from sparse_layers import GatedLinear, VariationalLinear

GMP_START, GMP_END, GMP_EVERY = 0.1, 0.7, 100  # shares of the training steps, and Δt in steps
METHODS = ["gmp", "gmp-global", "vd", "l0", "l0-unit"]
GMP = {"gmp": per_layer(weight_mask), "gmp-global": global_magnitude}  # each layer to the target, or all together
DEFAULT_STRENGTH = {"vd": 0.1, "l0": 0.1, "l0-unit": 0.1}  # vd: the KL's final weight (1: the ELBO); l0: λ

VD_WARMUP = 0.3  # share of the steps over which the KL's weight rises from 0 to its final value

# Louizos et al. train 200 epochs at Adam's 0.001; in train.py's 15 a gate would move log α by 3.5 at most, and few
# would ever shut. The gates learn at L0_GATE_LR times the weights' rate instead.
L0_GATE_LR = 10.0


def gmp_sparsity(step, target, start, end):
    """Zhu & Gupta's sparsity (a fraction) at `step`: 0 before `start`, `target` from `end` on."""
    if step < start:
        return 0.0
    progress = min(1.0, (step - start) / (end - start))
    return target * (1 - (1 - progress) ** 3)


def gradual_magnitude_pruning(model, target, steps, every=GMP_EVERY, rule=GMP["gmp"]):
    """Put masks on the hidden layers of `model` (each layer's weight_mask) and return the function to call after
    each training step, which holds the pruned weights at zero and recomputes the masks by `rule` (one of GMP)
    every `every` steps and at the last of `steps`, to `target` percent at the end."""
    masks = [torch.ones_like(layer.weight) for layer in model.hidden]
    mask_hidden(model, masks)  # their products over the kept weights only, once the masks prune most
    zero_pruned = hold_at_zero(model.hidden, masks)
    start = round(GMP_START * steps)
    end, done = max(round(GMP_END * steps), start + 1), [0]

    def after_step():
        zero_pruned()
        done[0] += 1
        if done[0] % every == 0 or done[0] == steps:
            fraction = gmp_sparsity(done[0], target / 100, start, end) if done[0] < steps else target / 100
            with torch.no_grad():  # from the masked weights: a pruned one is 0, so it stays pruned
                for mask, new in zip(masks, rule([layer.weight for layer in model.hidden], fraction)):
                    mask.copy_(new)
            zero_pruned()
    return after_step


# ---------------------------------------------------------------------------------------------------
# Sparse variational dropout


def variational_dropout(model, steps, images, strength=1.0):
    """Make the hidden layers of `model` variational; return the penalty to add to each step's loss: the KL
    over `images` (the training set's size), its weight rising from 0 to `strength` over VD_WARMUP of `steps`."""
    for i, layer in enumerate(model.hidden):
        model.layers[i] = VariationalLinear(layer.weight)
    done = [0]

    def penalty():
        done[0] += 1
        warmup = min(1.0, done[0] / max(1, VD_WARMUP * steps))
        return strength * warmup * sum(layer.kl() for layer in model.hidden) / images
    return penalty


# ---------------------------------------------------------------------------------------------------
# L0 regularisation with hard-concrete gates


def l0_regularisation(model, images, strength=0.1, per_unit=False):
    """Gate the hidden layers of `model`; return the penalty to add to each step's loss: `strength` times the
    expected number of open weights, over `images` (the training set's size)."""
    for i, layer in enumerate(model.hidden):
        model.layers[i] = GatedLinear(layer.weight, per_unit)

    def penalty():
        return strength * sum(layer.expected_l0() for layer in model.hidden) / images
    return penalty


def optimizer(method, model, lr, steps, weight_decay=0.0):
    """(optimizer, scheduler) for `method`: Adam for vd and l0, as their papers train, l0's gates at L0_GATE_LR
    times `lr`; SGD with Nesterov momentum for gmp and the dense recipe (None); both annealed on a cosine."""
    if method not in DEFAULT_STRENGTH:
        return utils.sgd(model, lr, steps, weight_decay)
    gates = [layer.log_alpha for layer in model.hidden if isinstance(layer, GatedLinear)]
    others = [p for p in model.parameters() if all(p is not gate for gate in gates)]
    groups = [{"params": others, "lr": lr}] + ([{"params": gates, "lr": lr * L0_GATE_LR}] if gates else [])
    return utils.adam(groups, lr, steps, weight_decay)


# ---------------------------------------------------------------------------------------------------


def prepare(method, model, steps, images, target=None, strength=None):
    """Set `model` up to train by `method` over `steps` steps on `images` training images; return (penalty,
    after_step): the term to add to each step's loss and the function to call after each step, None where
    the method has none (as the dense recipe has neither)."""
    if method in GMP:
        return None, gradual_magnitude_pruning(model, target, steps, rule=GMP[method])
    if method == "vd":
        return variational_dropout(model, steps, images, strength), None
    if method in ("l0", "l0-unit"):
        return l0_regularisation(model, images, strength, per_unit=method == "l0-unit"), None
    return None, None


@torch.no_grad()
def natural_sparsity(model):
    """The percentage of hidden weights that the method training `model` zeroes on its own, as it stands."""
    kept = [layer.weight_mask.bool() if hasattr(layer, "weight_mask") else layer.kept() if hasattr(layer, "kept")
            else layer.weight != 0 for layer in model.hidden]
    return 100 * sum(int((~k).sum()) for k in kept) / sum(k.numel() for k in kept)


def finish(model):
    """Turn `model` back into a plain MLP holding its trained values (above); return (scores, natural
    sparsity): the learned scores of each hidden layer (None for gmp) and the percentage of hidden weights
    the method zeroes on its own."""
    model.eval()
    natural = natural_sparsity(model)
    if any(isinstance(layer, MaskedLinear) for layer in model.hidden):  # gmp: its weights are zero where pruned
        unmask_hidden(model)
        return None, natural
    scores = []
    with torch.no_grad():
        for i, layer in enumerate(model.hidden):
            weight = layer.weight
            if isinstance(layer, GatedLinear):  # the gate folded in where it is open
                weight = torch.where(layer.kept(), weight * layer.gates(), weight)
            plain = nn.Linear(weight.shape[1], weight.shape[0], bias=False).to(weight.device)
            plain.weight.copy_(weight)
            scores.append(layer.scores().detach().float().cpu().contiguous())
            model.layers[i] = plain
    return scores, natural
