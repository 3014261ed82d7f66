"""Sparse variational dropout (Molchanov et al. 2017), for train.py --sparse vd: each weight is a Gaussian
N(θ, σ²) whose log σ² is learned beside θ; log α = log σ² − log θ² is its dropout rate, and a weight with
log α ≥ 3 (a noise far larger than its mean) is zero at test time. Its KL divergence from the log-uniform prior
is the penalty: the loss is the cross-entropy plus the KL, divided by the number of training images, its weight
warmed up from 0 so that the net first learns what the data needs, to 1 by default: the ELBO of the paper,
chosen over 0.1 on MNIST's validation split (python benchmarks/choices.py vd-strength), where it keeps more
accuracy at 99.5 and 99.8 % and loses half a point at 99 %.

VariationalLinear stands in for a bias-free Linear while the net trains. Its costliest part, σ² and the KL with
their gradients, is written out: in C (csrc/vd_kernel.c, one pass over the layer for both), or in torch (VDKL)
where the kernel cannot run.
"""
import torch
import torch.nn.functional as F
from torch import nn

from csrc import build, check

VD_WARMUP = 0.3  # share of the steps over which the KL's weight rises from 0 to its final value
VD_LOG_ALPHA_ZERO = 3.0  # a weight with log α at least this is zero at test time
VD_INIT_LOG_SIGMA2 = -10.0  # little noise at first: the net starts as the deterministic one
VD_K1, VD_K2, VD_K3 = 0.63576, 1.87320, 1.48695  # Molchanov et al.'s fit of the KL


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


class VariationalLinear(nn.Module):
    """A bias-free Linear whose weights are Gaussians N(θ, σ²), trained by the local reparameterisation trick."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight  # θ: the layer's own Parameter, trained on
        self.log_sigma2 = nn.Parameter(torch.full_like(weight, VD_INIT_LOG_SIGMA2))
        self.in_c = True  # σ² and the KL by vd_kernel.c where it runs; False: by torch (train_speed.py compares)

    def log_alpha(self):
        return self.log_sigma2 - torch.log(self.weight ** 2 + 1e-8)

    def kept(self):
        return self.log_alpha() < VD_LOG_ALPHA_ZERO

    def forward(self, x):
        if not self.training:
            return F.linear(x, self.weight * self.kept())
        # x·W for W ~ N(θ, σ²) is Gaussian for each output, with mean x·θ and variance x²·σ²: sampling the
        # output instead of the weights costs two products and gives each image its own noise.
        mean = F.linear(x, self.weight)
        variance, self.pending_kl = variance_and_kl(self.weight, self.log_sigma2, self.in_c)  # the KL: for the penalty
        std = torch.sqrt(F.linear(x * x, variance) + 1e-8)
        return mean + std * torch.randn_like(mean)

    def kl(self):
        """Σ KL over the layer's weights: the one the training forward just computed, taken once, else afresh."""
        kl, self.pending_kl = getattr(self, "pending_kl", None), None
        return kl if kl is not None else variance_and_kl(self.weight, self.log_sigma2, self.in_c)[1]

    def scores(self):
        return -self.log_alpha()


def vd_kl(log_alpha):
    """KL(N(θ, αθ²) ‖ log-uniform prior) of each weight, by Molchanov et al.'s approximation (up to a constant
    that makes it 0 as α → ∞)."""
    return VD_K1 - VD_K1 * torch.sigmoid(VD_K2 + VD_K3 * log_alpha) + 0.5 * F.softplus(-log_alpha)


def variance_and_kl(weight, log_sigma2, in_c=True):
    """(σ², Σ vd_kl(log α)) of a layer, both differentiable in θ and log σ²: by vd_kernel.c for float32 on a CPU
    with a C compiler (unless in_c is False), else by torch."""
    on_cpu = in_c and weight.device.type == "cpu" and weight.dtype == log_sigma2.dtype == torch.float32
    kernel = build.load("vd")[0] if on_cpu else None
    if kernel is not None:
        return VariationalTerms.apply(weight.contiguous(), log_sigma2.contiguous(), kernel)
    variance = log_sigma2.exp()
    return variance, VDKL.apply(weight, log_sigma2, variance.detach())  # σ² shared: one exp a weight


def vd_path(device):
    """Where a vd layer's σ² and KL are computed on `device`: ("vd_kernel.c", "") or ("torch", why not in C)."""
    return build.where("vd", device)


class VariationalTerms(torch.autograd.Function):
    """(σ², Σ KL) of a layer from (θ, log σ²) by vd_kernel.c, which writes the KL's derivatives in the same pass:
    the backward only scales them and adds σ²'s own. In torch (VDKL and an exp, forward and backward) these take
    about a dozen passes over the layer (a vd step's cost both ways: python benchmarks/train_speed.py,
    docs/train_speed.md)."""

    @staticmethod
    def forward(ctx, weight, log_sigma2, kernel):
        shape = tuple(weight.shape)
        variance, d_weight, d_log_sigma2 = (torch.empty(shape, dtype=torch.float32) for _ in range(3))
        pointers = [check.address(t, f"vd's {name}", torch.float32, shape) for t, name in
                    ((weight, "θ"), (log_sigma2, "log σ²"), (variance, "σ²"), (d_weight, "dKL/dθ"),
                     (d_log_sigma2, "dKL/dlog σ²"))]
        kl = kernel.vd_terms(*pointers, weight.numel(), torch.get_num_threads())
        ctx.save_for_backward(variance, d_weight, d_log_sigma2)
        return variance, weight.new_tensor(kl)

    @staticmethod
    def backward(ctx, grad_variance, grad_kl):
        variance, d_weight, d_log_sigma2 = ctx.saved_tensors
        # In place, saving two tensors the size of the layer; a second backward through this graph would raise,
        # as autograd sees that they changed.
        d_log_sigma2.mul_(grad_kl)
        if grad_variance is not None:
            d_log_sigma2.addcmul_(grad_variance, variance)  # d σ² / d log σ² = σ²
        return d_weight.mul_(grad_kl), d_log_sigma2, None


class VDKL(torch.autograd.Function):
    """Σ vd_kl(log α) over a layer, from (θ, log σ², σ²), with its gradient (in θ and log σ²) written out: vd's
    KL in torch, where vd_kernel.c cannot run (no C compiler, a GPU, float64). Autograd's graph of the formula
    takes six exponentials and logarithms a weight and keeps a dozen tensors the size of the layer. Written out it
    takes three, σ² being the forward's, by softplus(−log α) =
    log(σ² + θ²) − log σ² and σ(−log α) = θ² / (σ² + θ²)."""

    @staticmethod
    def forward(ctx, weight, log_sigma2, variance):
        squared = weight * weight + 1e-8
        total = variance + squared
        log_alpha = squared.log().neg_().add_(log_sigma2)
        rising = torch.sigmoid_(log_alpha.mul_(VD_K3).add_(VD_K2))  # log_alpha's memory, reused
        ctx.save_for_backward(weight, squared, total, rising)
        return VD_K1 * weight.numel() - VD_K1 * rising.sum() + 0.5 * (total.log().sum() - log_sigma2.sum())

    @staticmethod
    def backward(ctx, grad):
        weight, squared, total, rising = ctx.saved_tensors
        # d vd_kl / d log α = −k1·k3·s(1 − s) − σ(−log α)/2, s = σ(k2 + k3 log α); d log α / dθ = −2θ / (θ² + ε)
        d_log_alpha = torch.div(squared, total).mul_(-0.5).addcmul_(rising, 1 - rising, value=-VD_K1 * VD_K3)
        d_log_alpha.mul_(grad)
        return torch.mul(d_log_alpha, weight).div_(squared).mul_(-2), d_log_alpha, None
