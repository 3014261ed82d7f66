"""Files: every output checked before work starts and written whole or not at all, a failed write
reported in one line, and checkpoints saved and loaded without ever running code they may hold."""
import contextlib
import hashlib
import io
import os
import pickletools
import warnings
import zipfile
from pathlib import Path

import torch

from model import MLP, SIZES
from utils import UserError


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
