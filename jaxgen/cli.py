"""``jaxgen train | sample | eval | bench | analyze``: a thin layer that turns flags into calls."""

from __future__ import annotations

import argparse
import sys

from jaxgen.errors import UserError


def _train(args, rest):
    from jaxgen.config import load_with_overrides

    cfg = load_with_overrides(args.config, rest)
    kind = cfg.get("model_kind", None)
    if "parallel" in cfg and cfg.parallel.distributed:
        from jaxgen.train.parallel import maybe_initialize_distributed

        maybe_initialize_distributed(True)
    if kind == "charrnn":
        from jaxgen.train import charrnn

        summary = charrnn.train(cfg, args.workdir, quiet=args.quiet)
        if summary["best_val_loss"] is not None:
            print(f"done: best validation loss {summary['best_val_loss']:.4f} nats/char; "
                  f"sample with `jaxgen sample --workdir {args.workdir}`")
        return 0
    if kind == "gan":
        from jaxgen.train import gan

        summary = gan.train(cfg, args.workdir, quiet=args.quiet)
        best = f"; best Frechet distance {summary['best_fid']:.2f}" if summary["best_fid"] is not None else ""
        print(f"done: {summary['steps']} steps at {summary['images_per_s']:,.0f} images/s{best}; grids in "
              f"{args.workdir}/samples, sample with `jaxgen sample --workdir {args.workdir} --num 64 --grid out.png`")
        return 0
    raise UserError(f"config {args.config!r} has model_kind={kind!r}; jaxgen trains 'charrnn' and 'gan'")


def _sample(args, rest):
    if rest:
        raise UserError(f"unrecognised arguments for sample: {' '.join(rest)}")
    from jaxgen.train.checkpoint import read_meta

    meta = read_meta(args.workdir)
    if meta is None:
        raise UserError(f"{args.workdir!r} holds no trained model (no jaxgen.json); train one with `jaxgen train`")
    if meta.get("model") == "gan":
        return _sample_images(args)
    if args.out or args.grid or args.num is not None:
        raise UserError("--num/--out/--grid are for GAN workdirs; this workdir holds a char-RNN (use --length)")
    from jaxgen.sample import sample_text
    from jaxgen.train import charrnn

    params, vocab, _ = charrnn.load_for_sampling(args.workdir, which=args.checkpoint)
    text = sample_text(params, vocab, prime=args.prime, length=args.length, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))
    return 0


def _sample_images(args):
    import jax
    import numpy as np

    from jaxgen.train import gan

    if not (args.out or args.grid):
        raise UserError("say where the images go: --out FILE.npy (float32 [N, H, W, C] in [-1, 1]) and/or "
                        "--grid FILE.png")
    num = 64 if args.num is None else args.num
    if num <= 0:
        raise UserError(f"--num must be a positive integer, got {num}")
    model, gp, gs, cfg = gan.load_generator(args.workdir, which=args.checkpoint)
    images = gan.generate(model, gp, gs, jax.random.key(args.seed), num, dist=cfg.model.latent_dist)
    if args.out:
        from pathlib import Path

        out = Path(args.out)
        tmp = out.with_name(out.stem + ".tmp.npy")
        np.save(tmp, images)
        tmp.replace(out)
        print(f"wrote {out}: {images.shape} float32 in [-1, 1]")
    if args.grid:
        from jaxgen.plots import save_grid

        save_grid(images[:256], args.grid)
        print(f"wrote {args.grid}: a grid of {min(num, 256)} samples")
    return 0


def _eval(args, rest):
    if rest:
        raise UserError(f"unrecognised arguments for eval: {' '.join(rest)}")
    from jaxgen.evaluate import run_eval

    run_eval(workdir=args.workdir, samples=args.samples, data_path=args.data_path, data_source=args.data_source,
             num=args.num, cache_dir=args.cache, out=args.out, seed=args.seed, checkpoint=args.checkpoint)
    return 0


def _analyze(args, rest):
    if rest:
        raise UserError(f"unrecognised arguments for analyze: {' '.join(rest)}")
    from jaxgen import analysis

    fn = {"gradient-decay": analysis.run_gradient_decay, "memory-span": analysis.run_memory_span}[args.what]
    fn(args.out, quick=args.quick)
    return 0


def _bench(args, rest):
    import runpy
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    names = args.names or ["rnn_step", "scan_vs_unroll", "kernels"]
    for name in names:
        script = root / f"{name}.py"
        if not script.exists():
            raise UserError(f"no benchmark {name!r} in {root}; run from a source checkout (benchmarks/ is not installed)")
        sys.argv = [str(script), "--out", args.out] + (["--quick"] if args.quick else []) + rest
        print(f"== benchmark {name}", flush=True)
        runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxgen", description="Recurrent networks and GANs in JAX.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (or resume) a model; --config.FIELD=VALUE overrides config fields")
    t.add_argument("--config", required=True, help="config file, e.g. configs/charrnn_cpu.py")
    t.add_argument("--workdir", required=True, help="where checkpoints, metrics and samples go; resumes if present")
    t.add_argument("--quiet", action="store_true", help="no progress line")
    t.set_defaults(fn=_train)

    s = sub.add_parser("sample", help="generate text from a char-RNN (to stdout) or images from a GAN (--out/--grid)")
    s.add_argument("--workdir", required=True)
    s.add_argument("--prime", default="", help="text to start from (default: a newline)")
    s.add_argument("--length", type=int, default=500, help="characters to generate")
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top_k", type=int, default=0, help="sample from the k most likely (0: all)")
    s.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling mass (1: all)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    s.add_argument("--num", type=int, default=None, help="GAN: images to generate (default 64)")
    s.add_argument("--out", default="", help="GAN: write the images as float32 [N, H, W, C] in [-1, 1] to FILE.npy")
    s.add_argument("--grid", default="", help="GAN: write a grid of (up to 256 of) the images to FILE.png")
    s.set_defaults(fn=_sample)

    e = sub.add_parser("eval", help="GAN sample quality: Frechet distance, classifier score, classes covered")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a trained GAN workdir (samples --num images from it)")
    src.add_argument("--samples", help="a .npy of images [N, H, W, C] in [-1, 1] (e.g. from `jaxgen sample --out`)")
    e.add_argument("--data_path", default="", help="real images (IDX folder); default: the workdir's own data")
    e.add_argument("--data_source", default="", help="real images: 'builtin' or 'tfds:NAME' (default: the workdir's)")
    e.add_argument("--num", type=int, default=10000, help="images to sample from a workdir")
    e.add_argument("--cache", default="~/.cache/jaxgen/classifiers", help="where evaluation classifiers are cached")
    e.add_argument("--out", default="", help="also write the numbers as JSON here")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    e.set_defaults(fn=_eval)

    a = sub.add_parser("analyze", help="vanishing-gradient and memory-span analyses")
    a.add_argument("what", choices=("gradient-decay", "memory-span"))
    a.add_argument("--out", default="benchmarks/results")
    a.add_argument("--quick", action="store_true")
    a.set_defaults(fn=_analyze)

    b = sub.add_parser("bench", help="run the benchmark suite (from a source checkout)")
    b.add_argument("names", nargs="*", help="benchmarks to run (default: rnn_step scan_vs_unroll kernels)")
    b.add_argument("--out", default="benchmarks/results")
    b.add_argument("--quick", action="store_true", help="a couple of minutes in all")
    b.set_defaults(fn=_bench)
    return p


def main(argv=None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    try:
        return args.fn(args, rest)
    except UserError as e:
        print(f"jaxgen: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxgen: interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
