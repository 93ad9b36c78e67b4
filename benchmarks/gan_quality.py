"""GAN quality and speed on the 10,000 real MNIST images (CPU), side by side with PyTorch.

    python benchmarks/gan_quality.py                      # both GANs, 15 minutes each, then speed
    python benchmarks/gan_quality.py --budget 120 --only fc   # a quick look
    python benchmarks/gan_quality.py --speed-only         # just the train-step throughput table

For each default recipe (configs/gan_mnist.py, configs/dcgan_mnist.py, and with --classic the
classic FC recipe configs/gan_mnist.py:classic) it trains for a fixed wall-clock budget on
``--data`` (MNIST IDX files), keeping the checkpoint with the best Frechet distance, then evaluates
10,000 samples from it with `jaxgen eval` (classifier score, classes covered, Frechet distance beside
the real-vs-real and noise baselines) and saves the final grid.

Speed: images/s of one full train step (D update on real and fake, G update, two Adams) of each
architecture, jaxgen's jitted step against the same network and step in PyTorch
(``benchmarks/gan_torch_ref.py``; the column is left out, with a message, where torch is not
installed), with the XLA cost model's FLOP count of the step for achieved FLOP/s; then each DCGAN
convolution on its own (forward + input and weight gradients) beside PyTorch's module, to show
where the step's time goes. jaxgen and PyTorch never share a process (their thread pools fight and
PyTorch slows 30-80x): each round runs one jaxgen process and one PyTorch process, alternating which
goes first; each reports the median of ``--reps`` repetitions; over ``--rounds`` rounds the table
shows the median of each side and the median of the per-round ratios (never the best run).

    python benchmarks/gan_quality.py --speed-only --rounds 1 --reps 2   # quickest check of the speed part
    python benchmarks/gan_quality.py --only fc_classic --budget 100 --no-speed   # the classic FC probe
"""  # noqa: E501  (printed verbatim by --help: the long example lines stay as they are)

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gan_torch_ref as tref  # noqa: E402  (imports torch only inside its functions)

from jaxgen import benchmarking as bm  # noqa: E402
from jaxgen import gan  # noqa: E402
from jaxgen.config import load_config  # noqa: E402
from jaxgen.gan.evaluate import run_eval  # noqa: E402
from jaxgen.plots import save_grid  # noqa: E402

RECIPES = {
    "fc": "configs/gan_mnist.py",
    "dcgan": "configs/dcgan_mnist.py",
    "fc_classic": "configs/gan_mnist.py:classic",
}
TARGETS = {
    "fc": (0.03, 7.0),
    "dcgan": (0.05, 8.5),
    "fc_classic": (0.03, 7.0),
}  # min class fraction, classifier score


def train_then_eval(
    spec: str, data: str, budget: float, workdir: Path, cache: str, grid_png: Path
) -> tuple[dict, float, dict, dict | None]:
    """Train the config ``spec`` on ``data`` for ``budget`` seconds in a fresh ``workdir``, then
    evaluate 10,000 samples of its best checkpoint (`jaxgen eval`) and save a 10x10 grid of it.
    Returns the training summary, its wall seconds, the evaluation and the best metrics row."""
    cfg = load_config(ROOT / spec)
    cfg.data.path = data
    cfg.train.time_budget_s = float(budget)
    cfg.train.classifier_cache = cache
    if workdir.exists():
        shutil.rmtree(workdir)
    t0 = time.perf_counter()
    summary = gan.train.train(cfg, workdir, quiet=True)
    wall = time.perf_counter() - t0
    result = run_eval(workdir=str(workdir), num=10000, cache_dir=cache, checkpoint="best")
    model, gp, gs, cfg2 = gan.sampling.load_generator(workdir, which="best")
    grid = gan.sampling.generate(
        model, gp, gs, jax.random.key(123), 100, dist=cfg2.model.latent_dist
    )
    save_grid(grid, grid_png, ncol=10)
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    best = min((r for r in rows if "fid" in r), key=lambda r: r["fid"], default=None)
    return summary, wall, result, best


def quality(name: str, data: str, budget: float, workdir: Path, out: Path, cache: str) -> dict:
    summary, wall, result, best_row = train_then_eval(
        RECIPES[name], data, budget, workdir, cache, out / f"gan_quality_{name}_grid.png"
    )
    cfg = load_config(ROOT / RECIPES[name])
    for f, dst in (
        ("progress.png", f"gan_quality_{name}_progress.png"),
        ("losses.png", f"gan_quality_{name}_losses.png"),
    ):
        if (workdir / f).exists():
            shutil.copyfile(workdir / f, out / dst)
    g = result["generated"]
    min_frac, min_score = TARGETS[name]
    return {
        "recipe": RECIPES[name],
        "budget_s": budget,
        "train_wall_s": round(wall, 1),
        "steps": summary["steps"],
        "epochs": round(summary["steps"] / (10000 // cfg.train.batch), 1),
        "train_images_per_s": summary["images_per_s"],
        "best_step": best_row["step"] if best_row else None,
        "eval": result,
        "classifier_score": g["classifier_score"],
        "classes_covered": g["covered"],
        "min_class_fraction": float(min(g["fractions"])),
        "max_class_fraction": g["max_fraction"],
        "fd": g["fd"],
        "fd_real_vs_real": result["real"]["fd"],
        "fd_noise": result["noise"]["fd"],
        "meets_target": bool(
            min(g["fractions"]) >= min_frac and g["classifier_score"] >= min_score
        ),
        "target": {"min_class_fraction": min_frac, "classifier_score": min_score},
    }


def _jax_step(arch: str, batch: int):
    spec = {"cdcgan": "configs/cdcgan_mnist.py"}.get(arch) or RECIPES[arch]
    cfg = load_config(ROOT / spec)
    model = gan.models.build(cfg.model)
    tx_g, tx_d = gan.step.make_optimizers(cfg)
    state = gan.step.init_state(model, 0, tx_g, tx_d, ema=False)
    step = jax.jit(
        functools.partial(
            gan.step.train_step,
            model=model,
            tx_g=tx_g,
            tx_d=tx_d,
            latent_dist=cfg.model.latent_dist,
        ),
        donate_argnums=0,
    )
    real = jax.random.uniform(
        jax.random.key(0), (batch, model.size, model.size, model.channels), minval=-1, maxval=1
    )
    args = (real,)
    if model.num_classes:  # the class-conditional step also takes the real images' labels
        args += (jax.random.randint(jax.random.key(1), (batch,), 0, model.num_classes),)
    flops = bm.compiled_flops(step, state, *args)
    box = [state]

    def run(n):
        for _ in range(n):
            box[0], _ = step(box[0], *args)
        jax.block_until_ready(box[0])

    run(2)
    return run, flops


def _worker_step(arch: str, reps: int) -> dict:
    """This process times jaxgen's train step only (PyTorch's twin runs in another process)."""
    batch, n = tref.DEFAULT_BATCH[arch], tref.STEPS_PER_REP[arch]
    run, flops = _jax_step(arch, batch)
    samples = [
        s / n for s in bm.interleaved({"jaxgen": lambda: run(n)}, reps=reps, warmup=1)["jaxgen"]
    ]
    return {
        "arch": arch,
        "batch": batch,
        "s_per_step": float(np.median(samples)),
        "samples_s": samples,
        "flops_per_step": flops,
    }


def _worker_layers(reps: int, batch: int = 128) -> dict:
    """Forward + input and weight gradients of each DCGAN convolution, jaxgen only, ms per call."""
    import jax.numpy as jnp

    from jaxgen.nn import layers as nn

    rows = []
    n = tref.LAYER_CALLS_PER_REP
    for kind, size, c_in, c_out in tref.DCGAN_LAYERS:
        key_x, key_w = jax.random.split(jax.random.key(0))
        x = jax.random.normal(key_x, (batch, size, size, c_in))
        w = {"w": 0.02 * jax.random.normal(key_w, (4, 4, c_in, c_out))}
        if kind == "D conv":
            f = functools.partial(nn.conv, stride=2, padding=1)
        else:
            f = functools.partial(nn.conv_transpose, stride=2)
        grad = jax.jit(jax.grad(lambda w, x, f=f: jnp.sum(f(w, x) ** 2), argnums=(0, 1)))
        times = bm.interleaved(
            {"jaxgen": lambda grad=grad, w=w, x=x: [grad(w, x) for _ in range(n)][-1]},
            reps=reps,
            warmup=2,
        )
        samples = [t / n * 1e3 for t in times["jaxgen"]]
        rows.append(
            {
                "layer": [kind, size, c_in, c_out],
                "ms": float(np.median(samples)),
                "samples_ms": samples,
            }
        )
    return {"layers": rows}


def _have_torch() -> bool:
    """Whether torch is installed, without importing it into this (JAX) process."""
    return importlib.util.find_spec("torch") is not None


def _commands(jax_args: list[str], torch_args: list[str], reps: int) -> dict[str, list[str]]:
    cmds = {
        "jaxgen": [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            *jax_args,
            "--reps",
            str(reps),
        ]
    }
    if _have_torch():
        cmds["pytorch"] = [
            sys.executable,
            tref.__file__,
            *torch_args,
            "--reps",
            str(reps),
            "--threads",
            "2",
        ]
    else:
        print("torch is not installed: the PyTorch column is left out", flush=True)
    return cmds


def speed(reps: int, rounds: int, archs: tuple[str, ...] = ("fc", "dcgan")) -> dict:
    """Images/s of one train step, jaxgen and PyTorch each in its own process, alternating for
    ``rounds`` rounds; each process reports the median of ``reps`` repetitions; the ratio is the
    median over rounds of the per-round ratios."""
    out = {}
    for arch in archs:
        batch = tref.DEFAULT_BATCH[arch]
        runs = bm.interleaved_processes(
            _commands(["step", "--arch", arch], ["time-step", "--arch", arch], reps), rounds
        )
        j = [r["s_per_step"] for r in runs["jaxgen"]]
        flops = runs["jaxgen"][0]["flops_per_step"]
        row = {
            "batch": batch,
            "rounds": rounds,
            "reps_per_round": reps,
            "steps_per_rep": tref.STEPS_PER_REP[arch],
            "jaxgen_images_per_s": batch / float(np.median(j)),
            "jaxgen_images_per_s_rounds": [batch / t for t in j],
            "flops_per_step": flops,
            "jaxgen_gflops": flops / float(np.median(j)) / 1e9,
        }
        if "pytorch" in runs:
            t = [r["s_per_step"] for r in runs["pytorch"]]
            row["pytorch_images_per_s"] = batch / float(np.median(t))
            row["pytorch_images_per_s_rounds"] = [batch / x for x in t]
            row["speedup_vs_pytorch"] = bm.median_ratio(t, j)
            row["speedup_vs_pytorch_rounds"] = [a / b for a, b in zip(t, j)]
            row["torch_version"] = runs["pytorch"][0]["torch_version"]
            row["torch_threads"] = runs["pytorch"][0]["torch_threads"]
        out[arch] = row
        print(
            arch,
            {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()},
            flush=True,
        )
    return out


def layers(reps: int, rounds: int) -> list[dict]:
    """Forward + backward (input and weight gradients) of each DCGAN convolution on its own, jaxgen
    against PyTorch's module, each in its own process, alternating: where the step's time goes."""
    runs = bm.interleaved_processes(_commands(["layers"], ["time-layers"], reps), rounds)
    rows = []
    for i, (kind, size, c_in, c_out) in enumerate(tref.DCGAN_LAYERS):
        j = [r["layers"][i]["ms"] for r in runs["jaxgen"]]
        out_size = size // 2 if kind == "D conv" else size * 2
        row = {
            "layer": f"{kind} {size}x{size}x{c_in} -> {out_size}x{out_size}x{c_out}",
            "jaxgen_ms": float(np.median(j)),
            "jaxgen_ms_rounds": j,
        }
        if "pytorch" in runs:
            t = [r["layers"][i]["ms"] for r in runs["pytorch"]]
            row.update(
                pytorch_ms=float(np.median(t)),
                pytorch_ms_rounds=t,
                pytorch_over_jaxgen=bm.median_ratio(t, j),
            )
        rows.append(row)
        print(row, flush=True)
    return rows


def markdown(payload: dict) -> str:
    md = ""
    q = payload.get("quality", {})
    if q:
        md += (
            "### Sample quality (10,000 samples, best checkpoint by Frechet distance)\n\n"
            + bm.md_table(
                [
                    "recipe",
                    "budget",
                    "steps (epochs)",
                    "classifier score (max 10)",
                    "classes >= 1%",
                    "smallest / largest class",
                    "Frechet dist.",
                    "real vs real",
                    "noise",
                    "target met",
                ],
                [
                    [
                        r["recipe"],
                        f"{r['budget_s']:.0f} s",
                        f"{r['steps']:,} ({r['epochs']})",
                        f"{r['classifier_score']:.2f}",
                        f"{r['classes_covered']}/10",
                        f"{r['min_class_fraction']:.1%} / {r['max_class_fraction']:.1%}",
                        f"{r['fd']:.1f}",
                        f"{r['fd_real_vs_real']:.1f}",
                        f"{r['fd_noise']:.0f}",
                        "yes" if r["meets_target"] else "no",
                    ]
                    for r in q.values()
                ],
            )
            + "\n"
        )
        clf = {
            r["eval"]["classifier"]["holdout_accuracy"]
            for r in q.values()
            if "classifier" in r.get("eval", {})
        }
        for acc in sorted(clf):
            md += (
                f"Evaluation classifier (jaxgen's small CNN): {100 * acc:.2f}% held-out accuracy "
                "(`quality.*.eval.classifier.holdout_accuracy`).\n\n"
            )
    s = payload.get("speed", {})
    if s:
        hdr = ["GAN", "batch", "jaxgen img/s", "GFLOP/s"]
        torch_cols = any("pytorch_images_per_s" in r for r in s.values())
        if torch_cols:
            hdr += ["PyTorch img/s", "jaxgen / PyTorch", "per-round ratios"]
        rows = []
        for arch, r in s.items():
            row = [
                arch,
                r["batch"],
                f"{r['jaxgen_images_per_s']:,.0f}",
                f"{r['jaxgen_gflops']:.1f}",
            ]
            if torch_cols:
                row += [
                    f"{r.get('pytorch_images_per_s', float('nan')):,.0f}",
                    f"{r.get('speedup_vs_pytorch', float('nan')):.2f}x",
                    ", ".join(f"{x:.2f}" for x in r.get("speedup_vs_pytorch_rounds", [])),
                ]
            rows.append(row)
        first = next(iter(s.values()))
        md += (
            "### Train-step throughput (CPU)\n\n"
            + bm.md_table(hdr, rows)
            + (
                f"\njaxgen and PyTorch (torch {first.get('torch_version')}, "
                f"{first.get('torch_threads')} threads) each in its own process, "
                f"{first.get('rounds', '?')} alternating rounds of "
                f"{first.get('reps_per_round', '?')} repetitions; "
                "images/s: median of the per-round medians; "
                "ratio: median of the per-round ratios.\n"
                if torch_cols
                else "\ntorch not installed: no PyTorch column. "
                f"{first.get('rounds', '?')} rounds of "
                f"{first.get('reps_per_round', '?')} repetitions, "
                "median of the per-round medians.\n"
            )
        )
    lay = payload.get("dcgan_layers", [])
    if lay:
        has_t = all("pytorch_ms" in r for r in lay)
        md += "\n### DCGAN layers: forward + backward, batch 128 (ms)\n\n" + bm.md_table(
            ["layer", "jaxgen"] + (["PyTorch", "PyTorch / jaxgen"] if has_t else []),
            [
                [r["layer"], f"{r['jaxgen_ms']:.1f}"]
                + (
                    [
                        f"{r['pytorch_ms']:.1f}",
                        f"{r.get('pytorch_over_jaxgen', r['pytorch_ms'] / r['jaxgen_ms']):.2f}",
                    ]
                    if has_t
                    else []
                )
                for r in lay
            ],
        )
    return md


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data", default=str(ROOT.parent / "shared" / "data" / "mnist"), help="MNIST IDX folder"
    )
    ap.add_argument("--budget", type=float, default=900.0, help="training seconds per recipe")
    ap.add_argument("--only", nargs="*", choices=list(RECIPES), default=None)
    ap.add_argument("--classic", action="store_true", help="also run the classic FC recipe")
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per process")
    ap.add_argument(
        "--rounds", type=int, default=3, help="alternating jaxgen / PyTorch process pairs"
    )
    ap.add_argument(
        "--no-speed",
        action="store_true",
        help="quality only; keep the speed tables of the last run",
    )
    ap.add_argument("--worker", choices=("step", "layers"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--arch", choices=tref.ARCHS, default="fc", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default="/tmp/jaxgen_gan_quality")
    ap.add_argument("--cache", default="~/.cache/jaxgen/classifiers")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument(
        "--quick", action="store_true", help="2-minute budgets, 3 speed repetitions, 2 rounds"
    )
    args = ap.parse_args(argv)
    if args.worker:  # one timing process, started by speed() / layers(); prints one JSON line
        print(
            json.dumps(
                _worker_step(args.arch, args.reps)
                if args.worker == "step"
                else _worker_layers(args.reps)
            )
        )
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.budget, args.reps, args.rounds = min(args.budget, 120.0), 3, min(args.rounds, 2)
    prev = out / "gan_quality.json"
    payload = json.loads(prev.read_text()) if prev.exists() else {}
    payload.pop("environment", None)
    if not args.speed_only:
        names = args.only or (["fc", "dcgan"] + (["fc_classic"] if args.classic else []))
        payload.setdefault("quality", {})
        for name in names:
            print(f"== {name}: training {args.budget:.0f} s on {args.data}", flush=True)
            payload["quality"][name] = quality(
                name, args.data, args.budget, Path(args.workdir) / name, out, args.cache
            )
            r = payload["quality"][name]
            print(
                f"{name}: classifier score {r['classifier_score']:.2f}, "
                f"{r['classes_covered']} classes, smallest "
                f"{r['min_class_fraction']:.1%}, FD {r['fd']:.1f} "
                f"(real vs real {r['fd_real_vs_real']:.1f})",
                flush=True,
            )
    if not args.no_speed:
        payload["speed"] = speed(args.reps, args.rounds)
        payload["dcgan_layers"] = layers(args.reps, args.rounds)
    path = bm.write_results("gan_quality", payload, markdown(payload), out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
