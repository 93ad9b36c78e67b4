"""``jaxgen train | sample | eval | bench | analyze``: a thin layer that turns flags into calls."""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import sys
from pathlib import Path

from jaxgen.errors import UserError

TRAIN_EPILOG = """\
config fields:
  Any field of the config can be set with --config.FIELD=VALUE (parsed like its default), e.g.
    jaxgen train --config configs/charrnn.py:cpu --workdir /tmp/run --config.train.steps=200
  A config file may hold variants, chosen after a ':' (configs/charrnn.py:smoke); without one,
  the file's default. List a config's fields with their values and what they mean:
    jaxgen train --config configs/charrnn.py:cpu --help
  How long a run lasts: train.steps steps; train.steps=0 means train.epochs passes over the data
  (negative values are refused); train.time_budget_s > 0 stops it earlier (0: no limit).
"""


def config_help(cfg, path) -> str:
    """What ``jaxgen train --config FILE --help`` adds: every field, its value and its meaning (the
    comments in the trainer's default_config, else in FILE), read from their source files."""
    import importlib.util

    from jaxgen.config import describe_fields, field_comments, split_config_spec

    kind = cfg.get("model_kind", None)
    modules = {
        "charrnn": ["jaxgen.charrnn.config"],
        "gan": ["jaxgen.gan.config"],
        "stackgan": ["jaxgen.gan.stackgan_train"],
        "pix2pix": ["jaxgen.gan.translation_train"],
        "cyclegan": ["jaxgen.gan.translation_train"],
    }.get(kind, [])
    modules.append("jaxgen.config")  # the fields every trainer shares (add_shared_fields)
    sources = []
    for name in modules:
        sources.append(Path(importlib.util.find_spec(name).origin).read_text())
    sources.append(split_config_spec(path)[0].read_text(errors="replace"))
    return (
        f"fields of {path} with their values (after any --config.FIELD=VALUE given here):\n"
        + describe_fields(cfg, field_comments(*sources))
    )


def check_config_path(spec: str) -> None:
    """Refuse a ``--config`` that names a directory or a file that is not Python, in the words of
    the flag (the library's loader says the same without it)."""
    from jaxgen.config import split_config_spec

    p = split_config_spec(spec)[0]
    if p.is_dir():
        raise UserError(
            f"--config {str(p)!r} is a directory; pass a config file, e.g. configs/charrnn.py:cpu"
        )
    if p.is_file() and p.suffix != ".py":
        raise UserError(
            f"--config {str(p)!r} is not a Python config file (.py with a get_config() "
            "function); see configs/ for the shipped ones"
        )


_CONFIG_FIELD = re.compile(r"(?<![\w./\\'\"-])config\.(?=[A-Za-z_])(?!(?:py|json)\b)")


def as_flags(message: str) -> str:
    """A library message as the CLI shows it: config fields named by their ConfigDict path
    (``config.train.lr``) become the flags that set them (``--config.train.lr``); ``--config.x``
    already written, ``myconfig.py``, ``jaxgen.config``, ``config.py`` and quoted paths such as
    ``'config.v2/run'`` are left alone."""
    return _CONFIG_FIELD.sub("--config.", message)


def check_workdir(workdir: str) -> None:
    """Refuse a ``--workdir`` that training could not create or write into (a file, a path under a
    file, a folder that is not writable) before any work starts, creating nothing."""
    if not workdir:
        raise UserError("--workdir is empty; pass a directory (it is created if missing)")
    p = Path(workdir)
    if p.exists() and not p.is_dir():
        raise UserError(
            f"--workdir {workdir!r} is a file, not a directory; pass a new or existing directory"
        )
    q = p
    while not os.path.lexists(q) and q != q.parent:  # the nearest part of the path that exists
        q = q.parent
    if not q.is_dir():
        what = "a file" if q.exists() else "a broken link"
        raise UserError(
            f"--workdir {workdir!r} cannot be created: {str(q)!r} is {what}, not a directory; "
            "pick another --workdir"
        )
    if not os.access(q, os.W_OK | os.X_OK):
        raise UserError(
            f"--workdir {workdir!r}: {str(q)!r} is not writable; pick a directory you can write to"
        )


def _train(args, rest):
    from jaxgen.config import load_with_overrides

    if args.help:
        args.parser.print_help()
        if args.config:
            check_config_path(args.config)
            print()
            print(config_help(load_with_overrides(args.config, rest), args.config))
        return 0
    for a in rest:  # a mistyped option (not --config.FIELD=VALUE): name the closest one
        close = difflib.get_close_matches(
            a.split("=", 1)[0], ["--config", "--workdir", "--quiet", "--help"], n=1
        )
        if a.startswith("-") and not a.startswith("--config.") and close:
            raise UserError(f"unrecognised argument {a!r}; did you mean {close[0]}?")
    missing = [f"--{k}" for k in ("config", "workdir") if getattr(args, k) is None]
    if missing:
        args.parser.error(f"the following arguments are required: {', '.join(missing)}")
    check_workdir(args.workdir)
    check_config_path(args.config)
    cfg = load_with_overrides(args.config, rest)
    kind = cfg.get("model_kind", None)
    if kind not in ("charrnn", "gan", "stackgan", "pix2pix", "cyclegan"):
        raise UserError(
            f"config {args.config!r} has model_kind={kind!r}; jaxgen trains 'charrnn', 'gan', "
            "'stackgan', 'pix2pix' and 'cyclegan'"
        )
    if kind == "charrnn":
        from jaxgen.charrnn.config import validate_config
    elif kind == "stackgan":
        from jaxgen.gan.stackgan_train import validate_config
    elif kind in ("pix2pix", "cyclegan"):
        from jaxgen.gan.translation_train import validate_config
    else:
        from jaxgen.gan.config import validate_config
    validate_config(cfg)  # every check that needs no data, before any work
    if "parallel" in cfg and cfg.parallel.distributed:
        from jaxgen.training.parallel import maybe_initialize_distributed

        maybe_initialize_distributed(True)
    if kind == "charrnn":
        from jaxgen import charrnn

        summary = charrnn.train.train(cfg, args.workdir, quiet=args.quiet, stop=args.stop)
        if summary["stopped"] == "interrupted":
            return 130
        if summary["best_val_loss"] is not None:
            print(
                f"done: best validation loss {summary['best_val_loss']:.4f} nats/char; "
                f"sample with `jaxgen sample --workdir {args.workdir}`"
            )
        return 0
    if kind == "stackgan":
        from jaxgen.gan import stackgan_train

        summary = stackgan_train.train(cfg, args.workdir, quiet=args.quiet, stop=args.stop)
        if summary["stopped"] == "interrupted":
            return 130
        print(
            f"done: {summary['steps']} steps at {summary['images_per_s']:,.0f} images/s; grids in "
            f"{args.workdir}/samples, sample with `jaxgen sample --workdir {args.workdir} "
            '--text "a bold seven leaning right" --grid out.png`'
        )
        return 0
    if kind in ("pix2pix", "cyclegan"):
        from jaxgen.gan import translation_train

        summary = translation_train.train(cfg, args.workdir, quiet=args.quiet, stop=args.stop)
        if summary["stopped"] == "interrupted":
            return 130
        print(
            f"done: {summary['steps']} steps at {summary['images_per_s']:,.0f} images/s; grids in "
            f"{args.workdir}/samples, translate with `jaxgen translate --workdir {args.workdir} "
            "--input IN.png|IN.npy|DIR --out OUT.npy|DIR`"
        )
        return 0
    if kind == "gan":
        from jaxgen import gan

        summary = gan.train.train(cfg, args.workdir, quiet=args.quiet, stop=args.stop)
        if summary["stopped"] == "interrupted":
            return 130
        best = (
            f"; best Frechet distance {summary['best_fid']:.2f}"
            if summary["best_fid"] is not None
            else ""
        )
        print(
            f"done: {summary['steps']} steps at {summary['images_per_s']:,.0f} images/s{best}; "
            f"grids in {args.workdir}/samples, sample with "
            f"`jaxgen sample --workdir {args.workdir} --num 64 --grid out.png`"
        )
        return 0
    raise AssertionError(kind)


def check_out_path(flag: str, path: str, suffixes: tuple[str, ...] = ()) -> None:
    """Refuse an output file that could not be written (missing or non-folder parent, a folder, an
    unknown image suffix) before the work that produces it."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {path!r} is a directory; name a file")
    if not p.parent.is_dir():
        raise UserError(
            f"{flag} {path!r}: the folder {str(p.parent)!r} does not exist; create it first"
        )
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path!r}: the folder {str(p.parent)!r} is not writable")
    if suffixes and p.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {path!r} needs an image suffix: {', '.join(suffixes)}")


def check_sample_flags(args) -> None:
    """The sampling flags' ranges, checked before anything is loaded."""
    if not (args.temperature >= 0 and math.isfinite(args.temperature)):
        raise UserError(
            f"--temperature must be >= 0 (0: greedy, always the most likely character), "
            f"got {args.temperature}"
        )
    if args.top_k < 0:
        raise UserError(f"--top_k must be >= 0 (0: no top-k filter), got {args.top_k}")
    if not 0 < args.top_p <= 1:
        raise UserError(f"--top_p must be in (0, 1] (1: no nucleus filter), got {args.top_p}")
    if args.length <= 0:
        raise UserError(f"--length must be a positive number of characters, got {args.length}")
    if args.num is not None and args.num <= 0:
        raise UserError(f"--num must be a positive integer, got {args.num}")
    if args.out:
        check_out_path("--out", args.out)
    if args.grid:
        check_out_path(
            "--grid", args.grid, (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
        )


def _sample(args, rest):
    if rest:
        raise UserError(f"unrecognised arguments for sample: {' '.join(rest)}")
    check_sample_flags(args)
    from jaxgen.training.checkpoint import read_meta

    meta = read_meta(args.workdir)
    if meta is None:
        raise UserError(
            f"{args.workdir!r} holds no trained model (no jaxgen.json); "
            "train one with `jaxgen train`"
        )
    if meta.get("model") == "stackgan":
        return _sample_from_text(args, meta)
    if args.text:
        raise UserError(
            f"--text is for text-to-image (StackGAN) workdirs; {args.workdir!r} holds a "
            f"{meta.get('model')!r} model (train one with configs/stackgan_mnist.py)"
        )
    if meta.get("model") == "gan":
        return _sample_images(args, meta)
    if args.out or args.grid or args.num is not None or args.label:
        raise UserError(
            "--num/--out/--grid/--label are for GAN workdirs; this workdir holds a char-RNN "
            "(use --length)"
        )
    if "vocab" in meta:  # the prime and top_k against the vocabulary, before the model is loaded
        from jaxgen.charrnn.data import Vocab

        vocab = Vocab.from_json(meta["vocab"])
        vocab.encode(args.prime)
        if args.top_k > len(vocab):
            raise UserError(
                f"--top_k must be between 0 (off) and the vocabulary size {len(vocab)}, "
                f"got {args.top_k}"
            )
    from jaxgen import charrnn
    from jaxgen.charrnn.sample import sample_text

    params, vocab, _ = charrnn.sample.load_for_sampling(args.workdir, which=args.checkpoint)
    text = sample_text(
        params,
        vocab,
        prime=args.prime,
        length=args.length,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))
    return 0


def parse_labels(text: str, meta: dict) -> list[int] | None:
    """``--label``: ``''`` (none), one class ``7`` or a cycle ``0,1,2``, checked against the
    workdir's classes before the model is loaded."""
    if not text:
        return None
    try:
        labels = [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(
            f"--label takes a class number or a comma-separated list (7 or 0,1,2), got {text!r}"
        ) from None
    k = int(((meta.get("config") or {}).get("model") or {}).get("num_classes", 0))
    if k == 0:
        raise UserError(
            "this workdir holds an unconditional GAN, which cannot be asked for a class; train a "
            "class-conditional one (configs/cdcgan_mnist.py) to use --label"
        )
    bad = [y for y in labels if not 0 <= y < k]
    if bad:
        raise UserError(
            f"--label {bad[0]} is not a class of this GAN; its classes are 0 ... {k - 1}"
        )
    return labels


def _sample_images(args, meta):
    import jax
    import numpy as np

    from jaxgen.gan import sampling
    from jaxgen.training.io import write_atomic

    if not (args.out or args.grid):
        raise UserError(
            "say where the images go: --out FILE.npy (float32 [N, H, W, C] in [-1, 1]) and/or "
            "--grid FILE.png"
        )
    num = 64 if args.num is None else args.num
    asked = parse_labels(args.label, meta)
    model, gp, gs, cfg = sampling.load_generator(args.workdir, which=args.checkpoint)
    labels = None if asked is None else np.resize(np.asarray(asked, np.int32), num)
    images = sampling.generate(
        model, gp, gs, jax.random.key(args.seed), num, dist=cfg.model.latent_dist, labels=labels
    )
    if args.out:
        out = Path(args.out)
        write_atomic(out, lambda f: np.save(f, images))
        print(f"wrote {out}: {images.shape} float32 in [-1, 1]")
    if args.grid:
        from jaxgen.plots import save_grid

        ncol = model.num_classes if model.num_classes and asked is None else None
        save_grid(images[:256], args.grid, ncol=ncol)
        print(f"wrote {args.grid}: a grid of {min(num, 256)} samples")
    return 0


def _project(args, rest):
    """`jaxgen project`: the generator's nearest images to a picture or a sketch (iGAN)."""
    if rest:
        raise UserError(f"unrecognised arguments for project: {' '.join(rest)}")
    for flag, v in (("--num", args.num), ("--restarts", args.restarts), ("--steps", args.steps)):
        if v <= 0:
            raise UserError(f"{flag} must be a positive integer, got {v}")
    if args.num > args.restarts:
        raise UserError(f"--num ({args.num}) cannot exceed --restarts ({args.restarts})")
    if args.encoder_steps < 0:
        raise UserError(f"--encoder_steps must be >= 0 (0: no encoder), got {args.encoder_steps}")
    if args.to and args.steps < 2:
        raise UserError(f"an interpolation (--to) needs --steps >= 2, got {args.steps}")
    if not (args.out or args.grid):
        raise UserError("say where the images go: --out FILE.npy and/or --grid FILE.png")
    if args.out:
        check_out_path("--out", args.out)
    if args.grid:
        check_out_path("--grid", args.grid, (".png",))
    from jaxgen.training.checkpoint import read_meta

    meta = read_meta(args.workdir)
    if meta is None or meta.get("model") != "gan":
        raise UserError(
            f"{args.workdir!r} holds no trained GAN; train one with `jaxgen train --config "
            "configs/dcgan_mnist.py` (projection needs a generator)"
        )
    if meta["config"]["model"]["arch"] != "dcgan":
        raise UserError("projection is for DCGAN workdirs (the FC GAN's images are not projected)")
    labels = parse_labels(args.label, meta) if args.label else None
    if meta["config"]["model"].get("num_classes", 0) and labels is None:
        raise UserError("this GAN is class-conditional: say which class with --label K")
    shape = tuple(meta["image_shape"])
    import jax
    import numpy as np

    from jaxgen.gan import models, project, sampling
    from jaxgen.training.io import write_atomic

    x = project.read_image(args.image, shape)
    mask = (
        None if not args.mask else (project.read_image(args.mask, shape[:2] + (1,), "--mask") > -1)
    )
    other = project.read_image(args.to, shape, "--to") if args.to else None
    model, gp, gs, cfg = sampling.load_generator(args.workdir, which=args.checkpoint)
    enc = None  # --encoder_steps 0: random restarts only
    if args.encoder_steps:
        enc = project.cached_encoder(
            args.workdir, model, gp, gs, steps=args.encoder_steps, dist=cfg.model.latent_dist
        )
    pad = lambda a: np.asarray(models.pad(model, np.asarray(a, np.float32)[None]))[0]
    if mask is not None:  # padding is never drawn
        mask = np.asarray(models.pad(model, mask[None].astype(np.float32) * 2 - 1))[0] > 0
    label = None if labels is None else labels[0]
    run = lambda target, m, key: project.project(
        model, gp, gs, pad(target), key=key, mask=m, restarts=args.restarts, k=args.num,
        encoder=enc, label=label, dist=cfg.model.latent_dist,
    )  # fmt: skip
    best = run(x, mask, jax.random.key(args.seed))
    images = np.asarray(models.crop(model, best.images))
    print(f"projected {args.image}: best losses {np.round(np.asarray(best.loss), 4).tolist()}")
    if other is not None:
        far = run(other, None, jax.random.key(args.seed + 1))
        walk = project.interpolate(model, gp, gs, best.z[0], far.z[0], args.steps, label=label)
        images = np.asarray(models.crop(model, walk))
        print(f"interpolated to {args.to} in {args.steps} steps")
    if args.out:
        write_atomic(Path(args.out), lambda f: np.save(f, images.astype(np.float32)))
        print(f"wrote {args.out}: {images.shape} float32 in [-1, 1]")
    if args.grid:
        from jaxgen.plots import save_grid

        save_grid(np.concatenate([x[None], images]), args.grid, ncol=len(images) + 1)
        print(f"wrote {args.grid}: the input, then the {len(images)} images")
    return 0


def read_inputs(path: str) -> tuple:
    """``jaxgen translate --input``: a PNG (one image), a ``.npy`` (``[N, H, W, C]`` or one
    ``[H, W, C]``, float32 in [-1, 1]) or a folder of images; returns ``(images, names)``."""
    from jaxgen.data import pairs

    p = Path(path)
    if p.is_dir():
        files = pairs.images_in(p)
        if not files:
            raise UserError(
                f"--input {path!r} holds no images ({', '.join(pairs.IMAGE_SUFFIXES)}); give a "
                "folder of images, a PNG or a .npy"
            )
        return pairs.stack_images([pairs.read_image(f) for f in files], files, None, "input"), [
            f.stem for f in files
        ]
    if not p.is_file():
        raise UserError(f"--input {path!r} does not exist; give a PNG, a .npy or a folder")
    if p.suffix.lower() == ".npy":
        from jaxgen.data.images import load_npy

        x = load_npy(p).images
        return x, [f"{i:06d}" for i in range(len(x))]
    if p.suffix.lower() in pairs.IMAGE_SUFFIXES:
        return pairs.read_image(p)[None], [p.stem]
    raise UserError(
        f"--input {path!r} is neither an image ({', '.join(pairs.IMAGE_SUFFIXES)}) nor a .npy"
    )


def _translate(args, rest):
    """`jaxgen translate`: images of one domain through a trained Pix2Pix or CycleGAN."""
    if rest:
        raise UserError(f"unrecognised arguments for translate: {' '.join(rest)}")
    out = Path(args.out)
    to_dir = out.suffix.lower() != ".npy"
    if to_dir and out.exists() and not out.is_dir():
        raise UserError(f"--out {args.out!r} is a file; name a .npy file or a folder")
    if not to_dir:
        check_out_path("--out", args.out)
    elif not out.parent.is_dir():
        raise UserError(f"--out {args.out!r}: the folder {str(out.parent)!r} does not exist")
    if args.grid:
        check_out_path("--grid", args.grid, (".png",))
    if args.direction not in ("a2b", "b2a"):
        raise UserError(f"--direction must be a2b or b2a, got {args.direction!r}")
    from jaxgen.gan import translation_train as tt

    x, names = read_inputs(args.input)
    model = tt.load(args.workdir, which=args.checkpoint)
    y = tt.translate(model, x, args.direction, seed=args.seed)
    import numpy as np

    from jaxgen.training.io import write_atomic

    if to_dir:
        from jaxgen import plots

        out.mkdir(exist_ok=True)
        for im, name in zip(y, names):
            plots.save_grid(im[None], out / f"{name}.png", ncol=1, scale=1, pad=0)
        print(f"wrote {len(y)} images to {out}/")
    else:
        write_atomic(out, lambda f: np.save(f, y))
        print(f"wrote {out}: {y.shape} float32 in [-1, 1]")
    if args.grid:
        from jaxgen import plots

        k = min(len(x), 16)
        c = max(x.shape[-1], y.shape[-1])
        rows = [np.repeat(z[:k], c // z.shape[-1], axis=-1) for z in (x, y)]
        plots.save_grid(np.concatenate(rows), args.grid, ncol=k)
        print(f"wrote {args.grid}: inputs above, translations below ({k})")
    return 0


def _eval(args, rest):
    if rest:
        raise UserError(f"unrecognised arguments for eval: {' '.join(rest)}")
    if args.num <= 0:
        raise UserError(f"--num must be a positive integer, got {args.num}")
    if args.out:
        check_out_path("--out", args.out)
    from jaxgen.gan.evaluate import run_eval

    run_eval(
        workdir=args.workdir,
        samples=args.samples,
        data_path=args.data_path,
        data_source=args.data_source,
        num=args.num,
        cache_dir=args.cache,
        out=args.out,
        seed=args.seed,
        checkpoint=args.checkpoint,
    )
    return 0


def _analyze(args, rest):
    if rest:
        raise UserError(f"unrecognised arguments for analyze: {' '.join(rest)}")
    from jaxgen import analysis

    if args.what == "gradient-decay":
        if args.cells or args.lags or args.max_steps or args.lr or args.name:
            raise UserError(
                "--cells, --lags, --max_steps, --lr and --name are options of memory-span only"
            )
        analysis.run_gradient_decay(args.out, quick=args.quick)
        return 0
    from jaxgen.analysis import runners

    kw = {}
    if args.cells:
        kw["cells"] = tuple(c.strip() for c in args.cells.split(",") if c.strip())
        known = runners.memory_cells(3)
        bad = [c for c in kw["cells"] if c not in known]
        if bad:
            raise UserError(f"--cells: unknown {', '.join(bad)}; choose from {', '.join(known)}")
    if args.lags:
        try:
            kw["lags"] = tuple(int(x) for x in args.lags.split(","))
        except ValueError:
            raise UserError(f"--lags expects comma-separated integers, got {args.lags!r}") from None
        if min(kw["lags"]) < 1:
            raise UserError("--lags must be positive")
    if args.max_steps < 0:
        raise UserError("--max_steps must be positive (0: the default)")
    if args.lr < 0 or not math.isfinite(args.lr):
        raise UserError(f"--lr must be a positive learning rate (0: the default), got {args.lr}")
    if args.lr:
        kw["learning_rate"] = args.lr
    if args.name:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name):
            raise UserError(
                f"--name is a file stem (letters, digits, '_', '.', '-'), got {args.name!r}"
            )
        kw["stem"] = args.name
    analysis.run_memory_span(args.out, quick=args.quick, max_steps=args.max_steps or None, **kw)
    return 0


def _bench(args, rest):
    import runpy

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    names = args.names or ["rnn_step", "scan_vs_unroll", "kernels"]
    for name in names:
        script = root / f"{name}.py"
        if not script.exists():
            raise UserError(
                f"no benchmark {name!r} in {root}; "
                "run from a source checkout (benchmarks/ is not installed)"
            )
        sys.argv = [str(script), "--out", args.out] + (["--quick"] if args.quick else []) + rest
        print(f"== benchmark {name}", flush=True)
        runpy.run_path(str(script), run_name="__main__")
    return 0


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after each option's help, except where there is nothing to show (no default,
    an empty string, an off switch): those helps say what the absence means."""

    def _get_help_string(self, action):
        if (
            action.default is None
            or action.default is False
            or action.default == ""
            or action.required
        ):
            return action.help
        return super()._get_help_string(action)


def _sample_from_text(args, meta):
    """`jaxgen sample --text`: a text-to-image workdir's digits for a caption."""
    import jax
    import numpy as np

    from jaxgen.training.io import write_atomic

    if args.label:
        raise UserError("--label is for class-conditional GANs; a StackGAN takes --text")
    if not args.text:
        raise UserError(
            "this workdir holds a text-to-image StackGAN: describe the digit with --text, e.g. "
            '--text "a bold seven leaning right"'
        )
    if not (args.out or args.grid):
        raise UserError(
            "say where the images go: --out FILE.npy (float32 [N, 28, 28, 1] in [-1, 1]) and/or "
            "--grid FILE.png"
        )
    from jaxgen.gan import stackgan, text

    vocab = text.WordVocab(meta["vocab"])
    max_len = int(meta["config"]["text"]["max_words"])
    vocab.encode([args.text], max_len=max_len)  # a word it never saw: refused before loading
    num = 64 if args.num is None else args.num
    from jaxgen.gan import stackgan_train

    spec, params, stats, vocab, _ = stackgan_train.load(args.workdir, which=args.checkpoint)
    _, images = stackgan.sample_text(
        spec, params, stats, vocab, [args.text] * num, jax.random.key(args.seed),
        max_len=max_len, chunk=min(num, 500),
    )  # fmt: skip
    if args.out:
        write_atomic(Path(args.out), lambda f: np.save(f, images))
        print(f"wrote {args.out}: {images.shape} float32 in [-1, 1]")
    if args.grid:
        from jaxgen.plots import save_grid

        save_grid(images[:256], args.grid)
        print(f"wrote {args.grid}: a grid of {min(num, 256)} samples of {args.text!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxgen", description="Recurrent networks and GANs in JAX.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train (or resume) a model; --config.FIELD=VALUE overrides config fields",
        usage="jaxgen train --config FILE[:VARIANT] --workdir DIR [--quiet] "
        "[--config.FIELD=VALUE ...]",
        description="Train (or resume) the model a config file describes.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    t.add_argument(
        "-h",
        "--help",
        action="store_true",
        help="show this help; with --config FILE, also list the config's fields and what they mean",
    )
    t.add_argument(
        "--config",
        help="config file, with an optional variant after ':', "
        "e.g. configs/charrnn.py:cpu (required)",
    )
    t.add_argument(
        "--workdir", help="where checkpoints, metrics and samples go; resumes if present (required)"
    )
    t.add_argument("--quiet", action="store_true", help="no progress line")
    t.set_defaults(fn=_train, parser=t)

    defaults = _DefaultsFormatter
    s = sub.add_parser(
        "sample",
        help="generate text from a char-RNN (to stdout) or images from a GAN (--out/--grid)",
        formatter_class=defaults,
    )
    s.add_argument("--workdir", required=True, help="a trained workdir (from `jaxgen train`)")
    s.add_argument(
        "--prime", default="", help="text to start from ('': start after a newline, not shown)"
    )
    s.add_argument("--length", type=int, default=500, help="characters to generate")
    s.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="divides the logits: < 1 safer, > 1 wilder; 0: greedy (always the most likely)",
    )
    s.add_argument("--top_k", type=int, default=0, help="sample from the k most likely (0: all)")
    s.add_argument(
        "--top_p", type=float, default=1.0, help="nucleus sampling mass, in (0, 1] (1: all)"
    )
    s.add_argument(
        "--seed", type=int, default=0, help="PRNG seed: the same seed gives the same output"
    )
    s.add_argument(
        "--checkpoint",
        choices=("best", "latest"),
        default="best",
        help="which checkpoint (best falls back to latest)",
    )
    s.add_argument("--num", type=int, default=None, help="GAN: images to generate (default 64)")
    s.add_argument(
        "--label",
        default="",
        help="class-conditional GAN: the class to draw (7), or classes in turn (0,1,2); "
        "'': every class equally often",
    )
    s.add_argument(
        "--text",
        default="",
        help='text-to-image StackGAN: what to draw, e.g. "a bold seven leaning right"',
    )
    s.add_argument(
        "--out",
        default="",
        help="GAN: write the images as float32 [N, H, W, C] in [-1, 1] to FILE.npy",
    )
    s.add_argument(
        "--grid", default="", help="GAN: write a grid of (up to 256 of) the images to FILE.png"
    )
    s.set_defaults(fn=_sample)

    j = sub.add_parser(
        "project",
        help="GAN: the generator's nearest images to a picture or a sketch (iGAN)",
        formatter_class=defaults,
    )
    j.add_argument("--workdir", required=True, help="a trained DCGAN workdir")
    j.add_argument("--image", required=True, help="the picture or sketch: PNG, or .npy [H, W, C]")
    j.add_argument(
        "--mask", default="", help="PNG/.npy [H, W, 1]: bright where the sketch is drawn"
    )
    j.add_argument("--num", type=int, default=4, help="how many of the best projections to keep")
    j.add_argument("--restarts", type=int, default=32, help="latents optimised at once")
    j.add_argument("--label", default="", help="class-conditional GAN: the class to project onto")
    j.add_argument("--to", default="", help="a second image: interpolate from --image to it")
    j.add_argument("--steps", type=int, default=8, help="images along the interpolation (--to)")
    j.add_argument(
        "--encoder_steps",
        type=int,
        default=2000,
        help="training of the encoder (0: none, random restarts only)",
    )
    j.add_argument("--out", default="", help="the images as float32 [N, H, W, C] .npy")
    j.add_argument("--grid", default="", help="a PNG of the input then the images")
    j.add_argument("--seed", type=int, default=0, help="PRNG seed of the random restarts")
    j.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    j.set_defaults(fn=_project)

    r = sub.add_parser(
        "translate",
        help="image-to-image: images through a trained Pix2Pix or CycleGAN",
        formatter_class=defaults,
    )
    r.add_argument("--workdir", required=True, help="a trained pix2pix or cyclegan workdir")
    r.add_argument(
        "--input",
        required=True,
        help="a PNG, a .npy of float32 [N, H, W, C] in [-1, 1], or a folder of images",
    )
    r.add_argument(
        "--out",
        required=True,
        help="FILE.npy (float32 [N, H, W, C] in [-1, 1]) or a folder (a PNG per input)",
    )
    r.add_argument(
        "--direction", default="a2b", help="a2b, or b2a (CycleGAN only): which way to translate"
    )
    r.add_argument("--grid", default="", help="also a PNG: inputs above, translations below")
    r.add_argument("--seed", type=int, default=0, help="Pix2Pix: the dropout draw (its noise)")
    r.add_argument(
        "--checkpoint",
        choices=("best", "latest"),
        default="best",
        help="which checkpoint (best falls back to latest)",
    )
    r.set_defaults(fn=_translate)

    e = sub.add_parser(
        "eval",
        help="GAN sample quality: Frechet distance, classifier score, classes covered",
        formatter_class=defaults,
    )
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a trained GAN workdir (samples --num images from it)")
    src.add_argument(
        "--samples",
        help="a .npy of images [N, H, W, C] in [-1, 1] (e.g. from `jaxgen sample --out`)",
    )
    e.add_argument(
        "--data_path", default="", help="real images (IDX folder); '': the workdir's own data"
    )
    e.add_argument(
        "--data_source",
        default="",
        help="real images: 'builtin' or 'tfds:NAME' ('': the workdir's)",
    )
    e.add_argument("--num", type=int, default=10000, help="images to sample from a workdir")
    e.add_argument(
        "--cache",
        default="~/.cache/jaxgen/classifiers",
        help="where evaluation classifiers are cached",
    )
    e.add_argument("--out", default="", help="also write the numbers as JSON here")
    e.add_argument(
        "--seed", type=int, default=0, help="PRNG seed for the samples and the real subset"
    )
    e.add_argument(
        "--checkpoint",
        choices=("best", "latest"),
        default="best",
        help="which checkpoint of --workdir (best falls back to latest)",
    )
    e.set_defaults(fn=_eval)

    a = sub.add_parser("analyze", help="vanishing-gradient and memory-span analyses")
    a.add_argument("what", choices=("gradient-decay", "memory-span"))
    a.add_argument("--out", default="benchmarks/results")
    a.add_argument("--quick", action="store_true")
    a.add_argument(
        "--cells",
        default="",
        help="memory-span: comma-separated cells, the forget-gate initialisation as the factor "
        "(rnn, lstm, lstm-b3, lstm-b5, lstm-chrono, gru, gru-chrono, mingru, minlstm, lru; "
        "empty: rnn, lstm, lstm-b3, lstm-chrono, gru, gru-chrono)",
    )
    a.add_argument(
        "--lags", default="", help="memory-span: comma-separated lags (empty: 5 ... 1000)"
    )
    a.add_argument(
        "--max_steps", type=int, default=0, help="memory-span: steps a run may take (0: 2000)"
    )
    a.add_argument(
        "--lr", type=float, default=0.0, help="memory-span: Adam's learning rate (0: 3e-3)"
    )
    a.add_argument(
        "--name",
        default="",
        help="memory-span: stem of the result files in --out (empty: memory_span)",
    )
    a.set_defaults(fn=_analyze)

    b = sub.add_parser("bench", help="run the benchmark suite (from a source checkout)")
    b.add_argument(
        "names", nargs="*", help="benchmarks to run (default: rnn_step scan_vs_unroll kernels)"
    )
    b.add_argument("--out", default="benchmarks/results")
    b.add_argument("--quick", action="store_true", help="a couple of minutes in all")
    b.set_defaults(fn=_bench)
    return p


def main(argv=None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    args.stop = None
    if args.fn is _train:
        # Ctrl-C and SIGTERM only set a flag from here on: the trainer saves after the current step.
        # Installed before the heavy imports, so no KeyboardInterrupt lands inside JAX or XLA (an
        # exception raised in a callback from XLA is lost or crashes the process).
        from jaxgen.training.preemption import StopOnSignal

        with StopOnSignal() as args.stop:
            return _run_command(args, rest)
    return _run_command(args, rest)


def _run_command(args, rest) -> int:
    try:
        return args.fn(args, rest)
    except UserError as e:
        print(f"jaxgen: error: {as_flags(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
