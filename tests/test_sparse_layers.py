"""The layers of vd and l0 against their formulas: vd's KL, its gradient and the local reparameterisation, in
torch and in C (csrc/vd_kernel.c); l0's hard-concrete gates and their gradient. (csrc/l0_kernel.c against the
formula: test_l0_kernel.py.)"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import needs_kernel
from csrc import build
from sparse_training import l0, vd


# Sparse variational dropout


def exact_vd_kl(log_alpha):
    """KL(N(θ, αθ²) ‖ log-uniform) up to the constant that makes it 0 as α → ∞ (Molchanov et al., eq. 13):
    −(½ log α − E log|ε|) − ½(γ + log 2), ε ~ N(1, α), E taken by the trapezoid rule on a fine grid."""
    z = np.linspace(-12, 12, 2_400_001)  # standard normal draws; log|1 + √α z| is integrable at its pole
    density = np.exp(-z ** 2 / 2) / np.sqrt(2 * np.pi)
    expected_log = np.trapezoid(np.log(np.abs(1 + np.exp(log_alpha / 2) * z) + 1e-300) * density, z)
    return -(0.5 * log_alpha - expected_log) + 0.5 * (np.euler_gamma + np.log(2))


@pytest.mark.parametrize("log_alpha", [-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0])
def test_the_kl_approximation_matches_a_numerical_integral(log_alpha):
    approximate = float(vd.vd_kl(torch.tensor(log_alpha, dtype=torch.float64)))
    assert approximate == pytest.approx(exact_vd_kl(log_alpha), abs=0.01)  # the paper's fit: within 0.009


def test_a_layers_kl_and_its_gradient_are_those_of_the_formula():
    """VDKL writes out the gradient that autograd would take of vd_kl(log α).sum(); they must agree."""
    torch.manual_seed(0)
    theta = torch.randn(30, 20, dtype=torch.float64) * 0.1
    theta[0, :3] = torch.tensor([0.0, 1e-5, -1e-5])  # near θ = 0, where d log α / dθ is steepest
    log_sigma2 = torch.randn(30, 20, dtype=torch.float64) * 4 - 8
    by_formula = [t.clone().requires_grad_() for t in (theta, log_sigma2)]
    expected = vd.vd_kl(by_formula[1] - torch.log(by_formula[0] ** 2 + 1e-8)).sum()
    (expected * 0.37).backward()
    written = [t.clone().requires_grad_() for t in (theta, log_sigma2)]
    kl = vd.VDKL.apply(*written, log_sigma2.exp())
    (kl * 0.37).backward()
    assert kl.item() == pytest.approx(expected.item(), rel=1e-12)
    for mine, autograd in zip(written, by_formula):
        assert torch.allclose(mine.grad, autograd.grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: vd.VDKL.apply(*t, t[1].detach().exp()), written)


def vd_inputs(dtype):
    """θ and log σ² over the range training meets: θ near 0, where d log α / dθ is steepest, and log α from
    about −10 to 30, where s = sigmoid(k2 + k3 log α) rounds to 1 in float32."""
    torch.manual_seed(0)
    theta = torch.randn(40, 30, dtype=dtype) * 0.1
    theta[0, :4] = torch.tensor([0.0, 1e-5, -1e-5, 3e-4])
    log_sigma2 = torch.rand(40, 30, dtype=dtype) * 14 - 10
    return theta, log_sigma2


@needs_kernel("vd")
def test_the_vd_kernel_gives_the_variance_kl_and_gradients_of_the_formula():
    """vd_kernel.c against autograd through vd_kl in float64, to float32's rounding."""
    assert build.load("vd")[0] is not None
    theta, log_sigma2 = vd_inputs(torch.float64)
    exact = [t.clone().requires_grad_() for t in (theta, log_sigma2)]
    variance, kl = exact[1].exp(), vd.vd_kl(exact[1] - torch.log(exact[0] ** 2 + 1e-8)).sum()
    (0.37 * kl + (variance * 1.9).sum()).backward()  # a weight on each output, as σ² feeds the layer's products
    by_kernel = [t.float().requires_grad_() for t in (theta, log_sigma2)]
    variance32, kl32 = vd.variance_and_kl(*by_kernel)
    assert type(kl32.grad_fn).__name__ == "VariationalTermsBackward"  # the kernel's, not torch's
    (0.37 * kl32 + (variance32 * 1.9).sum()).backward()
    assert kl32.item() == pytest.approx(kl.item(), rel=1e-6)
    assert torch.allclose(variance32.double(), variance, rtol=1e-6, atol=0)
    for mine, expected in zip(by_kernel, exact):
        scale = float(expected.grad.abs().max())
        assert torch.allclose(mine.grad.double(), expected.grad, rtol=1e-5, atol=1e-6 * scale)


def test_without_a_compiler_vd_takes_its_terms_from_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert build.load("vd")[0] is None
    theta, log_sigma2 = (t.float().requires_grad_() for t in vd_inputs(torch.float64))
    variance, kl = vd.variance_and_kl(theta, log_sigma2)
    assert type(kl.grad_fn).__name__ != "VariationalTermsBackward"
    assert torch.equal(variance, log_sigma2.exp())
    expected = vd.vd_kl(log_sigma2 - torch.log(theta ** 2 + 1e-8)).sum()
    assert kl.item() == pytest.approx(expected.item(), rel=1e-5)


@needs_kernel("vd")
@pytest.mark.parametrize("in_c", [True, False])
def test_a_vd_layer_takes_its_terms_from_c_unless_told_not_to(in_c):
    layer = vd.VariationalLinear(torch.nn.Parameter(torch.randn(6, 4)))
    layer.in_c = in_c
    layer.train()
    layer(torch.randn(3, 4))
    expected = "VariationalTermsBackward" if in_c else "VDKLBackward"
    assert type(layer.kl().grad_fn).__name__ == expected


@needs_kernel("vd")
def test_loading_the_vd_kernel_leaves_subnormal_floats_alone():
    """vd_kernel.c is compiled with -ffast-math; linked with it, GCC before 13 would set the whole process to
    flush subnormals to zero when the library loads. In a fresh process, so that this one's state does not count."""
    code = ("import torch; from csrc import build; assert build.load('vd')[0]; "
            "print((torch.tensor([1e-38]) / 100).item())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == pytest.approx(1e-40, rel=1e-3)


def test_the_penalty_takes_the_kl_of_the_weights_the_step_used():
    """The KL a training forward computes is the penalty's once; after the weights change, it is computed anew."""
    torch.manual_seed(0)
    layer = vd.VariationalLinear(torch.nn.Parameter(torch.randn(6, 4)))
    layer.train()
    fresh = lambda: vd.vd_kl(layer.log_alpha()).sum().item()  # noqa: E731
    layer(torch.randn(3, 4))
    assert layer.kl().item() == pytest.approx(fresh(), rel=1e-6)
    with torch.no_grad():
        layer.log_sigma2.add_(2.0)
    assert layer.kl().item() == pytest.approx(fresh(), rel=1e-6)  # no forward since: not the stale one


def test_the_local_reparameterisation_has_the_mean_and_variance_of_sampled_weights():
    torch.manual_seed(0)
    theta = torch.randn(3, 5)
    layer = vd.VariationalLinear(torch.nn.Parameter(theta.clone()))
    with torch.no_grad():
        layer.log_sigma2.copy_(torch.randn(3, 5) - 1)
    x, draws = torch.randn(4, 5), 200_000
    with torch.no_grad():
        reparameterised = layer(x.repeat(draws, 1)).view(draws, 4, 3)
        weights = theta + layer.log_sigma2.exp().sqrt() * torch.randn(draws, 3, 5)
        sampled = torch.einsum("bi,doi->dbo", x, weights)
        mean, variance = x @ theta.T, (x ** 2) @ layer.log_sigma2.exp().T
    for outputs in (reparameterised, sampled):
        assert torch.allclose(outputs.mean(0), mean, atol=0.02 * float(variance.sqrt().max()))
        assert torch.allclose(outputs.var(0), variance, rtol=0.02)


def test_vd_zeroes_at_test_time_exactly_the_weights_with_log_alpha_of_3_or_more():
    layer = vd.VariationalLinear(torch.nn.Parameter(torch.ones(1, 4)))
    with torch.no_grad():
        layer.log_sigma2.copy_(torch.tensor([[2.9, 3.0, 3.1, -10.0]]))  # θ = 1: log α = log σ²
    layer.eval()
    assert layer(torch.ones(1, 4)).item() == pytest.approx(2.0, abs=1e-6)  # the 2.9 and the -10 weights
    assert layer.kept().tolist() == [[True, False, False, True]]


# L0 regularisation


@pytest.mark.parametrize("per_unit", [False, True])
def test_hard_concrete_gates_lie_in_0_1_and_are_open_as_often_as_the_expected_l0_says(per_unit):
    torch.manual_seed(0)
    layer = l0.GatedLinear(torch.nn.Parameter(torch.ones(5, 4)), per_unit)
    locations = torch.tensor([-4.0, -1.0, 0.0, 1.0, 4.0])
    with torch.no_grad():
        layer.log_alpha.copy_(locations.view(5, 1).expand_as(layer.log_alpha))
    with torch.no_grad():  # the gates alone: times weights of 1
        draws = l0.HardConcrete.apply(torch.ones(()), layer.log_alpha, torch.rand(20_000, *layer.log_alpha.shape))
    assert draws.min() == 0 and draws.max() == 1  # stretched and clipped: exact zeros and ones happen
    open_share = (draws > 0).float().mean(0).flatten()
    expected = l0.open_probability(layer.log_alpha).flatten()
    assert torch.allclose(open_share, expected, atol=0.015)
    # The formula: P(z > 0) = sigmoid(log α − β log(−γ/ζ)), summed over the weights each gate holds.
    formula = torch.sigmoid(locations - 2 / 3 * math.log(0.1 / 1.1))
    assert float(layer.expected_l0().detach()) == pytest.approx(4 * float(formula.sum()), rel=1e-6)
    layer.eval()
    test_gates = layer.gates().expand(5, 4)
    assert (test_gates[0] == 0).all() and (test_gates[4] == 1).all()  # ẑ clipped at both ends
    assert layer.kept().tolist() == [[g > 0] * 4 for g in test_gates[:, 0].tolist()]


def hard_concrete_by_formula(weight, log_alpha, noise):
    """Louizos et al.'s gated weights, as written: the concrete stretched to (γ, ζ) and clipped to [0, 1]."""
    noise = noise.clamp(1e-6, 1 - 1e-6)
    concrete = torch.sigmoid((noise.log() - (1 - noise).log() + log_alpha) / (2 / 3))
    return weight * (concrete * 1.2 - 0.1).clamp(0, 1)


@pytest.mark.parametrize("per_unit", [False, True])
def test_the_gated_weights_and_their_gradient_are_those_of_the_formula(per_unit):
    """HardConcrete writes out the gradient that autograd would take of the formula; they must agree."""
    torch.manual_seed(0)
    weight = torch.randn(30, 20, dtype=torch.float64)
    shape = (30, 1) if per_unit else (30, 20)
    log_alpha, noise = torch.randn(shape, dtype=torch.float64) * 3, torch.rand(shape, dtype=torch.float64)
    by_formula = [t.clone().requires_grad_() for t in (weight, log_alpha)]
    expected = hard_concrete_by_formula(*by_formula, noise)
    written = [t.clone().requires_grad_() for t in (weight, log_alpha)]
    gated = l0.HardConcrete.apply(*written, noise)
    assert ((expected == 0) & (weight != 0)).any() and ((expected == weight) & (weight != 0)).any()  # both clips hit
    upstream = torch.randn(30, 20, dtype=torch.float64)
    (expected * upstream).sum().backward()
    (gated * upstream).sum().backward()
    assert torch.allclose(gated, expected, rtol=1e-12, atol=1e-14)
    for mine, autograd in zip(written, by_formula):
        assert torch.allclose(mine.grad, autograd.grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: l0.HardConcrete.apply(*t, noise), written)
