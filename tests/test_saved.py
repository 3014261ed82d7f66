"""Pruned nets kept by eval.py --save: they reload to the pruned model's logits, prune and fine-tune further
with their zeros held, run through the fast path, and a damaged or crafted file is refused in one line."""
import copy
import csv
import hashlib
import os
import re
import subprocess
import sys

import pytest
import torch

import checkpoints
import data
import eval as eval_script
import inference
import prune
import utils
from conftest import REPO, run_main
from test_bad_input import assert_nothing_written, assert_one_line, eval_argv
from csrc import build

KS = (0, 50, 99)
# Each variant's flags and the methods swept with it: every method one-shot; retraining is the same code for each
# method, so the retrained variants take one each (a training run per k and method is what this fixture costs).
VARIANTS = {"one-shot": ([], tuple(prune.METHODS)), "finetuned": (["--retrain", "finetune"], ("weight", "unit")),
            "rewind": (["--retrain", "rewind"], ("global",)), "scratch": (["--retrain", "scratch"], ("random",))}


def file_name(method, variant, k):
    return f"{method}-{k}.pt" if variant == "one-shot" else f"{method}-{variant}-{k}.pt"


def sweep_argv(folder, checkpoint, data_dir, *extra, sparsity="all", ks=KS):
    return ["--sparsity", sparsity, "--ks", ",".join(map(str, ks)), "--no-timing", "--checkpoint", checkpoint,
            "--data-dir", data_dir, "--no-download", "--name", "swept", "--results-dir", folder / "results",
            "--logdir", folder / "runs", "--plot", folder / "plot.png", *extra]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, trained, data_dir):
    """{variant: (folder, {(method, k): the pruned model eval.py measured})} for the nets that eval.py --save
    kept of every method at each of KS. The models are caught where eval.py measures their sparsity."""
    swept = {}
    for variant, (flags, methods) in VARIANTS.items():
        folder, nets = tmp_path_factory.mktemp(variant), []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(eval_script, "sparsity", lambda net: nets.append(copy.deepcopy(net)) or prune.sparsity(net))
            eval_script.main([str(a) for a in sweep_argv(folder, trained[0], data_dir, *flags, "--save",
                                                         folder / "nets", sparsity=",".join(methods))])
        swept[variant] = folder, dict(zip([(m, k) for m in methods for k in KS], nets))
    return swept


def read_csv(path):
    with open(path) as f:
        return {int(row["k"]): row for row in csv.DictReader(f)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_saved_net_reloads_to_the_pruned_models_logits_bit_for_bit(variant, saved, trained, data_dir):
    folder, nets = saved[variant]
    images, _ = data.load_data("mnist", data_dir, "test", download=False)
    source_sha256 = hashlib.sha256(trained[0].read_bytes()).hexdigest()
    for method in VARIANTS[variant][1]:
        name = method if variant == "one-shot" else f"{method}-{variant}"
        rows = read_csv(folder / "results" / "swept" / f"{name}.csv")
        sizes = []
        for k in KS:
            path = folder / "nets" / file_name(method, variant, k)
            model, record = checkpoints.load(path)
            with torch.no_grad():
                assert torch.equal(model(images), nets[method, k](images)), path
            assert record["accuracy"] == float(rows[k]["accuracy"]) == utils.evaluate(model, (images, _))
            assert record["pruned"]["sparsity"] == prune.sparsity(nets[method, k])
            assert {key: record["pruned"][key] for key in ("method", "k", "variant", "source_sha256")} == {
                "method": method, "k": k, "variant": variant, "source_sha256": source_sha256}
            assert record["dataset"] == {"name": "mnist", "mean": 0.1307, "std": 0.3081}
            assert record["config"]["epochs"] == 1  # the recipe of the checkpoint it came from
            plain = torch.load(path, weights_only=True)  # no code of this repo needed
            assert plain["written_by"] == "eval.py --save" and len(plain["hidden"]) == 4
            sizes.append(path.stat().st_size)
        assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0] / 10, (method, sizes)


def test_a_decimal_k_is_swept_saved_and_reloaded_exactly(trained, data_dir, tmp_path):
    eval_script.main([str(a) for a in sweep_argv(tmp_path, trained[0], data_dir, "--save", tmp_path / "nets",
                                                 sparsity="weight,global", ks=(99, 99.5, 99.8))])
    model, _ = checkpoints.load(trained[0])
    images, _ = data.load_data("mnist", data_dir, "test", download=False)
    for method in ("weight", "global"):
        rows = read_csv_rows(tmp_path / "results" / "swept" / f"{method}.csv")
        assert [row["k"] for row in rows] == ["99", "99.5", "99.8"]
        for k in (99.5, 99.8):
            loaded, record = checkpoints.load(tmp_path / "nets" / f"{method}-{k}.pt")
            pruned = prune.prune(model, method, k)
            with torch.no_grad():
                assert torch.equal(loaded(images), pruned(images))
            zeros = sum(int((layer.weight == 0).sum()) for layer in loaded.hidden)
            counts = [layer.weight.numel() for layer in loaded.hidden]
            expected = (sum(round(k / 100 * n) for n in counts) if method == "weight" else round(k / 100 * sum(counts)))
            assert zeros == expected and record["pruned"]["k"] == k


def read_csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_file_at_99_percent_holds_only_its_nonzeros(saved):
    path = saved["one-shot"][0] / "nets" / "weight-99.pt"
    hidden = torch.load(path, weights_only=True)["hidden"]
    nonzeros = sum(round(0.01 * rows * columns) for rows, columns in ((1000, 784), (1000, 1000), (500, 1000),
                                                                      (200, 500)))
    assert sum(len(layer["values"]) for layer in hidden) == nonzeros
    dense_bytes = 4 * sum(rows * columns for rows, columns in ((1000, 784), (1000, 1000), (500, 1000), (200, 500),
                                                               (10, 200)))
    assert path.stat().st_size < 0.05 * dense_bytes
    assert torch.load(saved["one-shot"][0] / "nets" / "weight-0.pt", weights_only=True)["hidden"][0].keys() == {"dense"}


@pytest.mark.parametrize("retrain", [[], ["--retrain", "finetune"]], ids=["pruned further", "fine-tuned"])
def test_a_loaded_net_pruned_further_or_fine_tuned_keeps_every_zero(retrain, saved, data_dir, tmp_path):
    path = saved["one-shot"][0] / "nets" / "weight-50.pt"  # scattered zeros, which unit and random pruning miss
    loaded, record = checkpoints.load(path)
    eval_script.main([str(a) for a in sweep_argv(tmp_path, path, data_dir, *retrain, "--save", tmp_path / "nets",
                                                 ks=(0, 50, 90))])
    zeros = [layer.weight == 0 for layer in loaded.hidden]
    suffix = "-finetuned" if retrain else ""
    for method in prune.METHODS:
        rows = read_csv(tmp_path / "results" / "swept" / f"{method}{suffix}.csv")
        for k in (0, 50, 90):
            further, _ = checkpoints.load(tmp_path / "nets" / f"{method}{suffix}-{k}.pt")
            for was_zero, layer in zip(zeros, further.hidden):
                assert (layer.weight[was_zero] == 0).all(), (method, k)
            if k == 0 and not retrain:  # the net as it was saved
                assert float(rows[0]["accuracy"]) == record["accuracy"]
                assert float(rows[0]["sparsity"]) == pytest.approx(record["pruned"]["sparsity"]["sparsity"], abs=1e-6)
        if method in ("weight", "global"):  # the counts round as for any net: exactly 90 % of the weights
            assert float(rows[90]["sparsity"]) == pytest.approx(90, abs=1e-6)


def test_a_saved_net_is_timed_like_a_checkpoint(saved, data_dir, tmp_path, capsys):
    path = saved["one-shot"][0] / "nets" / "weight-99.pt"
    argv = [a for a in sweep_argv(tmp_path, path, data_dir, sparsity="weight", ks=(0,)) if a != "--no-timing"]
    result = run_main(eval_script.main, [*argv, "--timing-batch", 20], capsys)
    assert result.returncode == 0, result.stderr
    row = read_csv(tmp_path / "results" / "swept" / "weight.csv")[0]
    assert float(row["sparsity"]) == pytest.approx(99, abs=1e-9) and float(row["sparse_ms"]) > 0
    assert float(row["flop_ceiling"]) > 50


def test_rewinding_a_saved_net_says_why_it_cannot(saved, data_dir, tmp_path, capsys):
    path = saved["one-shot"][0] / "nets" / "weight-50.pt"
    result = run_main(eval_script.main, eval_argv(tmp_path, path, data_dir, "--retrain", "rewind"), capsys)
    assert_one_line(result, f"{path} is a pruned net, which keeps no initial weights, so it cannot be rewound")
    assert_nothing_written(tmp_path)


def test_save_is_checked_before_any_work(checkpoint, data_dir, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file where the folder would go\n")
    result = run_main(eval_script.main, eval_argv(tmp_path, checkpoint, data_dir, "--save", tmp_path / "taken"), capsys)
    assert_one_line(result, "cannot write to", "taken")
    (tmp_path / "nets" / "weight-90.pt").mkdir(parents=True)
    result = run_main(eval_script.main, eval_argv(tmp_path, checkpoint, data_dir, "--save", tmp_path / "nets"), capsys)
    assert_one_line(result, f"cannot write {tmp_path / 'nets' / 'weight-90.pt'}: it is a folder")
    assert_nothing_written(tmp_path)


def test_several_checkpoints_are_saved_a_folder_each_named_after_their_files(seeds, data_dir, tmp_path, capsys):
    argv = sweep_argv(tmp_path, seeds[0], data_dir, "--checkpoint", *seeds, "--save", tmp_path / "nets",
                      sparsity="weight", ks=(90,))
    assert run_main(eval_script.main, argv, capsys).returncode == 0
    for seed in seeds:
        record = checkpoints.load(tmp_path / "nets" / seed.stem / "weight-90.pt")[1]
        assert record["pruned"]["source_sha256"] == hashlib.sha256(seed.read_bytes()).hexdigest()
    twin = tmp_path / "other" / seeds[0].name
    twin.parent.mkdir()
    twin.write_bytes(seeds[1].read_bytes())
    argv = sweep_argv(tmp_path / "again", seeds[0], data_dir, "--checkpoint", seeds[0], twin, "--save", tmp_path / "x")
    assert_one_line(run_main(eval_script.main, argv, capsys), "give the checkpoints different file names")


# The fast path of a loaded net, in the user's own code.

BATCHES = (1, 2, 7, 15, 16, 17, 100, 130, 1001)


@pytest.mark.parametrize("compiler", ["cc", "none"], ids=["kernel", "no compiler"])
def test_a_loaded_net_runs_the_fast_path_to_the_pruned_models_logits(compiler, saved, tmp_path, monkeypatch):
    if compiler == "cc" and build.load("forward")[0] is None:
        pytest.skip(f"the forward kernel does not build here: {build.load('forward')[1]}")
    if compiler == "none":
        monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    folder, nets = saved["one-shot"]
    for method in prune.METHODS:
        for k in (50, 99):
            net = inference.load(folder / "nets" / f"{method}-{k}.pt", device="cpu")
            if compiler == "cc":
                assert net.kernel == "csr_kernel.c"
            elif (method, k) in (("weight", 99), ("unit", 99), ("weight", 50)):  # few units left dead, or most
                assert net.kernel == {("weight", 99): "torch CSR", ("unit", 99): "compact", ("weight", 50): "compact"}[
                    method, k]
            for batch in BATCHES:
                x = torch.randn(batch, 784)
                with torch.no_grad():
                    expected = nets[method, k](x)
                torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4, msg=f"{method} {k} {batch}")
    with pytest.raises(ValueError, match=r"expected images \[batch, 784\], got \[3, 500\]"):
        net(torch.randn(3, 500))  # the kernel reads 784 columns a row: a narrower input is refused first


def test_the_readme_block_runs_and_gives_the_saved_accuracy(saved, data_dir, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    [block] = [b for b in blocks if "inference.load(" in b]
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "weight-95.pt").write_bytes((saved["one-shot"][0] / "nets" / "weight-99.pt").read_bytes())
    (tmp_path / "data").symlink_to(data_dir)
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"nets/weight-95.pt ({inference.load(tmp_path / 'nets' / 'weight-95.pt').kernel}): ")
    measured, recorded = map(float, re.findall(r"(\d+\.\d+) %", result.stdout))
    assert measured == recorded == checkpoints.load(tmp_path / "nets" / "weight-95.pt")[1]["accuracy"]


def test_evals_last_line_names_the_save_folder(checkpoint, data_dir, tmp_path, capsys):
    result = run_main(eval_script.main, sweep_argv(tmp_path, checkpoint, data_dir, "--save", tmp_path / "kept",
                                                   sparsity="weight", ks=(50,)), capsys)
    assert result.returncode == 0, result.stderr
    assert f"the pruned nets in {tmp_path / 'kept'}/" in result.stdout.strip().splitlines()[-1]
