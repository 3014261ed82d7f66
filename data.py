"""The data: MNIST or Fashion-MNIST from their IDX files, each split read once into memory as one
normalised tensor, so that an epoch is a loop over index slices with no per-sample work."""
import contextlib
import gzip
import io
import math
import struct
import sys
from pathlib import Path

import torch

from model import SIZES
from utils import UserError


def add_data_arguments(parser):
    """The flags train.py and eval.py share: which data, where it lives, and which device runs."""
    parser.add_argument("--dataset", choices=DATASETS, default="mnist", help="which data set to use")
    parser.add_argument("--data-dir", default="data",
                        help="folder with the four IDX files (.gz or not), directly or in <dataset>/raw")
    parser.add_argument("--no-download", action="store_true",
                        help="never download; fail if the files are not in --data-dir")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto takes the GPU when there is one")


# name: (torchvision class, mean and std of the training images' pixels in [0, 1])
DATASETS = {
    "mnist": ("MNIST", 0.1307, 0.3081),
    "fashion-mnist": ("FashionMNIST", 0.2860, 0.3530),
}
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = SIZES[-1]


def load_data(dataset, data_dir, split, download=True, device="cpu"):
    """The whole split as (images, labels): float32 [N, 784] normalised, and int64 [N], on `device`.

    The IDX files are looked for, raw or .gz, in data_dir/<Class>/raw (where torchvision downloads
    them) and then in data_dir itself (a folder like /usr/share/datasets/fashion-mnist).
    """
    class_name, mean, std = DATASETS[dataset]
    data_dir = Path(data_dir)
    folders = idx_folders(class_name, data_dir)
    paths = [find_file(folders, name) for name in SPLITS[split]]
    if None in paths and download:
        fetch(class_name, data_dir)
        paths = [find_file(folders, name) for name in SPLITS[split]]
    if None in paths:
        names = " and ".join(SPLITS[split])
        raise UserError(f"no {dataset} {split} data: put {names} (.gz or not) in {folders[0]} "
                        f"or {folders[1]}, or choose the folder with --data-dir")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.dim() != 3 or tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise UserError(f"{paths[0]} holds images of shape {tuple(images.shape[1:])}, expected {IMAGE_SHAPE}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise UserError(f"{paths[1]} holds {labels.numel()} labels for the {len(images)} images of {paths[0]}")
    if labels.max() >= NUM_CLASSES:
        raise UserError(f"{paths[1]} holds label {labels.max()}, expected 0 to {NUM_CLASSES - 1}")
    images = images.reshape(len(images), -1).float().div_(255).sub_(mean).div_(std)
    return images.to(device), labels.long().to(device)


# The validation split: the last images of one permutation of the training set, drawn from this seed whatever the
# run's --seed, so that every run and every net holds out the same images.
VALIDATION_SEED = 0


def split_validation(train_data, images):
    """(the training part, the validation part) of train_data = (images, labels): the validation part the last
    `images` of the permutation drawn from VALIDATION_SEED, the training part the rest, both in their original
    order; (train_data, None) for no split."""
    if not images:
        return train_data, None
    x, y = train_data
    if images >= len(y):
        raise UserError(f"--validation {images} would hold out all {len(y)} training images: give fewer")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(VALIDATION_SEED)).to(y.device)
    kept, held = order[:-images].sort().values, order[-images:].sort().values
    return (x[kept], y[kept]), (x[held], y[held])


def load_split(dataset, data_dir, split, held=0, download=True, device="cpu"):
    """The images of `split`: "test"; "train", the training set less its `held` validation images; or
    "validation", those (split_validation)."""
    if split == "test":
        return load_data(dataset, data_dir, "test", download, device)
    train, validation = split_validation(load_data(dataset, data_dir, "train", download, device), held)
    return validation if split == "validation" else train


def idx_folders(class_name, data_dir):
    """Where a dataset's IDX files are looked for, in order: where torchvision downloads them, then data_dir."""
    return data_dir / class_name / "raw", data_dir


def find_file(folders, name):
    for folder in folders:
        for path in (folder / name, folder / f"{name}.gz"):
            if path.is_file():
                return path
    return None


def fetch(class_name, data_dir):
    """Download a dataset with torchvision into data_dir/<Class>/raw."""
    from torchvision import datasets  # imported here: it takes over a second and only this needs it

    raw = data_dir / class_name / "raw"
    missing = [p for p in (raw, *raw.parents) if not p.exists()]  # the folders the download will make
    print(f"downloading {class_name} into {raw}", file=sys.stderr)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints every mirror it tries
            getattr(datasets, class_name)(data_dir, download=True)
    except (RuntimeError, OSError) as e:
        for folder in missing:  # the deepest first; a mistyped --data-dir leaves nothing behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        reason = str(e).strip().splitlines()[-1]
        offline = ("; offline, Fashion-MNIST is a drop-in: apt-get install -y dataset-fashion-mnist, then --dataset "
                   "fashion-mnist --data-dir /usr/share/datasets/fashion-mnist" if class_name == "MNIST" else "")
        raise UserError(f"could not download {class_name} ({reason}): put its four IDX files (.gz or not) "
                        f"in {raw}, or point --data-dir at a folder that holds them{offline}")


def read_idx(path):
    """An IDX file of unsigned bytes (the MNIST format) as a uint8 tensor of the shape its header gives."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = bytearray(f.read())
    except (OSError, EOFError) as e:  # EOFError: a .gz cut short
        raise UserError(f"cannot read {path}: {e}")
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or not 1 <= raw[3] <= 3:
        raise UserError(f"{path} is not an IDX file of unsigned bytes")
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise UserError(f"{path} is cut short inside its header")
    shape = struct.unpack(f">{raw[3]}I", raw[4:header])
    if len(raw) != header + math.prod(shape) or math.prod(shape) == 0:
        raise UserError(f"{path} holds {len(raw)} bytes, but its header announces {header + math.prod(shape)} "
                        f"(shape {shape}): the file is truncated or damaged")
    return torch.frombuffer(raw, dtype=torch.uint8, offset=header).view(shape)
