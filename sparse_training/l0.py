"""L0 regularisation (Louizos et al. 2018), for train.py --sparse l0 and l0-unit: each weight, or each unit's row
of weights, is multiplied by a hard-concrete gate z in [0, 1], a stretched and clipped binary concrete variable
with a learned location log α. Its expected number of open weights, times strength / (training images), is the
penalty. At test time a gate is
ẑ = clip(sigmoid(log α)(ζ − γ) + γ), which is exactly 0 for the least open gates.

GatedLinear stands in for a bias-free Linear while the net trains. Its gates per weight, with their noise and the
penalty's terms, are drawn in C (csrc/l0_kernel.c, GateTerms), or in torch (HardConcrete) where the kernel
cannot run, as gates per unit always are.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from csrc import build, check

L0_BETA, L0_GAMMA, L0_ZETA = 2 / 3, -0.1, 1.1  # the hard concrete's temperature and its stretch to (γ, ζ)
L0_INIT_DROP = 0.5  # gates start at log α = log(1 − p) − log p, as Louizos et al.'s code starts them: ẑ = 0.5
# Louizos et al. train 200 epochs at Adam's 0.001; in train.py's 15 a gate would move log α by 3.5 at most, and few
# would ever shut. The gates learn at L0_GATE_LR times the weights' rate instead, chosen on MNIST's validation split
# among 10, 30, 100 and 300 (python benchmarks/choices.py l0-gate-rate).
L0_GATE_LR = 30.0


def l0_regularisation(model, images, strength=0.1, per_unit=False):
    """Gate the hidden layers of `model`; return the penalty to add to each step's loss: `strength` times the
    expected number of open weights, over `images` (the training set's size)."""
    for i, layer in enumerate(model.hidden):
        model.layers[i] = GatedLinear(layer.weight, per_unit)

    def penalty():
        return strength * sum(layer.expected_l0() for layer in model.hidden) / images
    return penalty


def l0_path(device):
    """Where an l0 layer's gates are drawn on `device`: ("l0_kernel.c", "") or ("torch", why not in C)."""
    return build.where("l0", device)


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
        return build.load("l0")[0] if on_cpu else None

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
    formula and its gradient and a tensor kept for each; written out, it takes one logarithm (logit) and keeps three
    tensors (an l0 step's cost both ways: python benchmarks/train_speed.py, docs/train_speed.md)."""

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
    by torch's generator in one of its own (an l0 step's cost both ways: python benchmarks/train_speed.py,
    docs/train_speed.md)."""

    @staticmethod
    def forward(ctx, weight, log_alpha, seed, kernel):
        shape = tuple(weight.shape)
        gated, gates, slope, d_open = (torch.empty(shape, dtype=torch.float32) for _ in range(4))
        pointers = [check.address(t, f"l0's {name}", torch.float32, shape) for t, name in
                    ((weight, "weights"), (log_alpha, "log α"), (gated, "gated weights"), (gates, "gates"),
                     (slope, "slopes"), (d_open, "dP(open)/dlog α"))]
        open_ = kernel.l0_gates(*pointers, weight.numel(), seed, torch.get_num_threads())
        ctx.save_for_backward(weight, gates, slope, d_open)
        ctx.kernel = kernel
        return gated, weight.new_tensor(open_)

    @staticmethod
    def backward(ctx, grad_gated, grad_open):
        weight, gates, slope, d_open = ctx.saved_tensors
        shape = tuple(weight.shape)
        grad_gated = torch.zeros(shape, dtype=torch.float32) if grad_gated is None else grad_gated
        grad_gated = grad_gated.to(torch.float32).contiguous()
        grad_weight, grad_log_alpha = (torch.empty(shape, dtype=torch.float32) for _ in range(2))
        pointers = [check.address(t, f"l0's {name}", torch.float32, shape) for t, name in
                    ((grad_gated, "gradient"), (weight, "weights"), (gates, "gates"), (slope, "slopes"),
                     (d_open, "dP(open)/dlog α"))]
        ctx.kernel.l0_backward(*pointers, 0.0 if grad_open is None else float(grad_open),
                               check.address(grad_weight, "l0's weight gradient", torch.float32, shape),
                               check.address(grad_log_alpha, "l0's log α gradient", torch.float32, shape),
                               weight.numel(), torch.get_num_threads())
        return grad_weight, grad_log_alpha, None, None


def open_probability(log_alpha):
    """P(z ≠ 0) of a hard-concrete gate with location log α: the chance its stretched concrete exceeds 0."""
    return torch.sigmoid(log_alpha - L0_BETA * math.log(-L0_GAMMA / L0_ZETA))
