"""Files: every output checked before work starts and written whole or not at all, a failed write
reported in one line."""
import contextlib
import os
from pathlib import Path

from utils import UserError


def check_outputs(files=(), folders=()):
    """Fail now, not after minutes of work, if an output cannot be written: every folder is made and
    written into, and every file's own temporary name is made beside it; a file's path must not be
    taken by a folder or by anything but a plain file (which the rename would replace). A check that
    fails takes away the folders the checks made, so that a refused run leaves nothing behind; the
    folders made are returned, for remove_empty where a later step fails."""
    made = []
    try:
        for path in map(Path, files):
            if path.is_dir():
                raise UserError(f"cannot write {path}: it is a folder")
            if path.exists() and not path.is_file():
                raise UserError(f"cannot write {path}: it exists and is not a plain file")
            check_writable(path.parent, temporary_name(path), made)
        for folder in folders:
            check_writable(folder, made=made)
    except UserError:
        remove_empty(made)
        raise
    return made


def remove_empty(folders):
    """Remove those of `folders` (outermost first, as check_outputs returns them) that are still empty."""
    for folder in reversed(folders):  # the deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


def check_writable(folder, probe=None, made=None):
    """Make `folder` and write `probe` in it, appending to `made` the folders this made, outermost first."""
    folder = Path(folder)
    probe = probe or folder / f".write-test-{os.getpid()}"
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to {folder}: {e.strerror}")
    finally:
        if made is not None:
            made += [p for p in missing if p.is_dir()]


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
