"""iGAN projection of held-out real MNIST digits onto a DCGAN (CPU): does the projection keep the
digit, from the whole image and from its top half alone, and does the encoder's start help?

    python benchmarks/project.py                                   # the full benchmark
    python benchmarks/project.py --steps 200 --held-out 50 --encoder-steps 300 \\
        --workdir /tmp/jaxgen_project/smoke --name project_smoke   # end to end in minutes

1. An unconditional DCGAN (``configs/dcgan_mnist.py``, its fixed 8,500-step schedule with no time
   budget) trains on the first 9,000 of the 10,000 real MNIST test images (``--data``), or is
   reused when ``--workdir`` already holds that finished run (``--workdir-in``: any trained DCGAN
   workdir, used as it is).
2. The projection encoder is trained on the generator's samples (or loaded from the workdir's
   cache: :func:`jaxgen.gan.project.cached_encoder`).
3. The last ``--held-out`` images (indices 9,000 ... 9,999, never seen by the generator) are padded
   to 32x32 and projected as ``jaxgen project`` does (restart 0 from the encoder's guess, the rest
   from random latents, Adam on the masked pixel loss plus the prior; the CLI's defaults), once
   from the whole image and once from the top half alone (mask 1 on the top 14 of the 28 rows).
   ``--batch`` targets are optimised at once (``project._optimise`` vmapped over the targets).
   The best restart's image, cropped back to 28x28, is read by the evaluation classifier trained on
   the generator's 9,000 training images (the one the GAN's training evaluated with; it never saw
   the held-out digits either) and compared with the true label; mean pixel L1 and squared error
   to the original are reported too.
4. Encoder against random start: every target's restart 0 (the encoder's guess) and restart 1 (a
   random latent) run the same optimisation; the table gives the median number of steps each needs
   to reach the random start's final loss (per target) and a fixed threshold, and their final
   losses.
5. Time per projection: seconds per target of the batched optimisation (median over the batches
   after the first, which compiles; blocked until ready), and the latency of one ``project`` call
   (a single target, as ``jaxgen project`` runs it).

Targets (issue): the classifier reads the projection as the original's class for >= 90% of the
held-out digits from the whole image and >= 70% from the top half; the encoder's start reaches the
same loss in fewer steps than a random start.

Writes ``<name>.{json,md}``, ``<name>_grid.png`` (one held-out digit per class, columns; rows:
original | projection | top half given (hidden part grey) | projection from the top half) and
``<name>_interp.png`` (an interpolation between two projected digits) to ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxgen import benchmarking as bm  # noqa: E402
from jaxgen.config import load_config  # noqa: E402
from jaxgen.data.images import Images, load_images  # noqa: E402
from jaxgen.evaluation import features_and_probs, get_classifier  # noqa: E402
from jaxgen.gan import models, sampling  # noqa: E402
from jaxgen.gan import project as proj  # noqa: E402
from jaxgen.plots import save_grid  # noqa: E402
from jaxgen.training.checkpoint import read_meta, saved_steps  # noqa: E402

CONFIG = "configs/dcgan_mnist.py"
HELD_OUT_START = 9000  # the generator and the classifier train on the images before this index
TARGET = {"accuracy_full": 0.90, "accuracy_top_half": 0.70}
CLI_RESTARTS, CLI_STEPS = 32, 300  # `jaxgen project`'s defaults


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- the generator


def gan_config(data: str, steps: int | None, limit: int):
    """``configs/dcgan_mnist.py`` on ``data``'s first ``limit`` images, a fixed schedule (no time
    budget); ``steps`` shortens it (the learning-rate decay scaled to fit)."""
    cfg = load_config(ROOT / CONFIG)
    cfg.data.path = data
    cfg.data.limit = limit
    cfg.train.time_budget_s = 0.0
    if steps is not None and steps != cfg.train.steps:
        full = cfg.train.steps
        cfg.train.lr_decay_start = int(cfg.train.lr_decay_start * steps / full)
        cfg.train.lr_decay_steps = steps - cfg.train.lr_decay_start
        cfg.train.steps = steps
    return cfg


def trained_workdir(cfg, workdir: Path) -> dict:
    """Train the GAN in ``workdir`` unless it already holds this finished run (a run of the same
    config stopped early is resumed); returns a summary of the training."""
    from jaxgen.gan.train import train

    meta = read_meta(workdir)
    if meta is not None:
        saved = meta.get("config", {})
        want = cfg.to_dict()
        for group, key in (
            ("data", "path"),
            ("data", "limit"),
            ("train", "steps"),
            ("model", "features"),
            ("seed", None),
        ):
            a = saved.get(group) if key is None else saved.get(group, {}).get(key)
            b = want.get(group) if key is None else want.get(group, {}).get(key)
            if (list(a) if isinstance(a, (list, tuple)) else a) != (
                list(b) if isinstance(b, (list, tuple)) else b
            ):
                raise SystemExit(
                    f"{workdir} holds another run ({group}{'.' + key if key else ''} {a!r}, "
                    f"this benchmark wants {b!r}); pass another --workdir or delete it"
                )
        done = max(saved_steps(workdir / "checkpoints"), default=0)
        if done >= cfg.train.steps:
            say(f"reusing the finished GAN run in {workdir} ({done} steps)")
            return {"reused": True, "steps": done}
    say(
        f"training the DCGAN ({cfg.train.steps} steps on the first {cfg.data.limit} images) "
        f"in {workdir}"
    )
    t0 = time.perf_counter()
    s = train(cfg, workdir, quiet=True)
    wall = time.perf_counter() - t0
    say(
        f"trained {s['steps']} steps in {wall:.0f} s ({s['images_per_s']:.0f} images/s), "
        f"best Frechet distance {s['best_fid']}"
    )
    return {
        "reused": False,
        "steps": s["steps"],
        "train_wall_s": round(wall, 1),
        "images_per_s": s["images_per_s"],
        "best_fid": s["best_fid"],
    }


# ----------------------------------------------------------------------------- projection


@functools.partial(
    jax.jit, static_argnames=("model", "steps", "lr", "prior", "restarts", "dist", "encoded")
)
def project_batch(
    model, g_params, g_stats, enc, x, m, key, *, restarts, steps, lr, prior, dist, encoded
):
    """:func:`jaxgen.gan.project.project` for a batch of targets ``x [B, S, S, C]`` (masks
    ``m [B, S, S, 1]``) at once: restart 0 of each starts at the encoder's guess (``encoded``),
    the others at draws from ``p(z)``. Returns ``(best z [B, latent], best image [B, S, S, C],
    final losses [B, restarts], history [B, steps, restarts])``."""
    b = x.shape[0]
    z0 = models.sample_latent(key, b * restarts, model.latent, dist).reshape(b, restarts, -1)
    if encoded:
        z0 = z0.at[:, 0].set(proj.encode(enc, x))
    run = lambda xi, mi, zi: proj._optimise(
        model,
        g_params,
        g_stats,
        xi,
        mi,
        zi,
        None,
        steps=steps,
        lr=lr,
        prior=prior,
        feature_fn=None,
        feature_weight=0.0,
    )
    z, final, hist = jax.vmap(run)(x, m, z0)
    best = jnp.argmin(final, axis=1)
    zb = jnp.take_along_axis(z, best[:, None, None], axis=1)[:, 0]
    images = proj._generate(model, g_params, g_stats, zb, None)
    return zb, images, final, hist


def project_all(gen, enc, x, m, args, key, what: str) -> dict:
    """Project every target of ``x`` (``[N, S, S, C]``, masks ``m``) in batches of
    ``args.batch`` (the last one padded, so one compilation). Returns numpy arrays and the
    seconds each batch took (the first includes the compilation)."""
    model, gp, gs, dist = gen
    n, b = len(x), args.batch
    pad = -n % b
    xp = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
    mp = np.concatenate([m, np.repeat(m[-1:], pad, 0)])
    out = {"z": [], "images": [], "final": [], "hist": []}
    times = []
    every = max(b, n // 10)
    t_all = time.perf_counter()
    for i in range(0, n + pad, b):
        t0 = time.perf_counter()
        res = jax.block_until_ready(
            project_batch(
                model,
                gp,
                gs,
                enc,
                jnp.asarray(xp[i : i + b]),
                jnp.asarray(mp[i : i + b]),
                jax.random.fold_in(key, i // b),
                restarts=args.restarts,
                steps=args.proj_steps,
                lr=args.lr,
                prior=args.prior,
                dist=dist,
                encoded=enc is not None,
            )
        )
        times.append(time.perf_counter() - t0)
        for k, v in zip(out, res):
            out[k].append(np.asarray(v))
        done = min(i + b, n)
        if done // every == (done - b) // every and done < n:
            continue  # progress every tenth of the targets
        say(
            f"  {what}: {done}/{n} projected, {statistics.median(times) / b:.2f} s per target "
            f"({time.perf_counter() - t_all:.0f} s so far)"
        )
    res = {k: np.concatenate(v)[:n] for k, v in out.items()}
    res["batch_seconds"] = times
    return res


def steps_to_reach(hist: np.ndarray, final: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """For each target, the optimisation steps a restart took to first reach ``threshold``:
    ``hist [N, T]`` is the loss before each step and ``final [N]`` after the last; ``inf`` if it
    never did."""
    curve = np.concatenate([hist, final[:, None]], axis=1)  # loss after 0 ... T steps
    hit = curve <= threshold[:, None] * (1 + 1e-6)
    return np.where(hit.any(1), hit.argmax(1), np.inf).astype(np.float64)


def median_steps(s: np.ndarray) -> float | None:
    """The median of step counts where ``inf`` (never reached) counts as larger than any;
    ``None`` (JSON ``null``) when the median itself is never reached."""
    m = float(np.median(s))
    return None if m == float("inf") else m


def fewer(encoder: float | None, random: float | None) -> bool:
    """Whether the encoder's median steps are fewer than the random start's (``None``: never)."""
    never = float("inf")
    return (never if encoder is None else encoder) < (never if random is None else random)


def start_comparison(res: dict, steps: int) -> dict:
    """Restart 0 (the encoder's guess) against restart 1 (a random latent) and the best of the
    random restarts, over the same optimisation."""
    hist, final = res["hist"], res["final"]
    enc_h, enc_f = hist[:, :, 0], final[:, 0]
    rnd_h, rnd_f = hist[:, :, 1], final[:, 1]
    per_target = rnd_f  # the random start's final loss, target by target
    # one loss for all targets: the random start's median final loss
    fixed = float(np.median(rnd_f))
    out = {
        "encoder_final_loss_median": float(np.median(enc_f)),
        "random_final_loss_median": float(np.median(rnd_f)),
        "best_random_final_loss_median": float(np.median(final[:, 1:].min(1))),
        "initial_loss_median": {
            "encoder": float(np.median(enc_h[:, 0])),
            "random": float(np.median(rnd_h[:, 0])),
        },
        "encoder_best_restart_fraction": float(np.mean(final.argmin(1) == 0)),
        "fixed_threshold": fixed,
    }
    for name, thr in (("random_final", per_target), ("fixed", np.full_like(rnd_f, fixed))):
        se, sr = steps_to_reach(enc_h, enc_f, thr), steps_to_reach(rnd_h, rnd_f, thr)
        out[f"steps_{name}"] = {
            "encoder_median": median_steps(se),
            "random_median": median_steps(sr),
            "encoder_reached": float(np.isfinite(se).mean()),
            "random_reached": float(np.isfinite(sr).mean()),
            "encoder_fewer_fraction": float(np.mean(se < sr)),
        }
    out["steps"] = steps
    return out


def classify(params, images28: np.ndarray) -> np.ndarray:
    return features_and_probs(params, images28)[1].argmax(1)


def summarise(res: dict, params, x28: np.ndarray, y: np.ndarray, m28: np.ndarray, args) -> dict:
    """Accuracy, pixel errors, start comparison and timing of one projection run."""
    gen28 = res["images28"]
    pred = classify(params, gen28)
    diff = gen28 - x28
    drawn = np.broadcast_to(m28, diff.shape)
    per_class = [float(np.mean(pred[y == k] == k)) for k in range(10) if (y == k).any()]
    bt = res["batch_seconds"]
    timed = bt[1:] if len(bt) > 1 else bt
    out = {
        "accuracy": float(np.mean(pred == y)),
        "per_class_accuracy": per_class,
        "l1": float(np.mean(np.abs(diff))),
        "l2": float(np.mean(diff**2)),
        "l1_given_pixels": float(np.sum(np.abs(diff) * drawn) / drawn.sum()),
        "l2_given_pixels": float(np.sum(diff**2 * drawn) / drawn.sum()),
        "best_final_loss_median": float(np.median(res["final"].min(1))),
        "starts": start_comparison(res, args.proj_steps),
        "seconds_per_projection": statistics.median(timed) / args.batch,
        "batch_seconds": [round(t, 3) for t in bt],
        "total_seconds": round(float(sum(bt)), 1),
    }
    return out


def single_latency(gen, enc, target, args, restarts: int, steps: int, reps: int = 3) -> float:
    """Median seconds of one ``project`` call (one target, ``restarts`` x ``steps``), after a
    warm-up call that compiles."""
    model, gp, gs, dist = gen
    call = lambda i: proj.project(
        model,
        gp,
        gs,
        target,
        key=jax.random.key(100 + i),
        restarts=restarts,
        k=1,
        steps=steps,
        lr=args.lr,
        prior=args.prior,
        encoder=enc,
        dist=dist,
    )
    jax.block_until_ready(call(0))
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(call(i + 1))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----------------------------------------------------------------------------- report


def markdown(p: dict, stem: str = "project") -> str:
    f, h = p["full"], p["top_half"]
    g = p["gan"]
    t = p["settings"]
    met = lambda ok: "met" if ok else "**not met**"
    lines = [
        "# iGAN projection of held-out MNIST digits",
        "",
        f"An unconditional DCGAN (`{CONFIG}`, {g['steps']} steps, fixed schedule; its best "
        f"checkpoint by Frechet distance, step {g['checkpoint']}) trained on the "
        f"first {g['train_images']} of the 10,000 MNIST test images; the {p['held_out']} held-out "
        f"digits (indices {p['held_out_range'][0]} ... {p['held_out_range'][1]}, never seen by "
        "the generator nor by the classifier) projected as `jaxgen project` does: "
        f"{t['restarts']} restarts (restart 0 from the encoder's guess, encoder trained "
        f"{t['encoder_steps']} steps on the generator's samples), {t['proj_steps']} Adam steps at "
        f"lr {t['lr']}, prior weight {t['prior']}, the best restart kept. The evaluation "
        f"classifier (trained on the generator's {g['train_images']} images, held-out accuracy "
        f"{p['classifier']['holdout_accuracy']:.4f}) reads the projection, cropped to 28x28.",
        "",
        "| input | classifier reads the original's class | target | met? | mean L1 "
        "| mean sq. error | L1 on given pixels | best loss (median) |",
        "|---|---|---|---|---|---|---|---|",
        f"| whole image | {f['accuracy']:.3f} | >= {TARGET['accuracy_full']} | "
        f"{met(f['accuracy'] >= TARGET['accuracy_full'])} | {f['l1']:.3f} | {f['l2']:.3f} | "
        f"{f['l1_given_pixels']:.3f} | {f['best_final_loss_median']:.4f} |",
        f"| top half only | {h['accuracy']:.3f} | >= {TARGET['accuracy_top_half']} | "
        f"{met(h['accuracy'] >= TARGET['accuracy_top_half'])} | {h['l1']:.3f} | {h['l2']:.3f} | "
        f"{h['l1_given_pixels']:.3f} | {h['best_final_loss_median']:.4f} |",
        "",
        "Pixel errors are over the 28x28 digit in [-1, 1] (top half: the whole completed digit, "
        "and the given half alone). For reference, the classifier reads the held-out originals "
        f"themselves right {p['reference']['original_accuracy']:.3f} of the time, and their top "
        f"halves (the bottom blanked to background) {p['reference']['top_half_accuracy']:.3f}.",
        "",
        "Encoder start against a random start (restart 0 and restart 1 of every target, the same "
        "optimisation): median steps to reach the random start's own final loss (target by "
        "target) and a common loss (one for all targets: the random start's median final loss, "
        f"{f['starts']['fixed_threshold']:.4f} for the whole image and "
        f"{h['starts']['fixed_threshold']:.4f} for the top half; half the random starts never "
        "reach it, by construction), and the losses at the start and the end (medians over "
        "targets; a start that never reaches the loss counts as more than any, shown as "
        f"'> {t['proj_steps']}'). 'encoder fewer': the fraction of targets where the encoder "
        "start reached the random start's final loss in fewer steps than the random start; "
        "'reached': the fraction of targets where a start reached the common loss; 'encoder "
        "best': the fraction where restart 0 ended the best of all the restarts.",
        "",
        "| input | steps to random's final: encoder | random | encoder fewer | "
        "steps to common loss: encoder (reached) | random (reached) | initial loss: encoder | "
        f"random | final loss: encoder | random | best of {t['restarts'] - 1} random | "
        "encoder best | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in (("whole image", f), ("top half only", h)):
        s = r["starts"]
        a, b = s["steps_random_final"], s["steps_fixed"]
        ok = fewer(a["encoder_median"], a["random_median"]) and fewer(
            b["encoder_median"], b["random_median"]
        )
        i0 = s["initial_loss_median"]
        n = lambda v: f"> {t['proj_steps']}" if v is None else f"{v:.0f}"
        lines.append(
            f"| {name} | {n(a['encoder_median'])} | {n(a['random_median'])} | "
            f"{a['encoder_fewer_fraction']:.2f} | {n(b['encoder_median'])} "
            f"({b['encoder_reached']:.2f}) | {n(b['random_median'])} ({b['random_reached']:.2f}) | "
            f"{i0['encoder']:.4f} | {i0['random']:.4f} | "
            f"{s['encoder_final_loss_median']:.4f} | "
            f"{s['random_final_loss_median']:.4f} | {s['best_random_final_loss_median']:.4f} | "
            f"{s['encoder_best_restart_fraction']:.2f} | {met(ok)} |"
        )
    tm = p["timing"]
    lines += [
        "",
        f"Time per projection ({t['restarts']} restarts x {t['proj_steps']} steps): "
        f"{f['seconds_per_projection']:.3f} s per image batched ({t['batch']} targets at once, "
        "median over the batches after the first, which compiles; top half "
        f"{h['seconds_per_projection']:.3f} s), {tm['single_project_s']:.2f} s for one "
        "`project` call on its own (one target, as `jaxgen project` runs it; median of 3 after a "
        "warm-up)"
        + (
            ""
            if (t["restarts"], t["proj_steps"]) == (CLI_RESTARTS, CLI_STEPS)
            else f"; at `jaxgen project`'s defaults ({CLI_RESTARTS} restarts x {CLI_STEPS} "
            f"steps) one call takes {tm['single_project_cli_defaults_s']:.2f} s"
        )
        + f". All {2 * p['held_out']} projections took {tm['projection_total_s']:.0f} s; "
        f"the encoder {tm['encoder_s']:.0f} s"
        + (" (loaded from the workdir's cache)" if tm.get("encoder_cached") else "")
        + ". The machine's 2 CPU cores were shared with other work, which changes these times "
        "by up to 2x over a run.",
        "",
        "Accuracy per class (0 ... 9):",
        "",
        "| input | " + " | ".join(map(str, range(10))) + " |",
        "|---" * 11 + "|",
        "| whole image | " + " | ".join(f"{a:.2f}" for a in f["per_class_accuracy"]) + " |",
        "| top half only | " + " | ".join(f"{a:.2f}" for a in h["per_class_accuracy"]) + " |",
        "",
        f"`{stem}_grid.png`: one held-out digit per class (columns); rows: original | projection | "
        "top half given (hidden part grey) | projection from the top half. "
        f"`{stem}_interp.png`: original, then {p.get('interp_steps', 8)} images between the "
        "projections of two held-out digits, then the other original.",
        "",
        f"Made by `{p['command']}` ({p['environment_note']}).",
        "",
    ]
    return "\n".join(lines)


def render(json_path: Path) -> None:
    """Rewrite ``<name>.md`` from ``<name>.json`` (after a change to the table's wording)."""
    stem = Path(json_path).stem
    payload = json.loads(Path(json_path).read_text())
    payload.pop("environment", None)
    bm.write_results(stem, payload, markdown(payload, stem), Path(json_path).parent)


# ----------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data",
        default=str(ROOT.parent / "shared" / "data" / "mnist"),
        help="MNIST IDX folder (the 10,000-image test set)",
    )
    ap.add_argument(
        "--workdir",
        default="/tmp/jaxgen_project/dcgan",
        help="where the DCGAN is trained (reused when it holds this finished run)",
    )
    ap.add_argument(
        "--workdir-in",
        default="",
        help="an already trained DCGAN workdir to use as it is (no training)",
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="GAN training steps (default: the config's 8,500); for a smoke run",
    )
    ap.add_argument(
        "--limit",
        type=int,
        default=HELD_OUT_START,
        help="GAN training images: the first N (at most 9,000)",
    )
    ap.add_argument(
        "--held-out",
        type=int,
        default=1000,
        help="held-out digits projected: the first N of indices 9,000 ... 9,999",
    )
    ap.add_argument("--encoder-steps", type=int, default=2000, help="encoder training steps")
    ap.add_argument("--restarts", type=int, default=32, help="latents optimised per target")
    ap.add_argument("--proj-steps", type=int, default=300, help="Adam steps per projection")
    ap.add_argument("--lr", type=float, default=0.05, help="Adam's learning rate on z")
    ap.add_argument("--prior", type=float, default=1e-3, help="weight of |z|^2 / latent")
    ap.add_argument(
        "--batch",
        type=int,
        default=2,
        help="targets optimised at once (on 2 CPU cores, 1-2 with 32 restarts is fastest per "
        "target: larger batches leave the caches)",
    )
    ap.add_argument("--seed", type=int, default=0, help="PRNG seed of the random restarts")
    ap.add_argument(
        "--cache", default="~/.cache/jaxgen/classifiers", help="evaluation classifier cache"
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="project", help="stem of the result and image files")
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        raise SystemExit(f"no MNIST folder at {args.data}; pass --data DIR (IDX files)")
    if not 0 < args.limit <= HELD_OUT_START:
        raise SystemExit(f"--limit must be in 1 ... {HELD_OUT_START}, got {args.limit}")
    if not 0 < args.held_out <= 1000:
        raise SystemExit(f"--held-out must be in 1 ... 1000, got {args.held_out}")
    if args.restarts < 2:
        raise SystemExit("--restarts must be >= 2 (restart 0: the encoder, 1: a random start)")
    if args.encoder_steps <= 0:
        raise SystemExit("--encoder-steps must be > 0 (the benchmark compares the encoder start)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # 1. the generator
    if args.workdir_in:
        workdir = Path(args.workdir_in)
        meta = read_meta(workdir)
        if meta is None or meta.get("model") != "gan":
            raise SystemExit(f"{workdir} holds no trained GAN")
        mc = meta["config"]
        limit = int(mc["data"].get("limit", 0)) or 10000
        if limit > HELD_OUT_START or Path(mc["data"].get("path", "")) != Path(args.data):
            print(
                f"warning: {workdir} trained on {mc['data'].get('path')!r} limit {limit}: the "
                "held-out digits may not be unseen",
                flush=True,
            )
        gan_info = {
            "reused": True,
            "workdir_in": str(workdir),
            "steps": max(saved_steps(workdir / "checkpoints"), default=0),
        }
        train_images = limit
    else:
        workdir = Path(args.workdir)
        cfg = gan_config(args.data, args.steps, args.limit)
        gan_info = trained_workdir(cfg, workdir)
        train_images = args.limit
    t0 = time.perf_counter()
    model, gp, gs, gcfg = sampling.load_generator(workdir)
    gen = (model, gp, gs, gcfg.model.latent_dist)
    say(f"loaded the sampling generator ({time.perf_counter() - t0:.0f} s)")
    best = saved_steps(workdir / "best")
    gan_info.update(
        workdir=str(workdir), train_images=train_images, checkpoint=best[0] if best else "latest"
    )

    # 2. the encoder
    t0 = time.perf_counter()
    enc_path = workdir / "project" / f"encoder_{args.encoder_steps}.npz"
    enc_cached = enc_path.exists()
    enc = proj.cached_encoder(
        workdir, model, gp, gs, steps=args.encoder_steps, dist=gen[3], log=say
    )
    enc_s = time.perf_counter() - t0
    say(f"encoder {'loaded' if enc_cached else 'trained'} in {enc_s:.0f} s")

    # the data: held-out digits and the classifier
    real = load_images(path=args.data)
    if len(real) != 10000 or real.labels is None:
        raise SystemExit(f"{args.data} must hold the 10,000 labelled MNIST test images")
    lo = HELD_OUT_START
    x28 = real.images[lo : lo + args.held_out].astype(np.float32)
    y = real.labels[lo : lo + args.held_out].astype(np.int64)
    t0 = time.perf_counter()
    train_real = Images(real.images[:train_images], real.labels[:train_images], real.name)
    clf, clf_info = get_classifier(train_real, args.cache, seed=0)
    say(
        f"evaluation classifier ready ({time.perf_counter() - t0:.0f} s, held-out accuracy "
        f"{clf_info['holdout_accuracy']:.4f})"
    )
    top28 = np.zeros((1, 28, 28, 1), np.float32)
    top28[:, :14] = 1.0
    x_top28 = np.where(top28 > 0, x28, -1.0)  # the bottom blanked to background
    reference = {
        "original_accuracy": float(np.mean(classify(clf, x28) == y)),
        "top_half_accuracy": float(np.mean(classify(clf, x_top28) == y)),
    }
    say(
        f"classifier on the held-out originals: {reference['original_accuracy']:.3f}, on their "
        f"top halves alone: {reference['top_half_accuracy']:.3f}"
    )

    # 3-4. projections
    x32 = np.asarray(models.pad(model, jnp.asarray(x28)))
    full_m = np.ones((len(x32), model.size, model.size, 1), np.float32)
    # as `jaxgen project --mask`: the padding around the 28x28 digit is never drawn
    top_m32 = np.asarray(models.pad(model, jnp.asarray(top28) * 2 - 1)) > 0
    top_m = np.repeat(top_m32.astype(np.float32), len(x32), 0)
    key = jax.random.key(args.seed)
    runs = {}
    for name, m, m28 in (("full", full_m, np.ones_like(top28)), ("top_half", top_m, top28)):
        say(
            f"projecting {len(x32)} held-out digits ({name}): {args.restarts} restarts x "
            f"{args.proj_steps} steps, {args.batch} targets at once"
        )
        res = project_all(gen, enc, x32, m, args, jax.random.fold_in(key, len(runs)), name)
        res["images28"] = np.asarray(models.crop(model, jnp.asarray(res["images"])))
        runs[name] = (res, summarise(res, clf, x28, y, m28, args))
        s = runs[name][1]
        st = s["starts"]["steps_random_final"]
        say(
            f"{name}: accuracy {s['accuracy']:.3f}, L1 {s['l1']:.3f}, sq. error {s['l2']:.3f}, "
            f"{s['seconds_per_projection']:.3f} s per projection; steps to the random start's "
            f"final loss: encoder {st['encoder_median']:.0f}, random {st['random_median']:.0f}"
        )

    # 5. latency of one project call
    t0 = time.perf_counter()
    single = single_latency(gen, enc, x32[0], args, args.restarts, args.proj_steps)
    if (args.restarts, args.proj_steps) == (CLI_RESTARTS, CLI_STEPS):
        single_cli = single
    else:
        single_cli = single_latency(gen, enc, x32[0], args, CLI_RESTARTS, CLI_STEPS)
    say(
        f"one project call: {single:.2f} s, at the CLI's defaults ({CLI_RESTARTS} restarts x "
        f"{CLI_STEPS} steps) {single_cli:.2f} s ({time.perf_counter() - t0:.0f} s to measure)"
    )

    # 6. pictures
    cols = [int(np.flatnonzero(y == k)[0]) for k in range(10) if (y == k).any()]
    given = np.where(top28 > 0, x28, 0.0)  # the hidden part grey
    rows = [
        x28[cols],
        runs["full"][0]["images28"][cols],
        given[cols],
        runs["top_half"][0]["images28"][cols],
    ]
    save_grid(np.concatenate(rows), out / f"{args.name}_grid.png", ncol=len(cols), scale=3)
    interp_steps = 8
    if len(cols) >= 2:
        a, b = cols[3 % len(cols)], cols[8 % len(cols)]
        za, zb = runs["full"][0]["z"][a], runs["full"][0]["z"][b]
        walk = models.crop(model, proj.interpolate(model, gp, gs, za, zb, interp_steps))
        strip = np.concatenate([x28[a : a + 1], np.asarray(walk), x28[b : b + 1]])
        save_grid(strip, out / f"{args.name}_interp.png", ncol=len(strip), scale=3)
    say(f"wrote {args.name}_grid.png and {args.name}_interp.png")

    cmd = "python benchmarks/project.py" + (" " + " ".join(sys.argv[1:]) if argv is None else "")
    payload = {
        "command": ("nice -n 10 " + cmd).strip(),
        "environment_note": f"nproc {os.cpu_count()}, jax {jax.__version__}, "
        f"{jax.default_backend()}",
        "held_out": args.held_out,
        "held_out_range": [lo, lo + args.held_out - 1],
        "gan": gan_info,
        "classifier": {
            "trained_on": f"the first {train_images} images",
            "holdout_accuracy": clf_info["holdout_accuracy"],
        },
        "reference": reference,
        "settings": {
            "restarts": args.restarts,
            "proj_steps": args.proj_steps,
            "lr": args.lr,
            "prior": args.prior,
            "encoder_steps": args.encoder_steps,
            "batch": args.batch,
            "seed": args.seed,
            "mask": "top 14 of 28 rows",
        },
        "full": runs["full"][1],
        "top_half": runs["top_half"][1],
        "timing": {
            "single_project_s": single,
            "single_project_cli_defaults_s": single_cli,
            "encoder_s": round(enc_s, 1),
            "encoder_cached": enc_cached,
            "projection_total_s": runs["full"][1]["total_seconds"]
            + runs["top_half"][1]["total_seconds"],
            "benchmark_wall_s": round(time.perf_counter() - t_start, 1),
        },
        "interp_steps": interp_steps,
        "target": TARGET,
    }
    path = bm.write_results(args.name, payload, markdown(payload, args.name), out)
    say(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
