"""Experiments side by side: a dense net and a net trained to be sparse, each trained and evaluated with the
defaults into the same folders, keep every result, each filed and labelled under its net, all in one plot."""
import json

import pytest

import eval as eval_script
import plot
import train
from conftest import assert_fails_cleanly, run_main


def test_two_nets_evaluated_into_the_same_folders_keep_every_result_labelled_in_one_plot(
        tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    drawn = []
    real_draw = plot.draw_plot
    monkeypatch.setattr(plot, "draw_plot", lambda path, curves, unpruned, note, timed=None: drawn.append(
        ([(net, name) for net, name, *_ in curves], unpruned, note)) or real_draw(path, curves, unpruned, note, timed))
    common = ["--data-dir", data_dir, "--no-download"]

    def run(main, *argv):
        result = run_main(main, [*argv, *common], capsys)
        assert result.returncode == 0, result.stderr
        return result

    run(train.main, "--epochs", 1, "--batch-size", 32)
    dense = (tmp_path / "model.pt").read_bytes()
    for target in (90, 95):
        run(train.main, "--epochs", 1, "--batch-size", 32, "--sparse", "gmp", "--target", target)
    assert (tmp_path / "model.pt").read_bytes() == dense  # the sparse recipe has a file of its own
    run(eval_script.main, "--sparsity", "weight,global", "--ks", "0,50,90", "--no-timing")
    result = run(eval_script.main, "--sparsity", "weight", "--ks", "90", "--checkpoint", "gmp-90.pt", "--timing-batch", 5)
    assert result.stdout.strip().splitlines()[-1].startswith("wrote results/gmp-90/, runs/gmp-90/ and plot.png")
    assert drawn[-1][0] == [("model", "global"), ("model", "weight"), ("gmp-90", "weight")]
    run(eval_script.main, "--sparsity", "weight", "--ks", "95", "--checkpoint", "gmp-95.pt", "--no-timing")

    filed = sorted(str(p.relative_to(tmp_path / "results")) for p in (tmp_path / "results").rglob("*.*"))
    assert filed == ["gmp-90/weight.csv", "gmp-90/weight.json", "gmp-95/weight.csv", "gmp-95/weight.json",
                     "model/global.csv", "model/global.json", "model/weight.csv", "model/weight.json"]
    runs = {str(p.relative_to(tmp_path / "runs")) for p in (tmp_path / "runs").glob("*/*")}
    assert {"model/weight", "model/global", "gmp-90/weight", "gmp-95/weight"} <= runs
    assert {run.split("/")[0] for run in runs if "/train-" in run} == {"model", "gmp-90", "gmp-95"}  # by --out

    curves, unpruned, note = drawn[-1]  # the two gmp nets, each at its target: one curve, the sweep over targets
    assert curves == [("model", "global"), ("model", "weight"), ("gmp to each target (gmp-90, gmp-95)", "weight")]
    assert list(unpruned) == ["model"]  # the unpruned line is the dense net's alone
    assert "gmp-90 (mnist, 1 checkpoint); gmp-95 (mnist, 1 checkpoint); model (mnist, 1 checkpoint)" in note
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads((tmp_path / "results" / "gmp-90" / "weight.json").read_text())
    assert info["checkpoints"][0]["dense"] is False and info["config"]["name"] == "gmp-90"

    result = run_main(plot.main, [], capsys)  # the comparison again, in one command
    assert result.returncode == 0, result.stderr
    assert drawn[-1][0] == curves and "note" not in result.stdout


# Their rows of docs/errors.md: a --name that is not a folder's, and plot.py with nothing to draw.

@pytest.mark.parametrize("name", ["a/b", ".hidden", "..", ""])
def test_a_name_that_is_not_one_folder_is_refused(name, capsys):
    result = run_main(eval_script.main, ["--sparsity", "weight", "--name", name], capsys)
    assert result.returncode == 2
    assert_fails_cleanly(result, "--name", "expected a folder's name")


def test_plot_without_results_says_so_in_one_line(tmp_path, capsys):
    result = run_main(plot.main, ["--results-dir", tmp_path / "none"], capsys)
    assert_fails_cleanly(result, "no folder", "run eval.py first")
    (tmp_path / "empty").mkdir()
    result = run_main(plot.main, ["--results-dir", tmp_path / "empty", "--plot", tmp_path / "p.png"], capsys)
    assert_fails_cleanly(result, "no results of eval.py in")
    assert not (tmp_path / "p.png").exists()
