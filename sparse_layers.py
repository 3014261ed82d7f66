"""The layers that learn which of their weights to drop, for train.py --sparse vd, l0 and l0-unit
(sparse_training.py): each stands in for a bias-free Linear while the net trains.

VariationalLinear, sparse variational dropout (Molchanov et al. 2017): each weight is a Gaussian N(θ, σ²) whose
log σ² is learned beside θ; log α = log σ² − log θ² is its dropout rate, and a weight with log α ≥ 3 (a noise
far larger than its mean) is zero at test time. Its KL divergence from the log-uniform prior is the penalty.

GatedLinear, L0 regularisation (Louizos et al. 2018): each weight, or each unit's row of weights, is multiplied
by a hard-concrete gate z in [0, 1], a stretched and clipped binary concrete variable with a learned location
log α. Its expected number of open weights is the penalty. At test time a gate is
ẑ = clip(sigmoid(log α)(ζ − γ) + γ), which is exactly 0 for the least open gates.

Both write out the gradient of their costliest part, where autograd's graph of the formula made many more passes
over the layer: VariationalLinear's σ² and KL in C (vd_kernel.c), one pass over the layer for both and their
gradients, or in torch (VDKL) where there is no C compiler; GatedLinear's gates per weight, with their noise and
the penalty's terms, in C (l0_kernel.c, GateTerms), or in torch (HardConcrete), as its gates per unit always are.
Each docstring says what that cost a training step.
"""
import ctypes
import functools
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from utils import build_library

VD_LOG_ALPHA_ZERO = 3.0  # a weight with log α at least this is zero at test time
VD_INIT_LOG_SIGMA2 = -10.0  # little noise at first: the net starts as the deterministic one
VD_K1, VD_K2, VD_K3 = 0.63576, 1.87320, 1.48695  # Molchanov et al.'s fit of the KL

L0_BETA, L0_GAMMA, L0_ZETA = 2 / 3, -0.1, 1.1  # the hard concrete's temperature and its stretch to (γ, ζ)
L0_INIT_DROP = 0.5  # gates start at log α = log(1 − p) − log p, as Louizos et al.'s code starts them: ẑ = 0.5


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
    kernel = vd_kernel(os.environ.get("CC", "cc"))[0] if on_cpu else None
    if kernel is not None:
        return VariationalTerms.apply(weight.contiguous(), log_sigma2.contiguous(), kernel)
    variance = log_sigma2.exp()
    return variance, VDKL.apply(weight, log_sigma2, variance.detach())  # σ² shared: one exp a weight


def vd_path(device):
    """Where a vd layer's σ² and KL are computed on `device`: ("vd_kernel.c", "") or ("torch", why not in C)."""
    return kernel_path(vd_kernel, "vd_kernel.c", device)


def l0_path(device):
    """Where an l0 layer's gates are drawn on `device`: ("l0_kernel.c", "") or ("torch", why not in C)."""
    return kernel_path(l0_kernel, "l0_kernel.c", device)


def kernel_path(build, source, device):
    if torch.device(device).type != "cpu":
        return "torch", f"{source} runs on the CPU"
    kernel, why_not = build(os.environ.get("CC", "cc"))
    return (source, "") if kernel is not None else ("torch", why_not)


VD_KERNEL_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC"]  # -ffast-math: glibc's vector exp


@functools.cache
def vd_kernel(compiler):
    """vd_kernel.c, built with `compiler`: (the library, "") or (None, why not)."""
    library, why_not = build_library(compiler, [Path(__file__).with_name("vd_kernel.c")], VD_KERNEL_FLAGS,
                                     ["-fopenmp", "-lm"])
    if library is not None:
        library.vd_terms.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64, ctypes.c_int]
        library.vd_terms.restype = ctypes.c_double
    return library, why_not


@functools.cache
def l0_kernel(compiler):
    """l0_kernel.c, built with `compiler`: (the library, "") or (None, why not)."""
    library, why_not = build_library(compiler, [Path(__file__).with_name("l0_kernel.c")], VD_KERNEL_FLAGS,
                                     ["-fopenmp", "-lm"])
    if library is not None:
        pointer, n = ctypes.c_void_p, ctypes.c_int64
        library.l0_gates.argtypes = [pointer] * 6 + [n, ctypes.c_uint32, ctypes.c_int]
        library.l0_gates.restype = ctypes.c_double
        library.l0_backward.argtypes = [pointer] * 5 + [ctypes.c_float, pointer, pointer, n, ctypes.c_int]
        library.l0_backward.restype = None
    return library, why_not


class VariationalTerms(torch.autograd.Function):
    """(σ², Σ KL) of a layer from (θ, log σ²) by vd_kernel.c, which writes the KL's derivatives in the same pass:
    the backward only scales them and adds σ²'s own. In torch (VDKL and an exp, forward and backward) these take
    about a dozen passes over the layer: a vd step costs 3.0-3.3 dense ones that way and 2.5-2.6 this way, on two
    threads of the AMD Zen 3 here, in four runs of benchmarks/train_speed.py (the last in docs/train_speed.md)."""

    @staticmethod
    def forward(ctx, weight, log_sigma2, kernel):
        variance, d_weight, d_log_sigma2 = (torch.empty_like(weight) for _ in range(3))
        kl = kernel.vd_terms(weight.data_ptr(), log_sigma2.data_ptr(), variance.data_ptr(), d_weight.data_ptr(),
                             d_log_sigma2.data_ptr(), weight.numel(), torch.get_num_threads())
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
    takes six exponentials and logarithms a weight and keeps a dozen tensors the size of the layer, which made a
    vd step cost 4x the dense recipe's. Written out it takes three, σ² being the forward's, by softplus(−log α) =
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


class GatedLinear(nn.Module):
    """A bias-free Linear whose weights are multiplied by hard-concrete gates: one per weight, or one per
    output unit (row)."""

    def __init__(self, weight, per_unit):
        super().__init__()
        self.weight = weight
        shape = (weight.shape[0], 1) if per_unit else weight.shape
        location = math.log(1 - L0_INIT_DROP) - math.log(L0_INIT_DROP)
        self.log_alpha = nn.Parameter(torch.randn(shape, device=weight.device) * 0.01 + location)
        self.in_c = not per_unit  # gates per weight by l0_kernel.c where it runs; per unit they are few: torch

    def gates(self):
        """ẑ = clip(sigmoid(log α)(ζ − γ) + γ, 0, 1), the gates at test time: exactly 0 for the least open."""
        return (torch.sigmoid(self.log_alpha) * (L0_ZETA - L0_GAMMA) + L0_GAMMA).clamp(0, 1)

    def kept(self):
        return (self.gates() > 0).expand_as(self.weight)

    def forward(self, x):
        if not self.training:
            return F.linear(x, self.weight * self.gates())
        # the gates drawn once a step, shared by the batch
        kernel = self.kernel()
        if kernel is None:
            return F.linear(x, HardConcrete.apply(self.weight, self.log_alpha, torch.rand_like(self.log_alpha)))
        seed = int(torch.randint(2 ** 32, (), dtype=torch.int64))  # from torch's generator: --seed fixes the gates
        gated, self.pending_open = GateTerms.apply(self.weight.contiguous(), self.log_alpha.contiguous(), seed, kernel)
        return F.linear(x, gated)

    def kernel(self):
        """l0_kernel.c, where it runs for this layer: float32 gates per weight on a CPU with a C compiler."""
        on_cpu = (self.in_c and self.weight.device.type == "cpu"
                  and self.weight.dtype == self.log_alpha.dtype == torch.float32)
        return l0_kernel(os.environ.get("CC", "cc"))[0] if on_cpu else None

    def expected_l0(self):
        """The expected number of this layer's weights whose gate is not 0: the one the training forward just
        computed, taken once, else afresh."""
        per_gate = self.weight.numel() // self.log_alpha.numel()
        open_, self.pending_open = getattr(self, "pending_open", None), None
        return per_gate * (open_ if open_ is not None else open_probability(self.log_alpha).sum())

    def scores(self):
        return self.log_alpha.detach().expand_as(self.weight)


class HardConcrete(torch.autograd.Function):
    """The weights times hard-concrete gates z = clip(sigmoid((logit u + log α) / β)(ζ − γ) + γ, 0, 1), u the
    uniform noise, with the gradient (in the weights and log α) written out. On a CPU the cost is in the passes
    over the layer: autograd's graph of the formula takes two logarithms a weight, a pass for each step of the
    formula and its gradient and a tensor kept for each, and an l0 step took 3.0 times the dense recipe's on one
    thread of the AMD Zen 3 here; written out, with one logarithm (logit) and three tensors kept, 2.1 times."""

    @staticmethod
    def forward(ctx, weight, log_alpha, noise):
        concrete = torch.logit(noise, eps=1e-6).add_(log_alpha).div_(L0_BETA).sigmoid_()
        # dz / d log α = (ζ − γ) s (1 − s) / β, s the concrete, where the clip leaves z alone, and 0 where it clips.
        # As ζ − 1 = −γ, z is in (0, 1) on a band of s symmetric about ½, (s0, 1 − s0), where s (1 − s) > s0 (1 − s0).
        s0 = -L0_GAMMA / (L0_ZETA - L0_GAMMA)
        slope = F.threshold_(torch.addcmul(concrete, concrete, concrete, value=-1), s0 * (1 - s0), 0)
        slope.mul_((L0_ZETA - L0_GAMMA) / L0_BETA)
        gates = concrete.mul_(L0_ZETA - L0_GAMMA).add_(L0_GAMMA).clamp_(0, 1)
        ctx.save_for_backward(weight, gates, slope)
        return weight * gates

    @staticmethod
    def backward(ctx, grad):
        weight, gates, slope = ctx.saved_tensors
        d_gates = torch.mul(grad, weight)
        if slope.shape != weight.shape:  # a gate per unit: what each of its row's weights passes back, summed
            d_gates = d_gates.sum(1, keepdim=True)
        return grad * gates, d_gates.mul_(slope), None


class GateTerms(torch.autograd.Function):
    """(the weights times their hard-concrete gates, Σ P(gate open)) of a layer with a gate per weight, by
    l0_kernel.c: the noise, the gates, their slopes and the penalty's terms in one pass over the layer, and the
    gradients in one more, where HardConcrete and open_probability in torch take about a dozen, the noise drawn
    by torch's generator in one of its own: an l0 step costs 1.6 dense ones this way and 2.6 that way, on two
    threads of the AMD Zen 3 here (docs/train_speed.md)."""

    @staticmethod
    def forward(ctx, weight, log_alpha, seed, kernel):
        gated, gates, slope, d_open = (torch.empty_like(weight) for _ in range(4))
        open_ = kernel.l0_gates(weight.data_ptr(), log_alpha.data_ptr(), gated.data_ptr(), gates.data_ptr(),
                                slope.data_ptr(), d_open.data_ptr(), weight.numel(), seed, torch.get_num_threads())
        ctx.save_for_backward(weight, gates, slope, d_open)
        ctx.kernel = kernel
        return gated, weight.new_tensor(open_)

    @staticmethod
    def backward(ctx, grad_gated, grad_open):
        weight, gates, slope, d_open = ctx.saved_tensors
        grad_gated = torch.zeros_like(weight) if grad_gated is None else grad_gated.contiguous()
        grad_weight, grad_log_alpha = torch.empty_like(weight), torch.empty_like(weight)
        ctx.kernel.l0_backward(grad_gated.data_ptr(), weight.data_ptr(), gates.data_ptr(), slope.data_ptr(),
                               d_open.data_ptr(), 0.0 if grad_open is None else float(grad_open),
                               grad_weight.data_ptr(), grad_log_alpha.data_ptr(), weight.numel(),
                               torch.get_num_threads())
        return grad_weight, grad_log_alpha, None, None


def open_probability(log_alpha):
    """P(z ≠ 0) of a hard-concrete gate with location log α: the chance its stretched concrete exceeds 0."""
    return torch.sigmoid(log_alpha - L0_BETA * math.log(-L0_GAMMA / L0_ZETA))
