"""Config files (``get_config() -> ConfigDict``) and ``--config.FIELD=VALUE`` overrides.

The convention of the Flax examples (ml_collections), without absl flags, so
that every mistake ends in one clear message.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import ml_collections

from jaxgen.errors import UserError


def load_config(path: str | Path) -> ml_collections.ConfigDict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} does not exist; see configs/ for the shipped ones")
    spec = importlib.util.spec_from_file_location(f"jaxgen_config_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UserError(f"config file {str(p)!r} failed to load: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise UserError(f"config file {str(p)!r} has no get_config() function")
    cfg = module.get_config()
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise UserError(f"get_config() in {str(p)!r} must return an ml_collections.ConfigDict")
    return cfg


def _fields(cfg, prefix=""):
    out = []
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        out += _fields(v, name + ".") if isinstance(v, ml_collections.ConfigDict) else [name]
    return out


def _parse(raw: str, old, name: str):
    if isinstance(old, bool):
        low = raw.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise UserError(f"--config.{name} expects true or false, got {raw!r}")
    if isinstance(old, int):
        try:
            return int(raw)
        except ValueError:
            raise UserError(f"--config.{name} expects an integer, got {raw!r}") from None
    if isinstance(old, float):
        try:
            return float(raw)
        except ValueError:
            raise UserError(f"--config.{name} expects a number, got {raw!r}") from None
    if isinstance(old, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def apply_override(cfg: ml_collections.ConfigDict, name: str, raw: str) -> None:
    """Set the dotted field ``name`` to the value parsed from ``raw`` (typed like the default)."""
    node = cfg
    parts = name.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            valid = ", ".join(_fields(cfg))
            raise UserError(f"unknown config field {name!r}; valid fields: {valid}")
        if i < len(parts) - 1:
            node = node[part]
    old = node[parts[-1]]
    if isinstance(old, ml_collections.ConfigDict):
        raise UserError(f"--config.{name} is a group; set one of its fields, e.g. --config.{name}.{next(iter(old))}")
    with node.unlocked():
        node[parts[-1]] = _parse(raw, old, name)


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    """``["--config.a.b=1", "--config.c", "2"]`` -> ``[("a.b", "1"), ("c", "2")]``."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--config."):
            raise UserError(f"unrecognised argument {a!r}; config fields are set with --config.FIELD=VALUE")
        body = a[len("--config."):]
        if "=" in body:
            name, raw = body.split("=", 1)
        else:
            if i + 1 >= len(args):
                raise UserError(f"{a} needs a value: {a}=VALUE")
            name, raw = body, args[i + 1]
            i += 1
        out.append((name, raw))
        i += 1
    return out


def load_with_overrides(path, args: list[str]) -> ml_collections.ConfigDict:
    cfg = load_config(path)
    for name, raw in parse_overrides(args):
        apply_override(cfg, name, raw)
    return cfg
