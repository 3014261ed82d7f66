"""The speed benchmarks that take a pruned net apart: what each piece of a pass costs, timed, and checked here
for what they count and write, never for their timings."""
import pytest
import torch

from conftest import assert_fails_cleanly, import_script, run_main
import checkpoints
from fastpath import plan as kernel_plan
from fastpath.compact import compact
from prune import prune
from test_speed import needs_compiler  # noqa: F401

batch_costs = import_script("benchmarks/batch_costs.py")


def test_line_fit_finds_the_line_through_exact_points():
    assert batch_costs.line_fit([1, 2, 3, 4], [5.0, 7.0, 9.0, 11.0]) == pytest.approx((3.0, 2.0))
    intercept, slope = batch_costs.line_fit([1, 2, 3], [1.0, 3.0, 2.0])  # least squares through scattered points
    assert (intercept, slope) == pytest.approx((1.0, 0.5))


@needs_compiler
def test_batch_costs_parts_a_row_per_k_from_the_nets_own_nonzeros(tmp_path, checkpoint, capsys):
    """benchmarks/batch_costs.py: a row for each k, its nonzeros those of the compacted pruned net, the call
    split into the C pass and Python's part, written whole where asked."""
    out = tmp_path / "costs.md"
    result = run_main(batch_costs.main, ["--checkpoint", checkpoint, "--ks", "90,99", "--repeats", "1",
                                         "--batch", 50, "--out", out], capsys)  # one round on one thread too
    assert result.returncode == 0, result.stderr
    header, *rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ")]
    column = {name.strip(): i for i, name in enumerate(header)}
    rows = [row for row in rows if not row[0].strip().startswith("-")]
    assert [row[0].strip() for row in rows] == ["90", "99"]
    model, _ = checkpoints.load(checkpoint)
    for row, k in zip(rows, (90, 99)):
        weights = [layer.weight.detach() for layer in prune(model, "weight", k).layers]
        assert int(row[column["nonzeros"]].replace(",", "")) == sum(int(w.count_nonzero()) for w in compact(weights))
        call, c_pass, python = (float(row[column[name]]) for name in ("the call µs", "C pass µs", "Python µs"))
        assert python == pytest.approx(call - c_pass, abs=0.16)  # the same medians, each rounded to 0.1
    assert out.read_text() in result.stdout + "\n"
    result = run_main(batch_costs.main, ["--checkpoint", checkpoint, "--batch", 100_000], capsys)
    assert_fails_cleanly(result, "one round")  # the line models one round of the kernel


def test_batch_costs_says_in_one_line_when_there_is_no_kernel(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(kernel_plan, "cpu_kernel", lambda: (None, "cc failed: no compiler here"))
    assert_fails_cleanly(run_main(batch_costs.main, ["--checkpoint", checkpoint], capsys), "no C kernel")


@needs_compiler
def test_one_image_threads_times_one_thread_against_two_for_each_k(tmp_path, checkpoint, capsys, monkeypatch):
    """benchmarks/one_image_threads.py: a row for each k, from blocks of both, written whole where asked."""
    benchmark = import_script("benchmarks/one_image_threads.py")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    out = tmp_path / "threads.md"
    result = run_main(benchmark.main, ["--checkpoint", checkpoint, "--ks", "90,99", "--seconds", "0.05", "--out", out],
                      capsys)
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| 9")]
    assert [row[0].strip() for row in rows] == ["90", "99"]
    assert all(int(row[1]) >= 1 for row in rows)  # at least one block of each
    assert out.read_text() in result.stdout + "\n"
    result = run_main(benchmark.main, ["--checkpoint", checkpoint, "--ks", "90,100"], capsys)
    assert result.returncode == 2 and "--ks" in result.stderr and "below 100" in result.stderr
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    result = run_main(benchmark.main, ["--checkpoint", checkpoint], capsys)
    assert_fails_cleanly(result, "one thread")


@needs_compiler
def test_masked_layer_times_each_hidden_layer_at_each_share_pruned(tmp_path, capsys):
    """benchmarks/masked_layer.py: a row for each hidden layer of the MLP, a column for each k, written whole."""
    benchmark = import_script("benchmarks/masked_layer.py")
    out = tmp_path / "masked.md"
    result = run_main(benchmark.main, ["--ks", "90,99", "--rounds", "1", "--batch", "16", "--out", out], capsys)
    assert result.returncode == 0, result.stderr
    header, *rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ")]
    assert [cell.strip() for cell in header] == ["layer", "dense", "90 % pruned", "99 % pruned"]
    assert [row[0].strip() for row in rows] == ["784 to 1000", "1000 to 1000", "1000 to 500", "500 to 200"]
    assert all(cell.strip().endswith(")") for row in rows for cell in row[2:])  # a median and its range


def test_masked_layer_says_in_one_line_when_there_is_no_kernel(capsys, monkeypatch):
    benchmark = import_script("benchmarks/masked_layer.py")
    monkeypatch.setattr(benchmark.masked_layer, "cpu_masked_kernel", lambda: None)
    assert_fails_cleanly(run_main(benchmark.main, ["--rounds", "1"], capsys), "no masked_kernel.c")
