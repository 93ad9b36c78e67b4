"""Config files (``get_config() -> ConfigDict``; ``FILE:VARIANT`` calls ``get_config(VARIANT)``) and
``--config.FIELD=VALUE`` overrides.

The convention of the Flax examples (ml_collections), without absl flags, so
that every mistake ends in one clear message. Messages name fields by their ConfigDict path
(``config.train.lr``); the CLI shows them as the flags that set them (``--config.train.lr``).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import io
import re
import tokenize
from pathlib import Path

import ml_collections

from jaxgen.errors import UserError


def split_config_spec(spec: str | Path) -> tuple[Path, str | None]:
    """``"configs/gan_mnist.py:smoke"`` -> ``(Path("configs/gan_mnist.py"), "smoke")``: the part
    after the last ':' names a variant (ml_collections' convention); no ':' (or a path that exists
    as given, ':' and all) means the default variant, ``None``."""
    s = str(spec)
    if ":" not in s or Path(s).exists():
        return Path(s), None
    path, _, variant = s.rpartition(":")
    return Path(path), variant


def load_config(spec: str | Path) -> ml_collections.ConfigDict:
    """Run the config file that ``spec`` (``FILE`` or ``FILE:VARIANT``) names and return its
    ``get_config()`` (``get_config(VARIANT)`` with a variant, checked against the file's
    ``VARIANTS``); every way this can go wrong (missing, a directory, not Python, no get_config, an
    unknown variant, an exception inside) is one UserError."""
    p, variant = split_config_spec(spec)
    shipped = "see configs/ for the shipped ones"
    if p.is_dir():
        raise UserError(
            f"{str(p)!r} is a directory, not a config file; name one, e.g. configs/charrnn.py:cpu"
        )
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} does not exist; {shipped}")
    if p.suffix != ".py":
        raise UserError(
            f"{str(p)!r} is not a Python config file (.py with a get_config() function); {shipped}"
        )
    loader_spec = importlib.util.spec_from_file_location(f"jaxgen_config_{p.stem}", p)
    if loader_spec is None or loader_spec.loader is None:
        raise UserError(f"config file {str(p)!r} cannot be loaded as Python; {shipped}")
    module = importlib.util.module_from_spec(loader_spec)
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:
        raise UserError(f"config file {str(p)!r} failed to load: {type(e).__name__}: {e}") from e
    if not callable(getattr(module, "get_config", None)):
        raise UserError(f"config file {str(p)!r} has no get_config() function; {shipped}")
    args = () if variant is None else (_check_variant(p, variant, getattr(module, "VARIANTS", ())),)
    try:
        cfg = module.get_config(*args)
    except Exception as e:
        raise UserError(f"get_config() in {str(p)!r} failed: {type(e).__name__}: {e}") from e
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise UserError(f"get_config() in {str(p)!r} must return an ml_collections.ConfigDict")
    return cfg


def _check_variant(path: Path, variant: str, variants) -> str:
    """``variant`` if the config file at ``path`` lists it in its ``VARIANTS``, else one UserError
    that names the valid ones."""
    if not variants:
        raise UserError(
            f"config file {str(path)!r} has no variants (no VARIANTS in it); "
            f"name it without ':{variant}'"
        )
    if variant not in variants:
        raise UserError(
            f"config file {str(path)!r} has no variant {variant!r}; valid variants: "
            f"{', '.join(variants)} (e.g. {path}:{variants[-1]})"
        )
    return variant


def _fields(cfg, prefix=""):
    out = []
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        out += _fields(v, name + ".") if isinstance(v, ml_collections.ConfigDict) else [name]
    return out


def validate_run_length(train: ml_collections.ConfigDict) -> None:
    """``train.steps`` and ``train.epochs`` are integers >= 0 (``steps`` 0: ``epochs`` passes over
    the data; not both 0), ``train.time_budget_s`` >= 0 (0: no limit). A negative value used to
    mean 'train for ever' in disguise; here it is one clear error."""
    for name in ("steps", "epochs"):
        v = train[name]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise UserError(
                f"config.train.{name} must be an integer >= 0 (train.steps=0: train "
                f"for train.epochs passes over the data), got {v!r}"
            )
    if train.steps == 0 and train.epochs == 0:
        raise UserError(
            "config.train.steps and config.train.epochs are both 0, so there is "
            "nothing to train; set one of them > 0"
        )
    budget = train.get("time_budget_s", 0.0)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 0:
        raise UserError(
            f"config.train.time_budget_s must be a number of seconds >= 0 "
            f"(0: no limit), got {budget!r}"
        )


def add_shared_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The fields every trainer's default config ends with: the time budget, what a non-finite loss
    does, and where the batch goes (data parallel over the devices, multi-host)."""
    c.train.time_budget_s = 0.0  # stop (and save) after this many seconds of training; 0: no limit
    c.train.budget_fit = True  # with a budget: lr schedule ends at the steps that fit (False: cut)
    c.train.on_nonfinite = "stop"  # a NaN/Inf loss: 'stop' (keep the last checkpoint) or 'skip' it
    c.parallel = ml_collections.ConfigDict()
    c.parallel.data_parallel = True  # with several devices: shard the global train.batch over them
    c.parallel.distributed = False  # multi-host: call jax.distributed.initialize() first
    return c


def require_positive_ints(cfg: ml_collections.ConfigDict, names) -> None:
    """Each dotted field in ``names`` (``"train.batch"``) holds an integer > 0 (not a bool)."""
    for name in names:
        v = cfg
        for part in name.split("."):
            v = v[part]
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise UserError(f"config.{name} must be a positive integer, got {v!r}")


def suggest_field(name: str, fields: list[str]) -> str:
    """The end of an unknown-field message: the closest valid field names (by the whole dotted name,
    or by the last part alone, so ``stesp`` finds ``train.steps``), else all of them."""
    close = difflib.get_close_matches(name, fields, n=3, cutoff=0.6)
    leaf = name.rsplit(".", 1)[-1]
    by_leaf = {}
    for f in fields:
        by_leaf.setdefault(f.rsplit(".", 1)[-1], []).append(f)
    for m in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.6):
        close += [f for f in by_leaf[m] if f not in close]
    if close:
        return "did you mean " + " or ".join(f"config.{f}" for f in close[:2]) + "?"
    return f"valid fields: {', '.join(fields)}"


def field_comments(*sources: str) -> dict[str, str]:
    """``{"train.steps": "total training steps; ..."}`` from the end-of-line comments of lines like
    ``c.train.steps = 0  # ...`` in Python source (a default_config or a config file); the first
    source that documents a field wins."""
    out: dict[str, str] = {}
    for src in sources:
        comments = {}
        try:
            for tok in tokenize.generate_tokens(io.StringIO(src).readline):
                if tok.type == tokenize.COMMENT:
                    comments[tok.start[0]] = tok.string.lstrip("#").strip()
        except (tokenize.TokenError, SyntaxError):
            continue
        for lineno, line in enumerate(src.splitlines(), 1):
            m = re.match(r"\s*c\.([\w.]+)\s*=(?!=)", line)
            if m and lineno in comments:
                out.setdefault(m.group(1), comments[lineno])
    return out


def describe_fields(cfg: ml_collections.ConfigDict, comments: dict[str, str] | None = None) -> str:
    """One line per field: ``--config.FIELD=VALUE`` (the config's current value) and what it
    means."""
    comments = comments or {}
    rows = []
    for name in _fields(cfg):
        v = cfg
        for part in name.split("."):
            v = v[part]
        shown = (v if v != "" else "''") if isinstance(v, str) else repr(v)
        rows.append((f"--config.{name}={shown}", comments.get(name, "")))
    width = min(44, max((len(a) for a, _ in rows), default=0))
    lines = []
    for a, b in rows:  # a long setting gets its explanation on the next line
        lines += (
            [f"  {a:<{width}}  {b}".rstrip()]
            if len(a) <= width
            else [f"  {a}", f"  {'':<{width}}  {b}"]
        )
    return "\n".join(lines)


def _parse(raw: str, old, name: str):
    if isinstance(old, bool):
        low = raw.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise UserError(f"config.{name} expects true or false, got {raw!r}")
    if isinstance(old, int):
        try:
            return int(raw)
        except ValueError:
            raise UserError(f"config.{name} expects an integer, got {raw!r}") from None
    if isinstance(old, float):
        try:
            return float(raw)
        except ValueError:
            raise UserError(f"config.{name} expects a number, got {raw!r}") from None
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
            raise UserError(f"unknown config field {name!r}; {suggest_field(name, _fields(cfg))}")
        if i < len(parts) - 1:
            node = node[part]
    old = node[parts[-1]]
    if isinstance(old, ml_collections.ConfigDict):
        raise UserError(
            f"config.{name} is a group; set one of its fields, e.g. config.{name}.{next(iter(old))}"
        )
    with node.unlocked():
        node[parts[-1]] = _parse(raw, old, name)


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    """``["--config.a.b=1", "--config.c", "2"]`` -> ``[("a.b", "1"), ("c", "2")]``."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--config."):
            raise UserError(
                f"unrecognised argument {a!r}; config fields are set with --config.FIELD=VALUE"
            )
        body = a[len("--config.") :]
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
