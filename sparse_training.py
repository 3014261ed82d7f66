"""Training the net to be sparse, from its initialisation, rather than pruning it after training.

gmp: gradual magnitude pruning (Zhu & Gupta 2017). Each hidden layer's sparsity rises from 0 to the target
on the cubic schedule s_t = s_f · (1 − (1 − (t − t0) / (n·Δt))³), the masks recomputed from |w| every Δt
steps, the pruned weights held at exactly zero by the masks (torch.nn.utils.prune), so that the net trains
on with what it keeps. The schedule starts after GMP_START of the training steps and ends at GMP_END,
leaving the rest to train the final masks, as the paper's schedules do. gmp-global ranks the hidden layers'
weights together, as global pruning does, so that each layer ends with the sparsity its magnitudes earn it.

vd: sparse variational dropout (Molchanov et al. 2017). Each hidden weight is a Gaussian N(θ, σ²) whose
log σ² is learned beside θ; log α = log σ² − log θ² is its dropout rate, and a weight with log α ≥ 3
(a noise far larger than its mean) is zero at test time. The loss is the cross-entropy plus the KL
divergence from the log-uniform prior, divided by the number of training images, its weight warmed up
from 0 so that the net first learns what the data needs, to 0.1 by default. At 1, the ELBO of the paper,
the net zeroes 99.7 % of its hidden weights but loses about 3 points of accuracy in the 15 epochs here; at 0.1
it zeroes 97 % and keeps within 1.5 points of the dense net (docs/sparse-training.md).

l0, l0-unit: L0 regularisation (Louizos et al. 2018). Each hidden weight (l0), or each unit's row of
weights (l0-unit), is multiplied by a hard-concrete gate z in [0, 1], a stretched and clipped binary
concrete variable with a learned location log α; the loss adds strength / (training images) times the
expected number of weights whose gate is open. At test time a gate is ẑ = clip(sigmoid(log α)(ζ − γ) + γ),
which is exactly 0 for the least open gates.

vd and l0 swap the hidden layers for layers of their own while they train; finish() puts plain ones back,
holding the trained values unthresholded (vd: θ; l0: θ·ẑ where the gate is open, θ where it is closed),
so that every pruning method applies to the checkpoint, and returns the learned scores by which eval.py
--sparsity learned ranks the weights (vd: −log α; l0: the gate's log α).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

import utils
from prune import global_magnitude, per_layer, weight_mask

GMP_START, GMP_END, GMP_EVERY = 0.1, 0.7, 100  # shares of the training steps, and Δt in steps
METHODS = ["gmp", "gmp-global", "vd", "l0", "l0-unit"]
GMP = {"gmp": per_layer(weight_mask), "gmp-global": global_magnitude}  # each layer to the target, or all together
DEFAULT_STRENGTH = {"vd": 0.1, "l0": 0.1, "l0-unit": 0.1}  # vd: the KL's final weight (1: the ELBO); l0: λ

VD_LOG_ALPHA_ZERO = 3.0  # a weight with log α at least this is zero at test time
VD_WARMUP = 0.3  # share of the steps over which the KL's weight rises from 0 to its final value
VD_INIT_LOG_SIGMA2 = -10.0  # little noise at first: the net starts as the deterministic one
VD_K1, VD_K2, VD_K3 = 0.63576, 1.87320, 1.48695  # Molchanov et al.'s fit of the KL

L0_BETA, L0_GAMMA, L0_ZETA = 2 / 3, -0.1, 1.1  # the hard concrete's temperature and its stretch to (γ, ζ)
# Louizos et al. train 200 epochs at Adam's 0.001; in train.py's 15 a gate would move log α by 3.5 at most, and few
# would ever shut. The gates learn at L0_GATE_LR times the weights' rate instead.
L0_GATE_LR = 10.0
L0_INIT_DROP = 0.5  # gates start at log α = log(1 − p) − log p, as Louizos et al.'s code starts them: ẑ = 0.5


def gmp_sparsity(step, target, start, end):
    """Zhu & Gupta's sparsity (a fraction) at `step`: 0 before `start`, `target` from `end` on."""
    if step < start:
        return 0.0
    progress = min(1.0, (step - start) / (end - start))
    return target * (1 - (1 - progress) ** 3)


def gradual_magnitude_pruning(model, target, steps, every=GMP_EVERY, rule=GMP["gmp"]):
    """Put masks on the hidden layers of `model` and return the function to call after each training step,
    which recomputes them by `rule` (one of GMP) every `every` steps and at the last of `steps`, to `target`
    percent at the end."""
    for layer in model.hidden:
        torch_prune.custom_from_mask(layer, "weight", torch.ones_like(layer.weight))
    start = round(GMP_START * steps)
    end, done = max(round(GMP_END * steps), start + 1), [0]

    def after_step():
        done[0] += 1
        if done[0] % every == 0 or done[0] == steps:
            fraction = gmp_sparsity(done[0], target / 100, start, end) if done[0] < steps else target / 100
            with torch.no_grad():  # from the masked weights: a pruned one is 0, so it stays pruned
                masks = rule([layer.weight_orig * layer.weight_mask for layer in model.hidden], fraction)
                for layer, mask in zip(model.hidden, masks):
                    layer.weight_mask.copy_(mask)
    return after_step


# ---------------------------------------------------------------------------------------------------
# Sparse variational dropout


class VariationalLinear(nn.Module):
    """A bias-free Linear whose weights are Gaussians N(θ, σ²), trained by the local reparameterisation trick."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight  # θ: the layer's own Parameter, trained on
        self.log_sigma2 = nn.Parameter(torch.full_like(weight, VD_INIT_LOG_SIGMA2))

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
        variance = self.log_sigma2.exp()
        self.pending_kl = VDKL.apply(self.weight, self.log_sigma2, variance.detach())  # σ² shared: one exp a weight
        std = torch.sqrt(F.linear(x * x, variance) + 1e-8)
        return mean + std * torch.randn_like(mean)

    def kl(self):
        """Σ KL over the layer's weights: the one the training forward just computed, taken once, else afresh."""
        kl, self.pending_kl = getattr(self, "pending_kl", None), None
        return kl if kl is not None else VDKL.apply(self.weight, self.log_sigma2, self.log_sigma2.detach().exp())

    def scores(self):
        return -self.log_alpha()


def vd_kl(log_alpha):
    """KL(N(θ, αθ²) ‖ log-uniform prior) of each weight, by Molchanov et al.'s approximation (up to a constant
    that makes it 0 as α → ∞)."""
    return VD_K1 - VD_K1 * torch.sigmoid(VD_K2 + VD_K3 * log_alpha) + 0.5 * F.softplus(-log_alpha)


class VDKL(torch.autograd.Function):
    """Σ vd_kl(log α) over a layer, from (θ, log σ², σ²), with its gradient (in θ and log σ²) written out. On
    a CPU the cost is in the exponentials and logarithms, a few ns a weight each: autograd's graph of the
    formula takes six of them a weight and keeps a dozen tensors the size of the layer, which made a vd step
    cost 4x the dense recipe's. Written out it takes three, σ² being the forward's, by softplus(−log α) =
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


class GatedLinear(nn.Module):
    """A bias-free Linear whose weights are multiplied by hard-concrete gates: one per weight, or one per
    output unit (row)."""

    def __init__(self, weight, per_unit):
        super().__init__()
        self.weight = weight
        shape = (weight.shape[0], 1) if per_unit else weight.shape
        location = math.log(1 - L0_INIT_DROP) - math.log(L0_INIT_DROP)
        self.log_alpha = nn.Parameter(torch.randn(shape, device=weight.device) * 0.01 + location)

    def gates(self):
        """Drawn from the hard concrete in training (one draw per step, shared by the batch); ẑ at test time."""
        if self.training:
            u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
            concrete = torch.sigmoid((u.log() - (-u).log1p() + self.log_alpha) / L0_BETA)
        else:
            concrete = torch.sigmoid(self.log_alpha)
        return (concrete * (L0_ZETA - L0_GAMMA) + L0_GAMMA).clamp(0, 1)

    def kept(self):
        return (self.gates() > 0).expand_as(self.weight)

    def forward(self, x):
        return F.linear(x, self.weight * self.gates())

    def expected_l0(self):
        """The expected number of this layer's weights whose gate is not 0."""
        per_gate = self.weight.numel() // self.log_alpha.numel()
        return per_gate * open_probability(self.log_alpha).sum()

    def scores(self):
        return self.log_alpha.detach().expand_as(self.weight)


def open_probability(log_alpha):
    """P(z ≠ 0) of a hard-concrete gate with location log α: the chance its stretched concrete exceeds 0."""
    return torch.sigmoid(log_alpha - L0_BETA * math.log(-L0_GAMMA / L0_ZETA))


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
    kept = [layer.weight_mask.bool() if torch_prune.is_pruned(layer) else layer.kept() if hasattr(layer, "kept")
            else layer.weight != 0 for layer in model.hidden]
    return 100 * sum(int((~k).sum()) for k in kept) / sum(k.numel() for k in kept)


def finish(model):
    """Turn `model` back into a plain MLP holding its trained values (above); return (scores, natural
    sparsity): the learned scores of each hidden layer (None for gmp) and the percentage of hidden weights
    the method zeroes on its own."""
    model.eval()
    natural = natural_sparsity(model)
    if any(torch_prune.is_pruned(layer) for layer in model.hidden):  # gmp: the masks folded into the weights
        for layer in model.hidden:
            torch_prune.remove(layer, "weight")
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
