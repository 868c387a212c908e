"""The one atomic file writer: a temporary file in the target's directory, then a rename, so a
reader never sees half a file and a failure leaves the previous one as it was."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text(path: Path, text: str, mode: int | None = 0o644) -> Path:
    """Write `text` to `path` atomically, creating its directory. `mode` None keeps the
    temporary file's own (owner read/write only). OSError as it comes."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
