"""A pruned net kept by eval.py --save, in your own code: load it, then call it on images.

    import inference
    net = inference.load("nets/weight-95.pt")   # checked whole, then the fastest path built for this machine
    logits = net(images)                         # images [batch, 784], normalised as net.info["dataset"] says

Any batch size, on the CPU through csrc/csr_kernel.c (fastpath/paths.py's fastest_path says what runs where), in
float32 whatever torch's default dtype. The file is checked before any of it is used; a damaged one raises
utils.UserError, whose message names what is wrong.
"""
import threading
from pathlib import Path

import torch

import checkpoints
import utils
from fastpath.paths import fastest_path
from model import SIZES


class PrunedNet:
    """Images [batch, 784] to logits [batch, 10]: the net of the file at `path` (a Path), run by `kernel`, the
    code of the fastest path here ("csr_kernel.c", "torch CSR" or "compact"); `info`, the file's record."""

    def __init__(self, path, weights, info, device):
        self.path, self.info, self.device = Path(path), info, device
        self.kernel, self.forward, self.layers = fastest_path(weights, device)
        self.lock = threading.Lock()  # the kernel's plan holds one set of activations: one call at a time

    @torch.no_grad()
    def __call__(self, images):
        if images.dim() != 2 or images.shape[1] != SIZES[0]:
            raise ValueError(f"expected images [batch, {SIZES[0]}], got {list(images.shape)}")
        with self.lock:
            return self.forward(self.layers, images.to(self.device, torch.float32))


def load(path, device="auto"):
    """The net in the file at `path` (a pruned net eval.py --save kept, or a checkpoint train.py saved) on
    `device` ("auto": the GPU where there is one)."""
    device = utils.pick_device(device)
    model, info = checkpoints.load(path, device)
    return PrunedNet(path, [layer.weight.detach().float() for layer in model.layers], info, device)
