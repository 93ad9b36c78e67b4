"""Text corpora, character vocabularies and classic char-RNN batching.

Batching follows the classic char-RNN recipe: the id stream is cut into
``batch`` parallel rows; batch ``k`` holds the ``k``-th window of ``seq_len``
characters of every row, and the targets are the same windows shifted by one.
Row ``b`` of batch ``k+1`` therefore continues row ``b`` of batch ``k``, so the
LSTM state can be carried from one batch to the next (truncated BPTT).
"""

from __future__ import annotations

import gzip
import json
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxgen.errors import UserError

BUILTIN_DESCRIPTION = (
    "tiny-shakespeare (1,115,394 characters of Shakespeare's plays, public domain; "
    "shipped gzipped inside "
    "the package)"
)
PYDOC_DESCRIPTION = (
    "the Python help topics that ship with CPython (pydoc_data.topics, ~465k characters of English "
    "documentation and code, reStructuredText)"
)
_BUILTIN_FILE = "tinyshakespeare.txt.gz"


def builtin_corpus() -> str:
    """The default corpus, no network needed: tiny-shakespeare, gzipped inside the package.

    Plays are dialogue with speaker names and short lines, so a char-RNN's text is readable after a
    few minutes (the ``pydoc`` corpus is reStructuredText full of ``****`` rules, which a young
    model imitates first).
    """
    path = Path(__file__).with_name(_BUILTIN_FILE)
    try:
        with gzip.open(path, "rb") as f:
            return f.read().decode("utf-8")
    except (OSError, EOFError) as e:
        raise UserError(
            f"the built-in corpus {str(path)!r} is missing or damaged ({e}); "
            "reinstall jaxgen, or point "
            "config.data.path at a UTF-8 text file"
        ) from None


def pydoc_corpus() -> str:
    """CPython's own help topics (``pydoc_data``): English documentation and code in
    reStructuredText."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # some minimal Python builds strip pydoc_data
        raise UserError(
            "the pydoc corpus (pydoc_data, part of CPython) is missing from this Python; use "
            "config.data.source=builtin or point config.data.path at a UTF-8 text file instead"
        ) from e
    return "".join(topics[k] for k in sorted(topics))


def read_text_file(path: str | Path) -> str:
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"text file {str(p)!r} does not exist; check config.data.path")
    if p.is_dir():
        raise UserError(f"{str(p)!r} is a directory; config.data.path must name a UTF-8 text file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{str(p)!r} is not valid UTF-8 (byte {e.start}: {raw[e.start : e.start + 1]!r}); "
            "convert it, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"
        ) from None
    if not text:
        raise UserError(f"text file {str(p)!r} is empty; give a corpus with some text in it")
    return text


def _reachable(host: str = "storage.googleapis.com", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tfds_text(
    name: str = "tiny_shakespeare",
    split: str = "train",
    data_dir: str | None = None,
    check_network: bool = True,
) -> str:
    """The text of a tensorflow-datasets text dataset, without TensorFlow.

    Uses ``tfds.data_source`` (array_record, random access). Checks that the
    download host answers first, so an offline machine fails in seconds, not
    minutes.
    """
    import tensorflow_datasets as tfds

    if check_network and not _reachable():
        raise UserError(
            f"cannot reach the tensorflow-datasets download host to fetch {name!r}; offline, use "
            "config.data.source=builtin or config.data.path=FILE "
            "(e.g. a local copy of tiny-shakespeare)"
        )
    try:
        ds = tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as e:  # tfds raises many types; one clear message instead
        raise UserError(
            f"tensorflow-datasets could not provide {name!r} split {split!r}: {e}"
        ) from e
    parts = []
    for i in range(len(ds)):
        t = ds[i]["text"]
        parts.append(t.decode("utf-8") if isinstance(t, bytes) else str(t))
    return "".join(parts)


def load_corpus(
    source: str = "builtin",
    path: str = "",
    tfds_name: str = "tiny_shakespeare",
    data_dir: str | None = None,
) -> str:
    """The corpus text: ``path`` if given, else the named ``source``: 'builtin' (tiny-shakespeare,
    shipped with jaxgen), 'pydoc' (CPython's help topics) or 'tfds' (tensorflow-datasets)."""
    if path:
        return read_text_file(path)
    if source == "builtin":
        return builtin_corpus()
    if source == "pydoc":
        return pydoc_corpus()
    if source == "tfds":
        # tiny_shakespeare ships train/validation/test splits; we re-split ourselves.
        return "".join(tfds_text(tfds_name, s, data_dir) for s in ("train", "validation", "test"))
    if source == "file":
        raise UserError("data.source='file' needs config.data.path=FILE")
    raise UserError(f"unknown data.source {source!r}; choose 'builtin', 'pydoc', 'file' or 'tfds'")


@dataclass(frozen=True)
class Vocab:
    """Characters <-> integer ids (sorted by code point)."""

    chars: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls(tuple(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> np.ndarray:
        idx = self.index
        missing = sorted({c for c in text if c not in idx})
        if missing:
            shown = "".join(missing[:20])
            raise UserError(
                f"characters {shown!r} are not in the model's vocabulary of {len(self)}; "
                "use only characters the model was trained on"
            )
        return np.fromiter((idx[c] for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))

    def to_json(self) -> str:
        return json.dumps({"chars": "".join(self.chars)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, s: str) -> "Vocab":
        return cls(tuple(json.loads(s)["chars"]))


def split_corpus(ids: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """First ``1 - val_fraction`` for training, the rest for validation (contiguous)."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    n_val = int(round(len(ids) * val_fraction))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


class CharBatches:
    """Classic char-RNN batches over an id stream.

    ``ids`` ``[N]`` is trimmed to ``batch * row_len`` and reshaped to rows
    ``[batch, row_len]``; window ``k`` is ``inputs = rows[:, k*L:(k+1)*L]``,
    ``targets = rows[:, k*L+1:(k+1)*L+1]``. Batches are returned time-major,
    ``[seq_len, batch]``, as the recurrent functions take them.
    """

    def __init__(self, ids: np.ndarray, batch: int, seq_len: int, *, name: str = "training"):
        for field, v in (("batch", batch), ("seq_len", seq_len)):
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise UserError(f"train.{field} must be a positive integer, got {v!r}")
        row_len = len(ids) // batch
        n = (row_len - 1) // seq_len
        if n < 1:
            need = batch * (seq_len + 1)
            raise UserError(
                f"the {name} text has {len(ids)} characters, fewer than one batch needs "
                f"(batch {batch} x (seq_len {seq_len} + 1) = {need}); "
                "use a longer text or a smaller "
                "config.train.batch / config.train.seq_len"
            )
        self.batch, self.seq_len, self.num_batches = batch, seq_len, n
        self.rows = np.ascontiguousarray(
            np.asarray(ids[: batch * row_len], np.int32).reshape(batch, row_len)
        )

    def __len__(self) -> int:
        return self.num_batches

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs, targets)``, each ``[seq_len, batch]`` int32."""
        if not 0 <= k < self.num_batches:
            raise IndexError(k)
        s = k * self.seq_len
        x = self.rows[:, s : s + self.seq_len]
        y = self.rows[:, s + 1 : s + self.seq_len + 1]
        return np.ascontiguousarray(x.T), np.ascontiguousarray(y.T)

    def stacked(self) -> tuple[np.ndarray, np.ndarray]:
        """Every window at once: ``(inputs, targets)``, each ``[num_batches, seq_len, batch]``."""
        n, length = self.num_batches, self.seq_len
        x = self.rows[:, : n * length].reshape(self.batch, n, length)
        y = self.rows[:, 1 : n * length + 1].reshape(self.batch, n, length)
        return tuple(np.ascontiguousarray(a.transpose(1, 2, 0)) for a in (x, y))

    def position(self, step: int) -> tuple[int, int]:
        """``(epoch, batch index)`` of global step ``step`` (the data order is fixed)."""
        return divmod(step, self.num_batches)
