"""The one atomic file writer: a reader (or a crash) sees the old file or the new one, never half.

Every file jaxgen rewrites in place (``jaxgen.json``, evaluation results, cached classifiers,
plots, benchmark results, the sample history) goes through :func:`write_atomic`: the bytes go to
a temporary file beside the target, are flushed and fsync'd, and the temporary file is renamed
over the target (``os.replace`` is atomic on POSIX and Windows)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(f)`` on a binary file that replaces ``path`` only once it is complete."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``text`` (UTF-8) to ``path``, atomically."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_json_atomic(path: str | os.PathLike, obj: Any, **dumps_kw) -> None:
    """``obj`` as indented JSON to ``path``, atomically (``dumps_kw`` go to ``json.dumps``)."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, **dumps_kw))
