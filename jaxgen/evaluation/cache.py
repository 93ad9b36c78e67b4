"""One evaluation classifier per dataset, trained once and kept on disk.

``jaxgen eval`` and the evaluator run during GAN training then cost a forward pass. Entries are
``classifier-<hash>.npz`` (parameters) and ``.json`` (info), keyed by a hash of the images, the
labels, the shape, the seed and :data:`CACHE_VERSION`; both are written with
:func:`jaxgen.training.io.write_atomic`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data.images import Images
from jaxgen.errors import UserError
from jaxgen.evaluation import classifier
from jaxgen.evaluation.classifier import Params
from jaxgen.training.io import write_atomic, write_text_atomic

# Bump when the architecture or the training recipe changes: old cache entries then stop matching.
CACHE_VERSION = 1


def _cache_key(real: Images, seed: int) -> str:
    h = hashlib.sha256()
    x = np.ascontiguousarray(real.images)
    h.update(repr(("jaxgen-classifier", CACHE_VERSION, seed, x.shape, str(x.dtype))).encode())
    h.update(x.tobytes())
    if real.labels is not None:
        y = np.ascontiguousarray(real.labels, dtype=np.int64)
        h.update(y.tobytes())
    return h.hexdigest()[:20]


def _flatten(tree: dict) -> dict:
    """``{"layer/name": leaf}`` of a two-level ``{layer: {name: leaf}}`` tree."""
    return {f"{layer}/{name}": leaf for layer, d in tree.items() for name, leaf in d.items()}


def _unflatten(flat: dict[str, np.ndarray]) -> Params:
    out: Params = {}
    for k, v in flat.items():
        layer, name = k.split("/")
        out.setdefault(layer, {})[name] = jnp.asarray(v)
    return out


def _load_cached(npz: Path, meta: Path, real: Images, seed: int) -> tuple[Params, dict]:
    """The cached ``(params, info)``; ValueError (with the reason) if anything does not match."""
    info = json.loads(meta.read_text())
    if not isinstance(info, dict):
        raise ValueError("the metadata is not a JSON object")
    with np.load(npz, allow_pickle=False) as z:
        flat = {k: z[k] for k in z.files}
    params = _unflatten(flat)
    if tuple(info.get("image_shape", ())) != real.shape:
        raise ValueError(f"it is for images {info.get('image_shape')}, not {list(real.shape)}")
    template = jax.eval_shape(
        lambda: classifier.classifier_init(
            jax.random.key(seed), real.shape, int(info["num_classes"]),
            widths=tuple(info["widths"]), feature_dim=int(info["feature_dim"]),
        )
    )  # fmt: skip
    want = {k: v.shape for k, v in _flatten(template).items()}
    have = {k: v.shape for k, v in flat.items()}
    if want != have:
        raise ValueError("its arrays do not match the classifier's parameters")
    if not all(np.isfinite(v).all() for v in flat.values()):
        raise ValueError("it holds non-finite parameters")
    return params, info


def get_classifier(
    real: Images, cache_dir: str | Path, seed: int = 0, quiet: bool = False, **train_kwargs
) -> tuple[Params, dict]:
    """The evaluation classifier for ``real``: loaded from ``cache_dir`` when there, else trained
    (:func:`jaxgen.evaluation.classifier.train_classifier`) and saved there.

    The ``.json`` info holds the held-out accuracy, dataset name, image shape, number of images,
    ... Both files are written to a temporary file and renamed into place, so a crash never leaves
    a half-written entry under the final name. An unreadable or mismatched entry is retrained and
    replaced, with a warning.
    """
    cache_dir = Path(cache_dir).expanduser()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create the classifier cache directory {str(cache_dir)!r} ({e}); "
            "pass a writable directory"
        ) from None
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    key = _cache_key(real, seed)
    if train_kwargs:
        kwargs_json = json.dumps(train_kwargs, sort_keys=True, default=str)
        key += "-" + hashlib.sha256(kwargs_json.encode()).hexdigest()[:8]
    npz, meta = cache_dir / f"classifier-{key}.npz", cache_dir / f"classifier-{key}.json"
    if npz.exists() or meta.exists():
        try:
            params, info = _load_cached(npz, meta, real, seed)
            accuracy = info.get("holdout_accuracy")
            say(f"evaluation classifier loaded from {npz} (held-out accuracy {accuracy})")
            return params, info
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
            warnings.warn(
                f"the cached evaluation classifier {npz.name} in {cache_dir} is unreadable or does "
                f"not match ({type(e).__name__}: {e}); retraining it",
                RuntimeWarning,
                stacklevel=2,
            )
    say(f"training the evaluation classifier on {real.name} ({len(real)} images); "
        f"cached in {cache_dir}")  # fmt: skip
    params, info = classifier.train_classifier(
        real, seed=seed, log=None if quiet else say, **train_kwargs
    )
    flat = {k: np.asarray(v) for k, v in _flatten(params).items()}
    write_atomic(npz, lambda f: np.savez(f, **flat))
    write_text_atomic(meta, json.dumps(info, indent=1))
    return params, info
