"""Training the net to be sparse rather than pruning it after training: train.py --sparse. One module per idea:

    gmp.py           gmp, gmp-global: gradual magnitude pruning (Zhu & Gupta 2017), from a dense net
    vd.py            vd: sparse variational dropout (Molchanov et al. 2017), from a dense net
    l0.py            l0, l0-unit: L0 regularisation with hard-concrete gates (Louizos et al. 2018)
    at_init.py       static, snip, synflow: sparse from the first step, the mask found at init and held
    regrow.py        set, rigl: sparse from the first step, the mask moved while training
    distribution.py  how many weights each hidden layer keeps: uniform or ERK
    masked.py        a hidden layer whose three products run over the weights its mask keeps (gmp, retrain.py)
    kept.py          a hidden layer that holds only its kept weights: every part of a step costs the nonzeros

This module is what train.py calls: prepare() sets a net up for a method, optimizer() gives the method's
optimiser, after_step() what runs after each step, finish() turns the net back into a plain MLP. vd and l0 swap
the hidden layers for layers of their own while they train; finish() puts plain ones back, holding the trained
values unthresholded (vd: θ; l0: θ·ẑ where the gate is open, θ where it is closed), so that every pruning method
applies to the checkpoint, and returns the learned scores by which eval.py --sparsity learned ranks the weights
(vd: −log α; l0: the gate's log α). The methods sparse from the first step hold KeptLinear layers, and finish()
puts plain ones back, zero where nothing was kept.
"""
import torch
from torch import nn

import utils
from sparse_training.at_init import snip_masks, sparse_fan_in, static_masks, synflow_masks
from sparse_training.distribution import DISTRIBUTIONS, kept_counts
from sparse_training.gmp import RULES as GMP, gradual_magnitude_pruning, layer_shares
from sparse_training.kept import KeptLinear, keep_hidden, unkeep_hidden
from sparse_training.l0 import L0_GATE_LR, GatedLinear, l0_path, l0_regularisation
from sparse_training.masked import MaskedLinear, unmask_hidden
from sparse_training.regrow import GROWTH, regrowth
from sparse_training.vd import variational_dropout, vd_path

FROM_INIT = ["static", "snip", "synflow", "set", "rigl"]  # sparse from the first step: never a dense net
METHODS = ["gmp", "gmp-global", "vd", "l0", "l0-unit", *FROM_INIT]
TARGETED = [*GMP, *FROM_INIT]  # the methods trained to a --target
DISTRIBUTED = ["gmp", *FROM_INIT]  # the methods whose layers' shares --distribution sets
# vd: the KL's final weight (1: the ELBO); l0: λ. vd's chosen on MNIST's validation split (docs/mnist/choices/)
DEFAULT_STRENGTH = {"vd": 1.0, "l0": 0.1, "l0-unit": 0.1}
KERNEL_PATHS = {"vd": vd_path, "l0": l0_path}  # where the methods with a C kernel run it: train.py records it


def optimizer(method, model, lr, steps, weight_decay=0.0):
    """(optimizer, scheduler) for `method`: Adam for vd and l0, as their papers train, l0's gates at L0_GATE_LR
    times `lr`; SGD with Nesterov momentum for the others and the dense recipe (None); both annealed on a cosine."""
    if method not in DEFAULT_STRENGTH:
        return utils.sgd(model, lr, steps, weight_decay)
    gates = [layer.log_alpha for layer in model.hidden if isinstance(layer, GatedLinear)]
    others = [p for p in model.parameters() if all(p is not gate for gate in gates)]
    groups = [{"params": others, "lr": lr}] + ([{"params": gates, "lr": lr * L0_GATE_LR}] if gates else [])
    return utils.adam(groups, lr, steps, weight_decay)


def shapes(model):
    """The [out, in] of each hidden layer."""
    return [tuple(layer.weight.shape) for layer in model.hidden]


def prepare(method, model, steps, train_data, batch_size, target=None, strength=None, distribution="uniform"):
    """Set `model` up to train by `method` for `steps` steps of `batch_size` on train_data = (images, labels);
    return the term to add to each step's loss, or None where the method has none (as the dense recipe has none).
    The methods sparse from the first step find their masks here and keep only those weights, from then on."""
    images, labels = train_data
    if method == "vd":
        return variational_dropout(model, steps, len(labels), strength)
    if method in ("l0", "l0-unit"):
        return l0_regularisation(model, len(labels), strength, per_unit=method == "l0-unit")
    if method in FROM_INIT:
        counts = kept_counts(shapes(model), target, distribution)[0]
        masks = (snip_masks(model, counts, images, labels, batch_size) if method == "snip" else
                 synflow_masks(model, counts) if method == "synflow" else static_masks(model, counts))
        sparse_fan_in(model, masks)
        keep_hidden(model, masks)
    return None


def after_step(method, model, optimizer, steps, target=None, distribution="uniform"):
    """The function to call after each of `steps` steps of `optimizer` (None where the method has none): gmp's
    pruning schedule, SET's and RigL's moving masks."""
    if method in GMP:
        erk = method == "gmp" and distribution == "erk"
        shares = layer_shares(kept_counts(shapes(model), target, distribution)[0], model) if erk else None
        return gradual_magnitude_pruning(model, target, steps, rule=GMP[method], shares=shares, optimizer=optimizer)
    if method in GROWTH:
        return regrowth(model, optimizer, steps, GROWTH[method])
    return None


def initial_state(model):
    """The weights a net starts training from, as a plain MLP's state: where rewinding goes back to."""
    return {f"layers.{i}.weight": (layer.dense_weight() if isinstance(layer, KeptLinear) else layer.weight).detach()
            .clone() for i, layer in enumerate(model.layers)}


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
    if any(isinstance(layer, KeptLinear) for layer in model.hidden):  # sparse from the first step, and gmp at the end
        unkeep_hidden(model)
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
