"""Atomic checkpoints with orbax: the latest few for resuming, the best one by metric.

Layout under a workdir::

    jaxgen.json        what the workdir holds (model kind, config, vocabulary); written atomically
    checkpoints/<step> the latest checkpoints (orbax writes to a temporary folder, then renames)
    best/<step>        the checkpoint with the best validation metric so far

A checkpoint that fails to restore (corrupt or half-deleted) is skipped with a
message and the one before it is used, so a crash during a save loses at most
the steps since the previous save.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxgen.errors import UserError

META = "jaxgen.json"


def write_json_atomic(path: Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


def read_meta(workdir: str | Path) -> dict | None:
    p = Path(workdir) / META
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{p} is unreadable ({e}); restore it from a backup or use a new --workdir") from None


def check_workdir_kind(workdir: str | Path, kind: str) -> dict | None:
    """The workdir's metadata, after checking it holds a model of ``kind`` (or nothing yet)."""
    meta = read_meta(workdir)
    if meta is not None and meta.get("model") != kind:
        raise UserError(
            f"workdir {str(workdir)!r} holds a {meta.get('model')!r} model, not {kind!r}; "
            "use a new --workdir for this config"
        )
    return meta


class Checkpoints:
    """The latest ``keep`` checkpoints plus the best one, both written atomically by orbax."""

    def __init__(self, workdir: str | Path, keep: int = 2):
        root = Path(workdir).absolute()
        opts = dict(create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True)
        self.latest = ocp.CheckpointManager(
            root / "checkpoints", options=ocp.CheckpointManagerOptions(max_to_keep=keep, **opts)
        )
        self.best = ocp.CheckpointManager(root / "best", options=ocp.CheckpointManagerOptions(max_to_keep=1, **opts))

    def save(self, step: int, state: Any, *, best: bool = False) -> None:
        mgr = self.best if best else self.latest
        if step in mgr.all_steps():
            return
        mgr.save(step, args=ocp.args.StandardSave(state), force=True)
        mgr.wait_until_finished()

    def restore(self, abstract_state: Any, *, which: str = "latest") -> tuple[int, Any] | None:
        """``(step, state)`` of the newest checkpoint that restores, or ``None`` if there is none."""
        mgr = self.best if which == "best" else self.latest
        for step in sorted(mgr.all_steps(), reverse=True):
            try:
                return step, mgr.restore(step, args=ocp.args.StandardRestore(abstract_state))
            except Exception as e:  # corrupt or incompatible: fall back to the one before
                print(f"warning: checkpoint {mgr.directory}/{step} could not be restored ({type(e).__name__}: "
                      f"{str(e)[:200]}); trying the previous one", file=sys.stderr)
        return None

    def steps(self, which: str = "latest") -> list[int]:
        return list((self.best if which == "best" else self.latest).all_steps())

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
