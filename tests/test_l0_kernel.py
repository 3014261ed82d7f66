"""l0_kernel.c: l0's gates per weight in C (sparse_training/l0.py's GateTerms), against the hard-concrete formula, its
expected L0 and the gradients the torch path writes out; and train.py --sparse l0 saying which path it took."""

import pytest
import torch

from csrc import build
import train
from conftest import run_main
from sparse_training.l0 import L0_BETA, L0_GAMMA, L0_ZETA, GateTerms, GatedLinear, open_probability
from conftest import needs_kernel


def kernel():
    return build.load("l0")[0]


def gate_terms(weight, log_alpha, seed=7):
    """(gated weights, Σ P(open)) by the kernel, with both inputs as leaves that take gradients."""
    leaves = [t.clone().requires_grad_() for t in (weight, log_alpha)]
    return (*GateTerms.apply(*leaves, seed, kernel()), *leaves)


@needs_kernel("l0")
def test_the_kernels_gates_and_gradients_are_those_of_the_formula():
    torch.manual_seed(0)
    weight, log_alpha = torch.randn(300, 200), torch.randn(300, 200) * 3
    gated, open_, weight_leaf, log_alpha_leaf = gate_terms(weight, log_alpha)
    gates = gated.detach() / weight
    assert gates.min() == 0 and gates.max() == 1 and ((gates > 0) & (gates < 1)).any()  # both clips hit
    assert float(open_.detach()) == pytest.approx(float(open_probability(log_alpha).sum()), rel=1e-5)
    upstream = torch.randn(300, 200)
    ((gated * upstream).sum() + 0.3 * open_).backward()
    torch.testing.assert_close(weight_leaf.grad, upstream * gates, rtol=1e-5, atol=1e-6)
    # dz / d log α = (ζ − γ) s (1 − s) / β inside the clip, s recovered from the gate; 0 where it clips
    s = (gates - L0_GAMMA) / (L0_ZETA - L0_GAMMA)
    slope = torch.where((gates > 0) & (gates < 1), (L0_ZETA - L0_GAMMA) / L0_BETA * s * (1 - s), 0)
    p = open_probability(log_alpha)
    expected = upstream * weight * slope + 0.3 * p * (1 - p)
    near_a_clip = (gates < 1e-4) | (gates > 1 - 1e-4)  # s recovered from a gate there is off by its rounding
    torch.testing.assert_close(log_alpha_leaf.grad[~near_a_clip], expected[~near_a_clip], rtol=1e-3, atol=1e-5)


@needs_kernel("l0")
def test_the_kernels_gates_are_open_as_often_as_the_expected_l0_says():
    """Each row's gates share one location: the share of them open is the chance the formula gives, as the torch
    path's test checks it for HardConcrete's draws."""
    locations = torch.tensor([-4.0, -1.0, 0.0, 1.0, 4.0])
    log_alpha = locations.view(5, 1).expand(5, 20_000).contiguous()
    gated, _, _, _ = gate_terms(torch.ones(5, 20_000), log_alpha)
    open_share = (gated > 0).float().mean(1)
    assert torch.allclose(open_share, open_probability(locations), atol=0.015)
    assert gated.min() == 0 and gated.max() == 1


@needs_kernel("l0")
def test_the_same_seed_draws_the_same_gates_on_any_number_of_threads_and_another_seed_others():
    torch.manual_seed(0)
    weight, log_alpha = torch.randn(100, 70), torch.zeros(100, 70)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = gate_terms(weight, log_alpha, seed=11)[0]
        torch.set_num_threads(2)
        two = gate_terms(weight, log_alpha, seed=11)[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    other = gate_terms(weight, log_alpha, seed=12)[0]
    assert (other != one).float().mean() > 0.5


@needs_kernel("l0")
@pytest.mark.parametrize("per_unit, in_c, expected", [(False, True, "GateTermsBackward"),
                                                       (False, False, "HardConcreteBackward"),
                                                       (True, True, "HardConcreteBackward")])
def test_a_layer_takes_its_gates_from_c_only_per_weight_unless_told_not_to(per_unit, in_c, expected):
    torch.manual_seed(0)
    layer = GatedLinear(torch.nn.Parameter(torch.randn(6, 4)), per_unit)
    layer.in_c = layer.in_c and in_c
    layer.train()
    out = layer(torch.randn(3, 4))
    names, stack = set(), [out.grad_fn]  # every node of the graph behind the output
    while stack:
        node = stack.pop()
        if node is not None:
            names.add(type(node).__name__)
            stack.extend(next_ for next_, _ in node.next_functions)
    assert expected in names
    # the expected L0 of this forward's gates, taken once, then afresh: the same formula either way
    fresh = layer.weight.numel() // layer.log_alpha.numel() * float(open_probability(layer.log_alpha.detach()).sum())
    assert float(layer.expected_l0().detach()) == pytest.approx(fresh, rel=1e-5)
    assert float(layer.expected_l0().detach()) == pytest.approx(fresh, rel=1e-5)


@needs_kernel("l0")
def test_an_l0_checkpoint_says_that_its_gates_came_from_the_kernel(tmp_path, data_dir, capsys):
    result = run_main(train.main, ["--sparse", "l0", "--epochs", "1", "--data-dir", data_dir, "--no-download",
                                   "--out", tmp_path / "l0.pt", "--logdir", tmp_path / "runs"], capsys)
    assert result.returncode == 0, result.stderr
    assert torch.load(tmp_path / "l0.pt", weights_only=True)["config"]["l0_path"] == "l0_kernel.c"

