"""eval.py's timing: every path at every k, each batch size asked for, the peers, a time's far blocks marked, and
the sparse path without a compiler."""
import csv
import json

import pytest
import torch

import eval as eval_module
import results
from benchmarks import harness
from conftest import run_main
from csrc import build
from eval import main
from fastpath.plan import sparse_path
from prune import METHODS


def test_eval_times_every_path_for_every_method(tmp_path, checkpoint, data_dir, capsys):
    result = run_main(main, ["--sparsity", "all", "--ks", "90,99", "--timing-batch", 50, "--checkpoint", checkpoint,
                             "--data-dir", data_dir, "--results-dir", tmp_path / "results", "--logdir",
                             tmp_path / "runs", "--plot", tmp_path / "plot.png"], capsys)
    assert result.returncode == 0, result.stderr
    for method in METHODS:
        with open(tmp_path / "results" / "model" / f"{method}.csv") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            for path in ("dense", "coo", "csr", "sparse", "compact"):
                assert float(row[f"{path}_ms"]) > 0
            for path in ("sparse", "compact"):
                assert float(row[f"{path}_speedup"]) == pytest.approx(
                    float(row["dense_ms"]) / float(row[f"{path}_ms"]), rel=1e-3)
        assert float(rows[0]["flop_ceiling"]) == pytest.approx(2_386_000 / (238_400 + 2000), rel=1e-4)
        assert all(float(row["compact_flop_ceiling"]) >= float(row["flop_ceiling"]) for row in rows)
    with open(tmp_path / "results" / "model" / "unit.csv") as f:
        unit_90 = list(csv.DictReader(f))[0]
    assert float(unit_90["compact_flop_ceiling"]) == pytest.approx(2_386_000 / (100 * 784 + 100 * 100 + 50 * 100 +
                                                                               20 * 50 + 10 * 20), rel=1e-4)
    assert "sparse x" in result.stdout and "compact x" in result.stdout


def test_eval_times_each_batch_size_and_the_peers_asked_for(tmp_path, checkpoint, data_dir, capsys, monkeypatch):
    """The first size keeps the plain columns; another adds its own, suffixed; a peer that is not installed is
    named in one note and not timed."""
    real_peers = harness.peer_paths
    monkeypatch.setattr(eval_module, "peer_libraries", lambda: ({}, ["MKL's sparse BLAS is not timed (test)"]))
    monkeypatch.setattr(harness, "peer_paths", lambda w: ({k: v for k, v in real_peers(w)[0].items() if k != "mkl"}, []))
    result = run_main(main, ["--sparsity", "weight", "--ks", "90", "--timing-batch", "20,1", "--timing-peers",
                             "--checkpoint", checkpoint, "--data-dir", data_dir, "--results-dir", tmp_path / "results",
                             "--logdir", tmp_path / "runs", "--plot", tmp_path / "plot.png"], capsys)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("note: MKL's sparse BLAS is not timed (test)") == 1
    with open(tmp_path / "results" / "model" / "weight.csv") as f:
        row = {column: float(value) for column, value in next(csv.DictReader(f)).items()}
    for suffix in ("", "_batch1"):
        for path in ("sparse", "compact", "csr", "scipy"):
            assert row[f"{path}_speedup{suffix}"] == pytest.approx(
                row[f"dense_ms{suffix}"] / row[f"{path}_ms{suffix}"], rel=1e-3)
        assert f"mkl_ms{suffix}" not in row
    assert "flop_ceiling" in row and "flop_ceiling_batch1" not in row  # the same at every batch
    config = json.loads((tmp_path / "results" / "model" / "weight.json").read_text())["config"]
    assert config["timing_batch"] == [20, 1] and config["timing_peers"] is True


@pytest.mark.parametrize("value", ["1,0", "1,,2", "ten"])
def test_a_bad_timing_batch_is_one_line(value, capsys):
    result = run_main(main, ["--sparsity", "weight", "--timing-batch", value], capsys)
    assert result.returncode == 2 and "--timing-batch" in result.stderr
    assert "positive whole numbers" in result.stderr and "Traceback" not in result.stderr


def test_without_a_compiler_the_sparse_path_is_torch_csr(tmp_path, checkpoint, data_dir, capsys, monkeypatch):
    missing = str(tmp_path / "no-such-cc")
    kernel, why_not = build.build("forward", missing)
    assert kernel is None and "no-such-cc" in why_not
    monkeypatch.setenv("CC", missing)
    assert sparse_path("cpu") == "torch CSR"
    result = run_main(main, ["--sparsity", "weight", "--ks", "90", "--timing-batch", 20, "--checkpoint", checkpoint,
                             "--data-dir", data_dir, "--results-dir", tmp_path / "results", "--logdir",
                             tmp_path / "runs", "--plot", tmp_path / "plot.png"], capsys)
    assert result.returncode == 0, result.stderr
    assert "note: the sparse path is torch CSR" in result.stdout
    assert json.loads((tmp_path / "results" / "model" / "weight.json").read_text())["config"]["sparse_path"] == "torch CSR"
    with open(tmp_path / "results" / "model" / "weight.csv") as f:
        assert float(next(csv.DictReader(f))["sparse_ms"]) > 0


def test_a_time_with_a_block_far_from_its_median_is_marked_and_the_table_keeps_to_its_columns():
    row = {"k": 90, "sparsity": 90.0, "accuracy": 97.0, "dense_ms": 4.0, "dense_numpy_fastest": 1.0,
           "dense_numpy_far_blocks": 1, "dense_torch_far_blocks": 0, "sparse_ms": 0.5, "sparse_far_blocks": 0,
           "sparse_speedup": 8.0, "csr_speedup": 2.0, "coo_speedup": 0.5}
    table = results.markdown_table([row])
    assert "| 4.000* numpy | 0.500 | 8.000 |" in table  # the fastest dense, named; its own blocks' flag
    assert "torch CSR" not in table and "COO" not in table  # in the CSV only


def test_eval_counts_each_times_far_blocks_and_says_how_it_timed(tmp_path, checkpoint, data_dir, capsys):
    result = run_main(main, ["--sparsity", "weight", "--ks", "90", "--timing-batch", 10, "--checkpoint", checkpoint,
                             "--data-dir", data_dir, "--results-dir", tmp_path / "results", "--logdir",
                             tmp_path / "runs", "--plot", tmp_path / "plot.png"], capsys)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "results" / "model" / "weight.csv") as f:
        row = next(csv.DictReader(f))
    assert all(0 <= float(row[f"{path}_far_blocks"]) <= 9
               for path in ("dense_torch", "dense_numpy", "sparse", "csr", "coo", "compact"))
    assert harness.HOW in result.stdout and "median of 9 blocks" in harness.HOW


def test_speedups_are_against_the_fastest_dense_and_each_rate_counts_its_multiply_adds():
    from test_speed import pruned_weights
    _, weights = pruned_weights("weight", 90)
    x = torch.randn(16, 784)
    row = harness.time_forwards(weights, x)
    assert row["dense_ms"] == min(row["dense_torch_ms"], row["dense_numpy_ms"])
    assert row["dense_numpy_fastest"] == float(row["dense_numpy_ms"] < row["dense_torch_ms"])
    for path in ("sparse", "csr", "coo", "compact"):
        assert row[f"{path}_speedup"] == row["dense_ms"] / row[f"{path}_ms"]
    assert "dense_torch_speedup" not in row and "dense_numpy_speedup" not in row
    assert row["dense_gmacs"] == pytest.approx(16 * 2_386_000 / row["dense_ms"] / 1e6)
    nonzeros = sum(int(w.count_nonzero()) for w in weights)
    assert row["sparse_gmacs"] == pytest.approx(16 * nonzeros / row["sparse_ms"] / 1e6)


def test_the_timing_benchmark_runs_without_the_variables_for_old_openblas_builds(monkeypatch):
    from conftest import import_script
    timing = import_script("benchmarks/timing.py")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    environment = timing.user_environment()
    assert "OPENBLAS_CORETYPE" not in environment and "OPENBLAS_L2_SIZE" not in environment
    assert environment["OMP_NUM_THREADS"] == "2"
