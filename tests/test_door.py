"""csrc/check.py at every call into C: an input of another float type or layout is converted, anything else the
kernel cannot read is refused in one line, and an index that would not fit its width is refused when the plan is
made. A wrong answer is never possible."""
import pytest
import torch

import checkpoints
import inference
from conftest import needs_kernel
from csrc import build, check
from fastpath.plan import column_plan, csr_kernel_forward, sparse_plan
from model import MLP
from prune import prune
from sparse_training import l0, masked, vd


def pruned_net(method="weight", k=90):
    torch.manual_seed(0)
    net = prune(MLP(), method, k)
    return net, [layer.weight.detach() for layer in net.layers]


@pytest.fixture
def saved_net(tmp_path):
    net, weights = pruned_net()
    path = tmp_path / "weight-90.pt"
    checkpoints.save_pruned(path, weights, 0.0, "mnist", {"method": "weight", "k": 90, "variant": "one-shot",
                                                          "sparsity": {}, "source_sha256": "0" * 64}, {})
    return path, net


@needs_kernel("forward")
@pytest.mark.parametrize("batch", [1, 100])
def test_a_float64_default_dtype_still_gives_the_float32_logits(batch, saved_net):
    path, net = saved_net
    x = torch.randn(batch, 784)
    with torch.no_grad():
        expected = net(x)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        loaded = inference.load(path, device="cpu")
        assert loaded.kernel == "csr_kernel.c" and loaded.path == path
        logits = loaded(x.double())
    finally:
        torch.set_default_dtype(default)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


@needs_kernel("forward")
@pytest.mark.parametrize("batch", [1, 7, 100])
def test_an_input_of_another_type_or_layout_is_converted_to_the_same_logits(batch):
    _, weights = pruned_net()
    plan = sparse_plan(weights, batch)
    x = torch.randn(batch, 784)
    expected = csr_kernel_forward(plan, x)
    transposed = x.T.contiguous().T  # the same values, column-major
    assert not transposed.is_contiguous() or batch == 1
    for name, same in {"transposed": transposed, "float64": x.double(), "every other column": torch.stack(
            [x, x], dim=2).flatten(1)[:, ::2]}.items():
        assert torch.equal(csr_kernel_forward(plan, same), expected), name


@needs_kernel("forward")
@pytest.mark.parametrize("x, words", [
    (torch.zeros(2, 784, dtype=torch.int64), "must be a float tensor"),
    (torch.zeros(2, 784, device="meta"), "is on meta"),
    (torch.zeros(2, 783), "is [2, 783], where the net takes [batch, 784]"),
    (torch.zeros(784), "is [784]"),
    ([[0.0] * 784], "must be a float tensor"),
], ids=["int", "another device", "783 pixels", "one dimension", "a list"])
def test_an_input_the_kernels_cannot_read_is_refused_in_one_line(x, words):
    _, weights = pruned_net()
    with pytest.raises(check.Refused) as refused:
        csr_kernel_forward(sparse_plan(weights, 2), x)
    assert words in str(refused.value) and "\n" not in str(refused.value)


@needs_kernel("forward")
def test_a_layer_whose_rows_do_not_fit_16_bits_is_refused_by_the_one_image_plan():
    wide = torch.zeros(70_000, 10)
    wide[::1000, 0] = 1
    with pytest.raises(check.Refused, match="a layer's rows is 70000: the kernel indexes it in 16 bits"):
        column_plan([wide, torch.ones(10, 70_000)])


@pytest.mark.parametrize("tensor, dtype, shape, words", [
    (torch.zeros(3, 4, dtype=torch.float64), torch.float32, (3, 4), "is torch.float64, where the kernel reads"),
    (torch.zeros(4, 3).T, torch.float32, (3, 4), "is not contiguous"),
    (torch.zeros(3, 5), torch.float32, (3, 4), "is [3, 5], where the kernel reads [3, 4]"),
    (torch.zeros(3, 4, device="meta"), torch.float32, (3, 4), "is on meta"),
    (torch.zeros(3, 4, dtype=torch.int64), torch.int32, (None, 4), "is torch.int64, where the kernel reads torch.int32"),
])
def test_address_refuses_what_the_kernel_would_misread(tensor, dtype, shape, words):
    with pytest.raises(check.Refused) as refused:
        check.address(tensor, "the tensor", dtype, shape)
    assert f"the tensor {words}" in str(refused.value)


@needs_kernel("masked")
def test_the_masked_kernel_refuses_operands_that_do_not_match_the_mask():
    mask = torch.rand(6, 5) > 0.8
    lists = masked.nonzero_lists(mask)
    weight, h, out = torch.randn(6, 5), torch.randn(5, 8), torch.empty(6, 8)
    kernel = build.load("masked")[0]
    masked.run(kernel.masked_product, lists, weight, h, out)  # as they should be
    for a, b, o, words in [(torch.randn(6, 4), h, out, "first operand is [6, 4]"),
                           (weight, torch.randn(4, 8), out, "second operand is [4, 8]"),
                           (weight, h, torch.empty(6, 8, dtype=torch.float64), "output is torch.float64"),
                           (weight, h.T.contiguous().T, out, "second operand is not contiguous")]:
        with pytest.raises(check.Refused) as refused:
            masked.run(kernel.masked_product, lists, a, b, o)
        assert words in str(refused.value)


@needs_kernel("vd")
def test_vd_and_l0_kernels_refuse_float64_and_other_shapes():
    with pytest.raises(check.Refused, match="vd's θ is torch.float64"):
        vd.VariationalTerms.apply(torch.zeros(3, 4, dtype=torch.float64), torch.zeros(3, 4), build.load("vd")[0])
    with pytest.raises(check.Refused, match="l0's log α is \\[3, 1\\], where the kernel reads \\[3, 4\\]"):
        l0.GateTerms.apply(torch.zeros(3, 4), torch.zeros(3, 1), 0, build.load("l0")[0])


def test_an_index_width_is_checked():
    check.fits(65_535, 16, "rows")
    with pytest.raises(check.Refused, match="rows is 65536: the kernel indexes it in 16 bits, up to 65535"):
        check.fits(65_536, 16, "rows")
