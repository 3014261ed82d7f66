"""Training a pruned net again, its masks holding the pruned weights at exactly zero: fine-tuning the kept
weights as they are, rewinding them to their initial values (Frankle & Carbin 2019), or training from a fresh
init (scratch).
"""
import math

import torch

import utils
from fastpath.compact import live_units
from model import MLP, SIZES, sizes_of
from prune import hold_at_zero
from sparse_training.kept import KeptLinear
from sparse_training.masked import prunes_most


def fresh_init(seed, device="cpu", sizes=SIZES):
    """A newly initialised MLP of `sizes`, its weights drawn from `seed`: where retraining from scratch starts."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(sizes).to(device)


def retrain(model, train_data, epochs, lr, batch_size, seed, l1=0.0, weight_decay=0.0):
    """Train a pruned model, its masks holding the pruned weights at exactly zero.

    SGD with Nesterov momentum from `lr` down to 0 on a cosine, the images in an order drawn from
    `seed`, and train.py's L1 penalty and weight decay where asked: fine-tuning (Han et al. 2015) takes
    a lower rate and no penalty, as the mask already decides what is kept; rewinding and training from
    scratch take the checkpoint's own recipe.

    Only the units the masks leave alive train, as the smaller net compact() would make of them: its
    outputs and its weights' gradients are the full net's, as the dead units' outputs are exactly zero,
    but it costs fewer multiplies, the more the fewer units are left. The weights it leaves out stay as they were:
    each is masked or multiplies a zero. A layer of the smaller net whose mask still prunes most of it (SPARSE_FROM),
    as weight pruning leaves them, trains as a KeptLinear (sparse_training/kept.py), which holds its kept weights
    alone: its products, its optimizer step and its L1 term cost those, and nothing is held at zero. The others
    train dense, their pruned weights held at zero after each step.
    """
    rows, columns = live_units([*(layer.weight_mask for layer in model.hidden), model.layers[-1].weight])
    weights = [*(layer.weight_orig for layer in model.hidden), model.layers[-1].weight]  # what training changes
    smaller = MLP((model.layers[0].in_features, *(len(r) for r in rows))).to(rows[0].device)
    with torch.no_grad():
        for layer, weight, r, c in zip(smaller.layers, weights, rows, columns):
            layer.weight.copy_(weight[r][:, c])
    masks = [layer.weight_mask[r][:, c] for layer, r, c in zip(model.hidden, rows, columns)]
    held = []  # (layer, mask) of the layers that train dense, their pruned weights held at zero
    for i, mask in enumerate(masks):
        if prunes_most(mask):
            smaller.layers[i] = KeptLinear.from_dense(smaller.layers[i].weight, mask.bool())
        else:
            held.append((smaller.layers[i], mask))
    zero_pruned = hold_at_zero([layer for layer, _ in held], [mask for _, mask in held])
    optimizer, scheduler = utils.sgd(smaller, lr, epochs * math.ceil(len(train_data[1]) / batch_size), weight_decay)
    shuffle = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        utils.train_epoch(smaller, train_data, optimizer, batch_size, shuffle, scheduler, l1,
                          desc=f"retrain {epoch}/{epochs}", after_step=zero_pruned)
    with torch.no_grad():
        trained = [layer.dense_weight() if isinstance(layer, KeptLinear) else layer.weight for layer in smaller.layers]
        for weight, new, r, c in zip(weights, trained, rows, columns):
            weight[r[:, None], c] = new
        for layer in model.hidden:  # as torch.nn.utils.prune sets it before a forward, so that it is never stale
            layer.weight = layer.weight_orig * layer.weight_mask


# --retrain: its variants, and the suffix their results take
VARIANTS = {"finetune": "finetuned", "rewind": "rewind", "scratch": "scratch"}
# Fine-tuning's own recipe (Han et al. 2015): a fifth of training's rate, no penalty, as the mask already decides
# what is kept; its epochs and rate chosen on MNIST's validation split (python benchmarks/choices.py finetune).
# Rewind and scratch train by the checkpoint's recipe.
FINETUNE = {"epochs": 3, "lr": 0.01}


def recipe(variant, trained, epochs=None, lr=None):
    """The keyword arguments of retrain() for `variant`, given the checkpoint's config `trained`: fine-tuning's
    own (FINETUNE), or the checkpoint's recipe; `epochs` and `lr`, where given, replace the variant's."""
    batch_size = trained.get("batch_size", 128)
    if variant == "finetune":
        return {"epochs": epochs or FINETUNE["epochs"], "lr": lr or FINETUNE["lr"], "batch_size": batch_size}
    if not {"epochs", "lr"} <= trained.keys() and not (epochs and lr):
        raise utils.UserError("the checkpoint's config does not give its recipe: give --retrain-epochs and --retrain-lr")
    return {"epochs": epochs or trained["epochs"], "lr": lr or trained["lr"], "batch_size": batch_size,
            "l1": trained.get("l1", 0.0), "weight_decay": trained.get("weight_decay", 0.0)}


def starting_points(variant, paths, models, checkpoints, seed, device):
    """The weights each checkpoint's pruned net is retrained from: the trained ones (finetune), the ones
    before training (rewind, Frankle & Carbin 2019), or a fresh init drawn from seed and the checkpoint's
    hash, so that each checkpoint gets its own and never its original one (scratch)."""
    if variant == "scratch":
        return [fresh_init(int(checkpoint["sha256"][:8], 16) + seed, device, sizes_of(model))
                for model, checkpoint in zip(models, checkpoints)]
    if variant != "rewind":
        return models
    initial = []
    for path, model, checkpoint in zip(paths, models, checkpoints):
        if "initial_state_dict" not in checkpoint:
            what = "is a pruned net, which keeps" if "pruned" in checkpoint else "holds"
            raise utils.UserError(f"{path} {what} no initial weights, so it cannot be rewound: rewind the checkpoint "
                                  f"train.py saved, or use --retrain finetune or scratch")
        initial.append(MLP(sizes_of(model)).to(device))
        initial[-1].load_state_dict(checkpoint["initial_state_dict"])
    return initial
