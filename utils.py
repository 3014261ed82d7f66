"""What train.py and eval.py share: data, evaluation, an epoch of training, checkpoints and errors."""
import argparse
import contextlib
import gzip
import hashlib
import io
import math
import os
import pickletools
import signal
import struct
import sys
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import MLP, SIZES


class UserError(Exception):
    """A wrong flag, a missing file or bad data: reported as one line on stderr, never a traceback."""


class Terminated(BaseException):
    """SIGTERM, as schedulers and `timeout` stop a job: unwound like Ctrl-C, so temporary files go."""


def raise_terminated(signum, frame):
    raise Terminated


def run(main):
    """Run a script's main(), turning a UserError, Ctrl-C or SIGTERM into one line on stderr and a
    non-zero exit. Library warnings are held until main() ends well, so that an error is one line."""
    on_sigterm = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        with warnings.catch_warnings(record=True) as caught:
            main()
        for warning in caught:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except (KeyboardInterrupt, Terminated) as e:
        # Every output is written whole or not at all (write_atomic), so what existed before is intact.
        print("interrupted: files from earlier runs are left as they were", file=sys.stderr)
        sys.exit(130 if isinstance(e, KeyboardInterrupt) else 128 + signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, on_sigterm)


# ---------------------------------------------------------------------------------------------------
# Command line


def positive_int(text):
    return parse_number(text, int, lambda value: value > 0, "a positive whole number")


def non_negative_int(text):
    return parse_number(text, int, lambda value: value >= 0, "a whole number >= 0")


def positive_float(text):
    return parse_number(text, float, lambda value: 0 < value < math.inf, "a positive number")


def non_negative_float(text):
    return parse_number(text, float, lambda value: 0 <= value < math.inf, "a number >= 0")


def parse_number(text, kind, is_valid, expected):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not is_valid(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def add_data_arguments(parser):
    """The flags train.py and eval.py share: which data, where it lives, and which device runs."""
    parser.add_argument("--dataset", choices=DATASETS, default="mnist", help="which data set to use")
    parser.add_argument("--data-dir", default="data",
                        help="folder with the four IDX files (.gz or not), directly or in <dataset>/raw")
    parser.add_argument("--no-download", action="store_true",
                        help="never download; fail if the files are not in --data-dir")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto takes the GPU when there is one")


def pick_device(name):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    return name


# ---------------------------------------------------------------------------------------------------
# Data: the whole split is read once into memory as a normalised tensor, so an epoch is a loop over
# index slices with no per-sample work.

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
    folders = (data_dir / class_name / "raw", data_dir)
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


def find_file(folders, name):
    for folder in folders:
        for path in (folder / name, folder / f"{name}.gz"):
            if path.is_file():
                return path
    return None


def fetch(class_name, data_dir):
    """Download a dataset with torchvision into data_dir/<Class>/raw."""
    from torchvision import datasets  # imported here: it takes over a second and only this needs it

    print(f"downloading {class_name} into {data_dir / class_name / 'raw'}", file=sys.stderr)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints every mirror it tries
            getattr(datasets, class_name)(data_dir, download=True)
    except (RuntimeError, OSError) as e:
        reason = str(e).strip().splitlines()[-1]
        raise UserError(f"could not download {class_name} ({reason}): put its four IDX files (.gz or not) "
                        f"in {data_dir / class_name / 'raw'}, or point --data-dir at a folder that holds them")


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


# ---------------------------------------------------------------------------------------------------
# Training and evaluation


@torch.no_grad()
def evaluate(model, data, batch_size=2000):
    """Test accuracy of `model` on data = (images, labels), in percent."""
    images, labels = data
    model.eval()
    correct = sum((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum()
                  for i in range(0, len(labels), batch_size))
    return 100 * int(correct) / len(labels)


def sgd(model, lr, steps, weight_decay=0.0):
    """SGD with Nesterov momentum 0.9, its learning rate annealed from lr to 0 over `steps` on a cosine."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)


def train_epoch(model, data, optimizer, batch_size, generator, scheduler=None, l1=0.0, desc="train", loss_fn=None):
    """One pass over data = (images, labels) in an order drawn from `generator`; the mean loss.

    l1 adds l1 * sum(|w|) over the hidden layers to the loss (as its gradient, l1 * sign(w), which
    costs less than differentiating the sum): it pushes the weights the net does not need to zero.
    loss_fn(logits, batch), given the indices of the batch, replaces the cross-entropy with the labels.
    """
    images, labels = data
    model.train()
    order = torch.randperm(len(labels), generator=generator).to(images.device)
    total_loss = torch.zeros((), device=images.device)
    # disable=None: a bar on a terminal, silence in logs and CI.
    for start in tqdm(range(0, len(labels), batch_size), desc=desc, unit="batch", leave=False, disable=None):
        batch = order[start:start + batch_size]
        logits = model(images[batch])
        loss = loss_fn(logits, batch) if loss_fn else F.cross_entropy(logits, labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if l1:
            for weight in model.hidden.parameters():  # weight_orig once a layer is pruned
                weight.grad.add_(weight.detach().sign(), alpha=l1)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.detach() * len(batch)
    mean_loss = total_loss.item() / len(labels)
    if not math.isfinite(mean_loss):
        raise UserError(f"the training loss became {mean_loss} ({desc}): try a smaller --lr")
    return mean_loss


# ---------------------------------------------------------------------------------------------------
# Files


def check_outputs(files=(), folders=()):
    """Fail now, not after minutes of work, if an output cannot be written: every folder is made and
    written into, and every file's own temporary name is made beside it; a file's path must not be
    taken by a folder or by anything but a plain file (which the rename would replace)."""
    for path in map(Path, files):
        if path.is_dir():
            raise UserError(f"cannot write {path}: it is a folder")
        if path.exists() and not path.is_file():
            raise UserError(f"cannot write {path}: it exists and is not a plain file")
        check_writable(path.parent, temporary_name(path))
    for folder in folders:
        check_writable(folder)


def check_writable(folder, probe=None):
    folder = Path(folder)
    probe = probe or folder / f".write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to {folder}: {e.strerror}")


def temporary_name(path):
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def writing(path, file=None):
    """Turn a failed write of `path` into a UserError that names it and the reason: the OS's OSError (a
    full disk, a file-size limit, a quota), or a library's error around it, as torch.save's RuntimeError,
    whose reason is the OSError that `file` (a WriteRecorder) met."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        e = getattr(file, "error", None) or e
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[-1]
        raise UserError(f"cannot write {path}: {reason}") from e


class WriteRecorder:
    """A file that keeps the first OSError its writes meet: torch.save reports one as a bare RuntimeError."""

    def __init__(self, file):
        self.file, self.error = file, None  # the file object may come later

    def write(self, data):
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name):
        return getattr(self.file, name)


def write_atomic(path, write):
    """Call write(file) on a temporary file beside `path`, then rename it to `path`.

    The rename is atomic, so Ctrl-C, SIGTERM, kill -9, a full disk or a crash at any moment leaves the
    old file or the new one, never a mix of the two; the temporary file goes with any failure but kill -9.
    """
    path = Path(path)
    tmp = temporary_name(path)
    file = WriteRecorder(None)
    try:
        with writing(path, file):
            with open(tmp, "wb") as file.file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(path, model, config, accuracy, initial_state=None):
    """The trained weights, the config and test accuracy, and the weights at initialisation (which
    rewinding a pruned net needs)."""
    checkpoint = {"state_dict": model.state_dict(), "config": config, "accuracy": accuracy}
    if initial_state is not None:
        checkpoint["initial_state_dict"] = initial_state
    write_atomic(path, lambda f: torch.save(checkpoint, f))


def load_checkpoint(path, device="cpu"):
    """(model, checkpoint) from a file train.py saved, with the file's sha256 added to the checkpoint.
    Loading never runs code the file may hold."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; run train.py first")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before it refuses them
            warnings.simplefilter("ignore")
            checkpoint = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception:  # torch.load fails in many ways on a damaged file; all mean "not loadable"
        code = code_it_would_run(data)
        if code:
            raise UserError(f"{path} was refused: loading it would run code ({code}), which a checkpoint never needs")
        raise UserError(f"{path} is not a readable checkpoint (truncated, or not saved by train.py)")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"{path} is not a checkpoint saved by train.py (no state_dict in it)")
    model = MLP().to(device)
    for key in ("state_dict", "initial_state_dict"):  # the initial weights, where train.py kept them
        if key in checkpoint:
            check_weights(path, checkpoint[key], model)
    model.load_state_dict(checkpoint["state_dict"])
    return model, {**checkpoint, "sha256": hashlib.sha256(data).hexdigest()}


def code_it_would_run(data):
    """The first callable that unpickling `data` (a torch.save zip, or a bare pickle) would call and that
    torch.load(weights_only=True) does not allow, or None. Read from the pickle's opcodes, whatever the
    protocol, and never executed."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            data = archive.read(next(name for name in archive.namelist() if name.endswith("data.pkl")))
    except (zipfile.BadZipFile, StopIteration, OSError, RuntimeError, zipfile.LargeZipFile):
        pass  # not a zip: a bare pickle
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = set(_get_allowed_globals())
    except ImportError:  # a torch that moved it: every global counts
        allowed = set()
    strings = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":  # protocols 0-3: "module name" in the opcode
                name = arg.replace(" ", ".")
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:  # protocol 4 and 5: two strings pushed before it
                name = ".".join(strings[-2:])
            else:
                if isinstance(arg, str):
                    strings.append(arg)
                continue
            if name not in allowed:
                return name
    except Exception:  # the rest is damaged: what was read so far named nothing else
        pass
    return None


def check_weights(path, state, model):
    """Refuse a state dict that does not fit `model`, or whose weights are not all finite."""
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a checkpoint saved by train.py (its weights are not a state dict)")
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items() if torch.is_tensor(t)}
    if found != expected:
        name = next(n for n in sorted(expected.keys() | found.keys()) if expected.get(n) != found.get(n))
        raise UserError(f"{path} holds another architecture: {name} is {found.get(name, 'missing')} there, "
                        f"{expected.get(name, 'absent')} in the MLP {'-'.join(map(str, SIZES))}")
    not_finite = next((name for name, t in state.items() if torch.is_tensor(t) and not torch.isfinite(t).all()), None)
    if not_finite:
        raise UserError(f"{path} holds weights that are not finite (NaN or inf in {not_finite}), as a run that "
                        f"diverged saves them; train it again")
