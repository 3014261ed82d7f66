"""Tiny IDX data sets written by the tests, and helpers to run the scripts as a user would."""
import gzip
import importlib.util
import os
import platform
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker (and per script it runs): the workers share the cores
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
sys.path.insert(0, str(REPO))

import data  # noqa: E402  (needs the path above)
import utils  # noqa: E402  (needs the path above)
from csrc import build  # noqa: E402  (needs the path above)

# The kernels' builds the tests run where the machine can: -march=native, then the same without AVX-512 (AVX2 on a
# machine that has both), then without AVX at all (the kernels' plain C). The last two exist on x86 only.
BUILDS = {"native": (), "AVX2": ("-mno-avx512f",), "no AVX": ("-mno-avx",)}
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def needs_kernel(name):
    """Skip a test where csrc's kernel `name` does not build here: the real build is tried (once per process, and
    cached on disk), not the presence of a program called cc."""
    library, why_not = build.load(name)
    return pytest.mark.skipif(library is None, reason=f"the {name} kernel does not build here: {why_not}")


def kernel_build(name, variant):
    """Kernel `name` built as BUILDS[variant]; the test skips where that build cannot exist (an x86 instruction set
    elsewhere) or the kernel does not build at all, and fails where only that build fails."""
    if BUILDS[variant] and not X86:
        pytest.skip(f"{variant} is an x86 build; this machine is {platform.machine()}")
    if build.load(name)[0] is None:
        pytest.skip(f"the {name} kernel does not build here: {build.load(name)[1]}")
    library, why_not = build.load(name, BUILDS[variant])
    assert library is not None, why_not
    return library


def write_idx(path, array):
    """Write a uint8 tensor in the IDX format MNIST uses, gzipped if the name ends in .gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">4B", 0, 0, 8, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(header + array.numpy().tobytes())


def make_split(n, seed):
    """n noisy 28x28 images whose class c is a bright 6x6 patch in place c: easy to learn."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)
    images = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.uint8)
    for image, c in zip(images, labels.tolist()):
        row, col = 2 + 13 * (c // 5), 1 + 5 * (c % 5)
        image[row:row + 6, col:col + 6] = 255
    return images, labels


def write_dataset(folder, gz=False, n_train=300, n_test=100):
    """The four IDX files of a tiny data set in `folder`; returns the (images, labels) written."""
    suffix = ".gz" if gz else ""
    written = {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        images, labels = make_split(n, seed)
        image_file, label_file = data.SPLITS[split]
        write_idx(folder / f"{image_file}{suffix}", images)
        write_idx(folder / f"{label_file}{suffix}", labels)
        written[split] = images, labels
    return written


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A --data-dir holding tiny MNIST files where torchvision puts them (data/MNIST/raw); read only."""
    folder = tmp_path_factory.mktemp("shared") / "data"
    write_dataset(folder / "MNIST" / "raw")
    return folder


def import_script(path):
    """The script at `path` (from the repository's root: benchmarks/sparse.py, say), imported as a module."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script, *args, cwd):
    """Run train.py or eval.py in a fresh interpreter, the way a user does."""
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def assert_fails_cleanly(result, *words):
    """A run that ended with a non-zero exit and an error message (no traceback) naming `words`."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert "error" in last_line, result.stderr
    for word in words:
        assert word in last_line, result.stderr
    return last_line


def run_main(main, argv, capsys):
    """Run a script's main(argv) in this process through utils.run, as its __main__ block does.

    Faster than run_script for the many checks of bad input; returns a CompletedProcess alike.
    """
    try:
        utils.run(lambda: main([str(a) for a in argv]))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def train_tiny(path, data_dir, seed=0):
    """A checkpoint that train.py makes in one short epoch on the tiny data set."""
    import train

    train.main(["--epochs", "1", "--batch-size", "32", "--seed", str(seed), "--data-dir", str(data_dir),
                "--no-download", "--out", str(path), "--logdir", str(path.parent / "runs")])
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory, data_dir):
    """Checkpoints of seeds 0, 1 and 2, trained once for the whole session."""
    folder = tmp_path_factory.mktemp("trained")
    return [train_tiny(folder / f"seed{seed}.pt", data_dir, seed) for seed in range(3)]


@pytest.fixture
def checkpoint(tmp_path, trained):
    """A model.pt of the test's own, as train.py made it in one short epoch."""
    return Path(shutil.copy(trained[0], tmp_path / "model.pt"))


@pytest.fixture
def seeds(trained):
    """Three checkpoints of the same recipe, seeds 0, 1 and 2 (shared: read them only)."""
    return trained
