"""Training the net to be sparse, from its initialisation, rather than pruning it after training: train.py
--sparse. One module per method, and the masked layer that makes a pruned layer's step cost its nonzeros:

    gmp.py      gmp, gmp-global: gradual magnitude pruning (Zhu & Gupta 2017)
    vd.py       vd: sparse variational dropout (Molchanov et al. 2017)
    l0.py       l0, l0-unit: L0 regularisation with hard-concrete gates (Louizos et al. 2018)
    masked.py   a hidden layer whose three products run over the weights its mask keeps (gmp, and retrain.py)

This module is what train.py calls: prepare() sets a net up for a method, optimizer() gives the method's
optimiser, finish() turns the net back into a plain MLP. vd and l0 swap the hidden layers for layers of their
own while they train; finish() puts plain ones back, holding the trained values unthresholded (vd: θ; l0: θ·ẑ
where the gate is open, θ where it is closed), so that every pruning method applies to the checkpoint, and
returns the learned scores by which eval.py --sparsity learned ranks the weights (vd: −log α; l0: the gate's
log α).
"""
import torch
from torch import nn

import utils
from sparse_training.gmp import RULES as GMP, gradual_magnitude_pruning
from sparse_training.l0 import L0_GATE_LR, GatedLinear, l0_path, l0_regularisation
from sparse_training.masked import MaskedLinear, unmask_hidden
from sparse_training.vd import variational_dropout, vd_path

METHODS = ["gmp", "gmp-global", "vd", "l0", "l0-unit"]
# vd: the KL's final weight (1: the ELBO); l0: λ. vd's chosen on MNIST's validation split (docs/mnist/choices/)
DEFAULT_STRENGTH = {"vd": 1.0, "l0": 0.1, "l0-unit": 0.1}
KERNEL_PATHS = {"vd": vd_path, "l0": l0_path}  # where the methods with a C kernel run it: train.py records it


def optimizer(method, model, lr, steps, weight_decay=0.0):
    """(optimizer, scheduler) for `method`: Adam for vd and l0, as their papers train, l0's gates at L0_GATE_LR
    times `lr`; SGD with Nesterov momentum for gmp and the dense recipe (None); both annealed on a cosine."""
    if method not in DEFAULT_STRENGTH:
        return utils.sgd(model, lr, steps, weight_decay)
    gates = [layer.log_alpha for layer in model.hidden if isinstance(layer, GatedLinear)]
    others = [p for p in model.parameters() if all(p is not gate for gate in gates)]
    groups = [{"params": others, "lr": lr}] + ([{"params": gates, "lr": lr * L0_GATE_LR}] if gates else [])
    return utils.adam(groups, lr, steps, weight_decay)


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
