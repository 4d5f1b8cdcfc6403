"""Files written whole or not at all (I/O): a temporary file in the same folder, then ``os.replace``.

A crash, a full disk or a failing writer leaves the old file (or no file) and no temporary one.
"""

import json
import os
import tempfile
from typing import Callable, Dict, IO


def write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> str:
    """Call ``write(handle)`` on a temporary file beside ``path``, then move it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix=f".{os.path.basename(path)}.",
                                         suffix=".partial", delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        try:
            os.unlink(handle.name)
        except FileNotFoundError:
            pass
        raise
    return path


def write_json(path: str, content: Dict[str, object]) -> str:
    text = json.dumps(content, indent=2) + "\n"
    return write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def save_torch(path: str, obj: object) -> str:
    import torch

    return write_atomically(path, lambda handle: torch.save(obj, handle))
