"""Atomic checkpoints with orbax: the latest few for resuming, the best one by metric.

Layout under a workdir::

    jaxgen.json        what the workdir holds (model kind, config, vocabulary); written atomically
    checkpoints/<step> the latest checkpoints (orbax writes to a temporary folder, then renames)
    best/<step>        the checkpoint with the best validation metric so far

A checkpoint that cannot be read (corrupt or half-deleted) is skipped with a
message and the one before it is used, so a crash during a save loses at most
the steps since the previous save; the unreadable one is replaced when training
reaches its step again. A checkpoint that reads fine but holds a differently
shaped train state (another batch size, another learning-rate schedule) is never
skipped: :func:`check_resumable` refuses the resume, naming what differs, before
anything in the workdir is touched.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxgen.errors import UserError
from jaxgen.training.io import write_json_atomic  # noqa: F401  (re-exported for the trainers)

META = "jaxgen.json"


def read_meta(workdir: str | Path) -> dict | None:
    p = Path(workdir) / META
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(
            f"{p} is unreadable ({e}); restore it from a backup or use a new workdir"
        ) from None


def check_workdir_kind(workdir: str | Path, kind: str) -> dict | None:
    """The workdir's metadata, after checking it holds a model of ``kind`` (or nothing yet)."""
    meta = read_meta(workdir)
    if meta is not None and meta.get("model") != kind:
        raise UserError(
            f"workdir {str(workdir)!r} holds a {meta.get('model')!r} model, not {kind!r}; "
            "use a new workdir for this config"
        )
    return meta


# ----------------------------------------------------------------------------- the resume guard


def _layout(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{"params.w": (shape, dtype), ...}`` of a state or of a checkpoint's metadata tree, with
    the key paths orbax writes (namedtuple fields by name, tuple entries by index)."""
    flat = ocp.tree.to_flat_dict(tree, sep=".")
    return {k: (tuple(v.shape), str(v.dtype)) for k, v in flat.items() if v is not None}


def _saved_layout(step_dir: Path) -> dict | None:
    """The layout a checkpoint folder holds, or ``None`` when its metadata cannot be read."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(
        logging.ERROR
    )  # orbax warns about optional files; a failure is reported by the caller
    try:
        md = ocp.StandardCheckpointer().metadata(step_dir / "default")
        tree = md.item_metadata.tree if hasattr(md, "item_metadata") else md.tree
        return _layout(tree)
    except Exception:
        return None
    finally:
        absl.setLevel(level)


def _state_differences(saved: dict, now: dict, limit: int = 3) -> list[str]:
    out = []
    for k in sorted(saved.keys() | now.keys()):
        if k not in now:
            out.append(f"{k} is saved but the config has no such entry")
        elif k not in saved:
            out.append(f"{k} is new in this config")
        elif saved[k] != now[k]:
            (s1, d1), (s2, d2) = saved[k], now[k]
            what = f"shape {s1} -> {s2}" if s1 != s2 else f"dtype {d1} -> {d2}"
            out.append(f"{k}: {what}")
    return out[:limit] + ([f"{len(out) - limit} more"] if len(out) > limit else [])


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``["train.batch 4 -> 8", ...]``: the fields of two config dicts that differ."""
    out = []
    for k in sorted(old.keys() | new.keys()):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{k}.")
        elif (list(a) if isinstance(a, (list, tuple)) else a) != (
            list(b) if isinstance(b, (list, tuple)) else b
        ):
            out.append(f"{prefix}{k} {a!r} -> {b!r}")
    return out


def saved_steps(directory: Path) -> list[int]:
    """Step numbers of the finished checkpoints in ``directory``, newest first (no orbax manager,
    so nothing is created or cleaned up)."""
    if not directory.is_dir():
        return []
    return sorted(
        (int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True
    )


def check_resumable(
    workdir: str | Path,
    abstract_state: Any,
    old_config: dict | None = None,
    new_config: dict | None = None,
) -> None:
    """Refuse (:class:`UserError`) to resume ``workdir`` when its newest readable checkpoint holds a
    train state whose tree, shapes or dtypes differ from ``abstract_state``: restoring would fail,
    and treating that as corruption would retrain from scratch over the old run. Reads only, so a
    refused resume leaves the workdir byte for byte as it was. Unreadable checkpoints are left to
    :meth:`Checkpoints.restore`, which falls back past them."""
    workdir = Path(workdir)
    now = _layout(abstract_state)
    for step in saved_steps(workdir / "checkpoints"):
        saved = _saved_layout(workdir / "checkpoints" / str(step))
        if saved is None:
            continue
        if saved != now:
            diffs = "; ".join(_state_differences(saved, now))
            cfg = config_differences(old_config or {}, new_config or {})
            why = (
                f"the config differs from the saved run's in {', '.join(cfg[:4])}"
                + (f" and {len(cfg) - 4} more" if len(cfg) > 4 else "")
                if cfg
                else "the code or config changed"
            )
            raise UserError(
                f"cannot resume {str(workdir)!r}: its checkpoint {step} "
                f"holds a different train state ({diffs}); "
                f"{why}. Resume with the settings it was trained with (in {META}), "
                "or use a new workdir"
            )
        return


class Checkpoints:
    """The latest ``keep`` checkpoints plus the best one, both written atomically by orbax."""

    def __init__(self, workdir: str | Path, keep: int = 2):
        root = Path(workdir).absolute()
        opts = dict(create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True)
        self.latest = ocp.CheckpointManager(
            root / "checkpoints", options=ocp.CheckpointManagerOptions(max_to_keep=keep, **opts)
        )
        self.best = ocp.CheckpointManager(
            root / "best", options=ocp.CheckpointManagerOptions(max_to_keep=1, **opts)
        )
        self._unreadable = {"latest": set(), "best": set()}  # steps restore() had to skip

    def save(self, step: int, state: Any, *, best: bool = False) -> None:
        """Save ``state`` as ``step``; a step already saved is kept, unless it could not be read."""
        which = "best" if best else "latest"
        mgr = self.best if best else self.latest
        if step in mgr.all_steps():
            if step not in self._unreadable[which]:
                return
            mgr.delete(step)  # a corrupt checkpoint at this step: replace it
            self._unreadable[which].discard(step)
        mgr.save(step, args=ocp.args.StandardSave(state), force=True)
        mgr.wait_until_finished()

    def restore(self, abstract_state: Any, *, which: str = "latest") -> tuple[int, Any] | None:
        """``(step, state)`` of the newest checkpoint that reads, or ``None`` if there is none.

        A checkpoint whose files cannot be read is skipped with a warning (and replaced by the next
        :meth:`save` of its step); one that reads but holds another train state raises
        :class:`UserError`, as :func:`check_resumable` does."""
        mgr = self.best if which == "best" else self.latest
        now = _layout(abstract_state)
        for step in sorted(mgr.all_steps(), reverse=True):
            saved = _saved_layout(Path(mgr.directory) / str(step))
            if saved is not None and saved != now:
                raise UserError(
                    f"checkpoint {mgr.directory}/{step} holds a different train state "
                    f"({'; '.join(_state_differences(saved, now))}); "
                    "load it with the config it was trained with"
                )
            try:
                if saved is None:
                    raise ValueError("its metadata cannot be read")
                return step, mgr.restore(step, args=ocp.args.StandardRestore(abstract_state))
            except Exception as e:  # unreadable files: fall back to the one before
                self._unreadable[which].add(step)
                print(
                    f"warning: checkpoint {mgr.directory}/{step} could not be restored "
                    f"({type(e).__name__}: "
                    f"{str(e)[:200]}); trying the previous one",
                    file=sys.stderr,
                )
        return None

    def steps(self, which: str = "latest") -> list[int]:
        return list((self.best if which == "best" else self.latest).all_steps())

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
