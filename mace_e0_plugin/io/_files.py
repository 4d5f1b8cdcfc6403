"""Files written whole or not at all (I/O): a temporary file in the same folder, then ``os.replace``.

A crash, a full disk or a failing writer leaves the old file (or no file) and no temporary one,
and a failure to write is one line that names the file and the cause.
"""

import errno
import json
import os
import tempfile
from typing import Callable, Dict, IO, Optional

import torch

from ..errors import E0WriteError

_FIXES = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some of your quota or write elsewhere",
    errno.EACCES: "choose a folder you can write to",
    errno.EPERM: "choose a folder you can write to",
    errno.EROFS: "choose a folder on a writable file system",
}


class _Recording:
    """The temporary file as writers see it: it remembers the OSError of a failed write, because
    torch.save turns that into a RuntimeError ("unexpected pos ...") that names no cause."""

    def __init__(self, handle: IO[bytes]):
        self.handle = handle
        self.error: Optional[OSError] = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        self.handle.flush()


def write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> str:
    """Call ``write(handle)`` on a temporary file beside ``path``, then move it over ``path``.

    Any OSError on the way (full disk, no permission, read-only folder), also one hidden inside a
    writer's own exception, becomes an E0WriteError naming ``path`` and the cause; the old file is
    left as it was and the temporary one removed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    recording = None
    try:
        os.makedirs(directory, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=directory, prefix=f".{os.path.basename(path)}.",
                                             suffix=".partial", delete=False)
    except OSError as error:
        raise write_error(path, error) from None
    try:
        with handle:
            recording = _Recording(handle)
            write(recording)
            handle.flush()
            os.fchmod(handle.fileno(), _mode_for(path))
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException as error:
        try:
            os.unlink(handle.name)
        except FileNotFoundError:
            pass
        cause = recording.error if recording is not None and recording.error is not None else error
        if isinstance(cause, OSError):
            raise write_error(path, cause) from None
        raise
    return path


def _mode_for(path: str) -> int:
    """The permissions ``open(path, "w")`` would give: the old file's, else 0o666 less the umask
    (temporary files are created 0o600, which would hide a model from the rest of a group)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_error(path: str, error: OSError) -> E0WriteError:
    """One line: the file, the cause in the system's words ("no space left on device"), the fix."""
    cause = os.strerror(error.errno).lower() if error.errno else str(error)
    fix = _FIXES.get(error.errno, "check the folder and the disk")
    return E0WriteError(f"cannot write {path}: {cause}; {fix}. Nothing was written, and any old file is unchanged.")


def write_json(path: str, content: Dict[str, object]) -> str:
    text = json.dumps(content, indent=2) + "\n"
    return write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def save_torch(path: str, obj: object) -> str:
    return write_atomically(path, lambda handle: torch.save(obj, handle))
