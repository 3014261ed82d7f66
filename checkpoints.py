"""What is saved and loaded: train.py's checkpoints and the pruned nets of eval.py --save, each loaded
without ever running code it may hold, and checked whole before any of it is used.

A pruned net's file holds plain tensors only, so that it loads anywhere with
torch.load(path, weights_only=True) and no code of this repo:

    hidden    one dict per hidden layer, in order: its nonzeros in CSR form, "shape" [rows, columns],
              "crow_indices" (int64, rows + 1: where each row's nonzeros start), "col_indices" (int16:
              every column index fits) and "values" (float32), the columns of a row in increasing
              order; or {"dense": the float32 matrix} where that is the smaller of the two
    logits    the logits layer's float32 matrix, never pruned
    sizes     the MLP's layer sizes, input to logits (784-1000-1000-500-200-10 where a file has none)
    accuracy  test accuracy in %, as eval.py measured it
    dataset   {"name", "mean", "std"}: what the images are and how they were normalised
    pruned    method, k, variant, the measured sparsity (hidden layers, whole net, each layer),
              source_sha256 and source (the checkpoint it was pruned from), and eval.py's config
    config    the training config of the checkpoint it came from, so that it retrains by that recipe
"""
import hashlib
import io
import math
import pickletools
import warnings
import zipfile
from pathlib import Path

import torch

import files
from data import DATASETS
from model import MLP, SIZES, hidden_error
from utils import UserError

PRUNED = {"written_by": "eval.py --save", "format": 1}  # what marks a file as a pruned net


def save(path, model, config, accuracy, initial_state=None, **measured):
    """train.py's checkpoint: the trained weights, the config and test accuracy, the weights at initialisation
    (which rewinding a pruned net needs), and numbers `measured` beside (a sparse method's natural_sparsity)."""
    checkpoint = {"state_dict": model.state_dict(), "config": config, "accuracy": accuracy, **measured}
    if initial_state is not None:
        checkpoint["initial_state_dict"] = initial_state
    files.write_atomic(path, lambda f: torch.save(checkpoint, f))


def save_pruned(path, weights, accuracy, dataset, pruned, config):
    """A pruned net, `weights` its matrices in order (the logits layer's last), in the form above."""
    name, mean, std = dataset, *DATASETS[dataset][1:]
    net = {**PRUNED, "sizes": [weights[0].shape[1], *(weight.shape[0] for weight in weights)],
           "hidden": [sparse_layer(weight) for weight in weights[:-1]],
           "logits": weights[-1].detach().float().cpu().contiguous(), "accuracy": accuracy,
           "dataset": {"name": name, "mean": mean, "std": std}, "pruned": pruned, "config": config}
    files.write_atomic(path, lambda f: torch.save(net, f))


def sparse_layer(weight):
    """One hidden layer as its nonzeros in CSR form, or dense where fewer than a third of them are zero (CSR
    costs 6 bytes a nonzero, dense 4 a weight)."""
    weight = weight.detach().float().cpu()
    if 6 * int(weight.count_nonzero()) >= 4 * weight.numel():
        return {"dense": weight.contiguous()}
    row, column = weight.nonzero(as_tuple=True)  # in row-major order: a row's columns increase
    crow = torch.zeros(weight.shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(row, minlength=weight.shape[0]).cumsum(0)
    return {"shape": list(weight.shape), "crow_indices": crow, "col_indices": column.to(torch.int16),
            "values": weight[row, column].contiguous()}


def load(path, device="cpu"):
    """(model, checkpoint) from a file train.py or eval.py --save wrote, the file's sha256 added to the
    checkpoint. A pruned net comes back as the MLP with its zeros in place; its checkpoint has no
    state_dict but its "pruned" record. Loading never runs code the file may hold."""
    path = Path(path)
    checkpoint, sha256 = read(path)
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path} is not a checkpoint saved by train.py or eval.py --save")
    pruned = {k: checkpoint.get(k) for k in PRUNED} == PRUNED
    sizes = net_sizes(path, checkpoint, pruned)
    model = MLP(sizes)
    if pruned:
        check_record(path, checkpoint)
        weights = [*(hidden_weight(path, sizes, n, layer)
                     for n, layer in enumerate(hidden_layers(path, sizes, checkpoint), 1)),
                   checked_tensor(path, "the logits layer", checkpoint["logits"], torch.float32,
                                  shape(sizes, len(sizes) - 1), sizes)]
        with torch.no_grad():
            for layer, weight in zip(model.layers, weights):
                layer.weight.copy_(weight)
        checkpoint = {k: v for k, v in checkpoint.items() if k not in ("hidden", "logits")}
    else:
        if not isinstance(checkpoint.get("state_dict"), dict):
            raise UserError(f"{path} is not a checkpoint saved by train.py or eval.py --save (no weights in it)")
        for key in ("state_dict", "initial_state_dict"):  # the initial weights, where train.py kept them
            if key in checkpoint:
                check_weights(path, checkpoint[key], model, sizes)
        if "scores" in checkpoint:  # what train.py --sparse vd or l0 learned
            check_scores(path, checkpoint["scores"], sizes)
        model.load_state_dict(checkpoint["state_dict"])
    return model.to(device), {**checkpoint, "sha256": sha256}


def read(path):
    """What torch.load(weights_only=True) makes of the file at `path`, and the file's sha256."""
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; run train.py first")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before it refuses them
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), hashlib.sha256(data).hexdigest()
    except Exception:  # torch.load fails in many ways on a damaged file; all mean "not loadable"
        code = code_it_would_run(data)
        if code:
            raise UserError(f"{path} was refused: loading it would run code ({code}), which a checkpoint never needs")
        raise UserError(f"{path} is not a readable checkpoint (truncated, or not saved by train.py or eval.py --save)")


def code_it_would_run(data):
    """The first callable that unpickling `data` (a torch.save zip, or a bare pickle) would call and that
    torch.load(weights_only=True) does not allow, or None. Read from the pickle's opcodes, whatever the
    protocol, and never executed."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            data = archive.read(next(name for name in archive.namelist() if name.endswith("data.pkl")))
    except (zipfile.BadZipFile, StopIteration, OSError, RuntimeError, zipfile.LargeZipFile):
        pass  # not a zip: a bare pickle
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = set(_get_allowed_globals())
    except ImportError:  # a torch that moved it: every global counts
        allowed = set()
    strings = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":  # protocols 0-3: "module name" in the opcode
                name = arg.replace(" ", ".")
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:  # protocol 4 and 5: two strings pushed before it
                name = ".".join(strings[-2:])
            else:
                if isinstance(arg, str):
                    strings.append(arg)
                continue
            if name not in allowed:
                return name
    except Exception:  # the rest is damaged: what was read so far named nothing else
        pass
    return None


def net_sizes(path, checkpoint, pruned):
    """The layer sizes of the net in a checkpoint: a pruned net's "sizes", train.py's config's "hidden" (the
    default net's where there is neither, as files made before either say), each checked."""
    given = checkpoint.get("sizes") if pruned else (checkpoint.get("config") or {}).get("hidden")
    if given is None:
        return SIZES
    found = list(given) if isinstance(given, (list, tuple)) else []
    if pruned:
        found = found[1:-1] if found[:1] == [SIZES[0]] and found[-1:] == [SIZES[-1]] else []
    why_not = hidden_error(found)
    if why_not:  # before any allocation: a crafted file could ask for a net of any size
        raise UserError(f"{path} gives its net's sizes as {given!r}, not {why_not}, between the {SIZES[0]} pixels "
                        f"and the {SIZES[-1]} classes")
    return (SIZES[0], *found, SIZES[-1])


def check_weights(path, state, model, sizes):
    """Refuse a state dict that does not fit `model`, or whose weights are not all finite."""
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a checkpoint saved by train.py (its weights are not a state dict)")
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items() if torch.is_tensor(t)}
    if found != expected:
        name = next(n for n in sorted(expected.keys() | found.keys()) if expected.get(n) != found.get(n))
        raise architecture_error(path, sizes, name, found.get(name, "missing"), expected.get(name, "absent"))
    not_finite = next((name for name, t in state.items() if torch.is_tensor(t) and not torch.isfinite(t).all()), None)
    if not_finite:
        raise UserError(f"{path} holds weights that are not finite (NaN or inf in {not_finite}), as a run that "
                        f"diverged saves them; train it again")


def check_scores(path, scores, sizes):
    """Refuse learned scores that are not one finite float32 matrix per hidden layer, shaped as its weights."""
    if not (isinstance(scores, list) and len(scores) == len(sizes) - 2 and all(
            torch.is_tensor(score) and score.layout == torch.strided and score.dtype == torch.float32
            and list(score.shape) == shape(sizes, n) and bool(torch.isfinite(score).all())
            for n, score in enumerate(scores, 1))):
        raise UserError(f"{path} holds learned scores that are not one finite float32 matrix per hidden layer, "
                        f"shaped as its weights")


# ---------------------------------------------------------------------------------------------------
# The checks of a pruned net's file. It may come from anywhere, and its indices end up in C code, so every
# part is checked before any is used: each refusal names the file and what is wrong, in one line.


def shape(sizes, number):
    """The [rows, columns] of weight matrix `number` (from 1) of the MLP of `sizes`."""
    return [sizes[number], sizes[number - 1]]


def architecture_error(path, sizes, what, found, expected):
    return UserError(f"{path} holds another architecture: {what} is {found} there, {expected} in the MLP "
                     f"{'-'.join(map(str, sizes))} it says it is")


def damaged(path, what):
    return UserError(f"{path} is a damaged pruned net: {what}")


def hidden_layers(path, sizes, net):
    hidden = net.get("hidden")
    if not isinstance(hidden, list):
        raise damaged(path, "its hidden layers are not a list")
    if len(hidden) != len(sizes) - 2:
        raise architecture_error(path, sizes, "the number of hidden layers", len(hidden), len(sizes) - 2)
    return hidden


def checked_tensor(path, name, value, dtype, size=None, sizes=SIZES):
    """`value` if it is a plain, contiguous tensor of `dtype`, `size` (or one dimension) and finite values."""
    if not torch.is_tensor(value) or value.layout != torch.strided:
        raise damaged(path, f"{name} is not a plain tensor")
    if value.dtype != dtype:
        raise damaged(path, f"{name} is {value.dtype}, not {dtype}")
    if size is None and value.dim() != 1:
        raise damaged(path, f"{name} has {value.dim()} dimensions, not 1")
    if size is not None and list(value.shape) != size:
        raise architecture_error(path, sizes, name, "x".join(map(str, value.shape)), "x".join(map(str, size)))
    if not value.is_contiguous():  # a crafted stride could make a tensor far larger than the file
        raise damaged(path, f"{name} is not contiguous")
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise damaged(path, f"{name} holds values that are not finite (NaN or inf)")
    return value


def hidden_weight(path, sizes, number, layer):
    """The dense matrix of hidden layer `number` (from 1), after checking every part of its CSR form."""
    expected, name = shape(sizes, number), f"hidden layer {number}"
    if not isinstance(layer, dict):
        raise damaged(path, f"{name} is not a dict")
    if set(layer) == {"dense"}:
        return checked_tensor(path, name, layer["dense"], torch.float32, expected, sizes)
    if set(layer) != {"shape", "crow_indices", "col_indices", "values"}:
        raise damaged(path, f"{name} holds {sorted(layer)}, not shape, crow_indices, col_indices and values")
    if not isinstance(layer["shape"], (list, tuple)) or list(layer["shape"]) != expected:
        raise architecture_error(path, sizes, name, layer["shape"], expected)
    rows, columns = expected
    crow = checked_tensor(path, f"{name}'s crow_indices", layer["crow_indices"], torch.int64)
    column = checked_tensor(path, f"{name}'s col_indices", layer["col_indices"], torch.int16).long()
    values = checked_tensor(path, f"{name}'s values", layer["values"], torch.float32)
    if len(crow) != rows + 1:
        raise damaged(path, f"{name}'s crow_indices has {len(crow)} entries, not rows + 1 = {rows + 1}")
    counts = crow.diff()
    if crow[0] != 0 or (counts < 0).any() or (counts > columns).any():
        raise damaged(path, f"{name}'s crow_indices do not start at 0 and rise by 0 to {columns} a row")
    if not int(crow[-1]) == len(column) == len(values):
        raise damaged(path, f"{name} has {int(crow[-1])} nonzeros by its crow_indices, {len(column)} col_indices "
                            f"and {len(values)} values")
    if len(column) and (column.min() < 0 or column.max() >= columns):
        raise damaged(path, f"{name}'s col_indices leave the range 0 to {columns - 1}")
    row = torch.repeat_interleave(torch.arange(rows), counts)
    if ((row * columns + column).diff() <= 0).any():  # also catches a column given twice in a row
        raise damaged(path, f"{name}'s col_indices do not increase within each row")
    weight = torch.zeros(expected, dtype=torch.float32)  # as saved, whatever the default dtype
    weight[row, column] = values
    return weight


# A record's entries: their types, and what to call them when they are wrong.
RECORD = {"accuracy": (float, "a finite number"), "dataset": (dict, "a dict"), "pruned": (dict, "a dict"),
          "config": (dict, "a dict")}
PRUNED_RECORD = {"method": (str, "text"), "k": ((int, float), "a finite number"), "variant": (str, "text"),
                 "sparsity": (dict, "a dict"), "source_sha256": (str, "text")}


def check_record(path, net):
    """Refuse a pruned net whose accuracy, data set or pruning record is missing or of the wrong type."""
    for entries, record in ((RECORD, net), (PRUNED_RECORD, net.get("pruned"))):
        for key, (kind, description) in entries.items():
            value = record.get(key) if isinstance(record, dict) else None
            if not isinstance(value, kind) or isinstance(value, float) and not math.isfinite(value):
                raise damaged(path, f"its record's {key!r} is missing, or not {description}")
    dataset = net["dataset"]
    if dataset.get("name") not in DATASETS or [dataset.get("mean"), dataset.get("std")] != list(DATASETS[dataset["name"]][1:]):
        raise damaged(path, f"its data set {dataset.get('name')!r} is not one of {', '.join(DATASETS)} with its "
                            f"normalisation")
