"""Text to image on MNIST (StackGAN, CPU): does the caption come through, stage by stage?

    python benchmarks/stackgan.py                      # train 15 minutes, then evaluate
    python benchmarks/stackgan.py --budget 120 --name stackgan_quick   # a quick look
    python benchmarks/stackgan.py --reuse              # evaluate the trained workdir again

Trains ``configs/stackgan_mnist.py`` on ``--data`` (MNIST IDX files, the 10,000 test images) for
``--budget`` seconds (the recipe fits its learning-rate decay to the steps that fit), then judges
the last checkpoint with the project's evaluation classifier on captions written in the
**held-out templates** (never seen in training):

* label: 10,000 captions, one per real test image (its label and measured attributes); how often
  the classifier reads the digit the caption names (target >= 0.95), and per class;
* attributes: 1,000 pairs that differ in one word only, with the same ``z`` and code noise:
  "thin" against "bold" (target: the thin one measures thinner in >= 90% of pairs), "leaning
  left" against "leaning right" (target: the slant's sign follows the words in >= 90% of the
  samples; the pairwise order is reported too, and the sign rate of the same pairs written in the
  training templates, which tells a caption read wrongly from an image drawn wrongly);
* diversity: 20 latents for each of 50 captions; the mean pairwise pixel (L2) distance between
  samples of one caption against that between real images of the same class (target >= 0.5);
* stages: Frechet distance (classifier features, against the 10,000 real images) of stage II
  against stage I upsampled to 32x32 (bilinear) and cropped the same way (target: lower).

Writes ``<name>.{json,md}``, ``<name>_grid.png`` (held-out captions in rows, latents in columns)
and ``<name>_stages.png`` (stage I upsampled above stage II, same latents) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxgen import benchmarking as bm  # noqa: E402
from jaxgen.config import load_with_overrides  # noqa: E402
from jaxgen.data.images import load_images  # noqa: E402
from jaxgen.evaluation.cache import get_classifier  # noqa: E402
from jaxgen.evaluation.classifier import features_and_probs  # noqa: E402
from jaxgen.evaluation.scores import frechet_distance, gaussian_stats  # noqa: E402
from jaxgen.gan import captions, stackgan, stackgan_train  # noqa: E402
from jaxgen.plots import save_grid  # noqa: E402

TARGET = {"label_accuracy": 0.95, "thin_thinner": 0.90, "slant_sign": 0.90, "diversity": 0.5}
HELD = captions.HELD_OUT_TEMPLATES


def held_out_caption(digit: int, thick: str | None, slant: str, rng) -> str:
    """A caption in a held-out template with the given words (synonyms drawn by ``rng``)."""
    t = HELD[rng.integers(len(HELD))]
    return captions._fill(t, digit, thick, slant, rng)


def train(data: str, budget: float, workdir: Path, fresh: bool, config: str, sets) -> dict:
    cfg = load_with_overrides(config, list(sets))
    cfg.data.path = data
    cfg.train.time_budget_s = float(budget)
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    t0 = time.perf_counter()
    s = stackgan_train.train(cfg, workdir, quiet=True)
    return {**{k: s[k] for k in ("steps", "horizon", "images_per_s")},
            "train_wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip


def evaluate(workdir: Path, data: str, cache: str, out: Path, name: str) -> dict:
    spec, params, stats, vocab, cfg = stackgan_train.load(workdir)
    real = load_images("tfds", data, "mnist")
    clf, info = get_classifier(real, Path(cache).expanduser(), seed=0)
    max_len = cfg.text.max_words
    rng = np.random.default_rng(0)
    res = {"classifier_holdout_accuracy": info.get("holdout_accuracy")}

    def draw(caps, key):
        return stackgan.sample_text(spec, params, stats, vocab, caps, key, max_len=max_len)

    # 1. the class, on held-out captions of the real test images
    t0 = time.perf_counter()
    caps = [c[0] for c in captions.write_captions(real.images, real.labels, per_image=1,
                                                  held_out=True, seed=1)]  # fmt: skip
    x16, x28 = draw(caps, jax.random.key(1))
    res["sample_s_per_10k"] = round(time.perf_counter() - t0, 1)
    feats, probs = features_and_probs(clf, x28)
    hit = probs.argmax(-1) == real.labels
    res["label_accuracy"] = float(hit.mean())
    _, xs = stackgan.sample_text(spec, params, stats, vocab, caps, jax.random.key(1),
                                 max_len=max_len, sample_c=True)  # fmt: skip
    res["label_accuracy_sampled_c"] = float(
        (features_and_probs(clf, xs)[1].argmax(-1) == real.labels).mean()
    )
    res["per_class_accuracy"] = [float(hit[real.labels == k].mean()) for k in range(10)]
    real_feats, _ = features_and_probs(clf, real.images)
    up = np.asarray(stackgan.crop(spec, stackgan.upsample(x16)))
    up_feats, up_probs = features_and_probs(clf, up)
    mu_r, cov_r = gaussian_stats(real_feats)
    res["fd_stage2"] = float(frechet_distance(*gaussian_stats(feats), mu_r, cov_r))
    res["fd_stage1_upsampled"] = float(frechet_distance(*gaussian_stats(up_feats), mu_r, cov_r))
    res["stage1_label_accuracy"] = float((up_probs.argmax(-1) == real.labels).mean())
    perm = rng.permutation(len(real))  # random halves: the test set's two halves differ
    a, b = real_feats[perm[: len(perm) // 2]], real_feats[perm[len(perm) // 2 :]]
    res["fd_real_halves"] = float(frechet_distance(*gaussian_stats(a), *gaussian_stats(b)))

    # 2. attributes: pairs that differ in one word, same z and code noise (same key, same slot)
    n = 1000
    digits = rng.integers(10, size=n)
    slants = rng.choice(["upright", "leaning left", "leaning right"], size=n)
    seeds = rng.integers(1 << 30, size=n)
    thin = [held_out_caption(d, "thin", s, np.random.default_rng(k))
            for d, s, k in zip(digits, slants, seeds)]  # fmt: skip
    bold = [held_out_caption(d, "bold", s, np.random.default_rng(k))
            for d, s, k in zip(digits, slants, seeds)]  # fmt: skip
    _, a = draw(thin, jax.random.key(2))
    _, b = draw(bold, jax.random.key(2))
    ta, tb = captions.measure(a).thickness, captions.measure(b).thickness
    res["thin_thinner"] = float((ta < tb).mean())
    res["thickness_thin_bold_median"] = [float(np.median(ta)), float(np.median(tb))]
    thick = rng.choice(np.array(["thin", "bold", ""], dtype=object), size=n)
    left = [held_out_caption(d, t or None, "leaning left", np.random.default_rng(k))
            for d, t, k in zip(digits, thick, seeds)]  # fmt: skip
    right = [held_out_caption(d, t or None, "leaning right", np.random.default_rng(k))
             for d, t, k in zip(digits, thick, seeds)]  # fmt: skip
    _, lx = draw(left, jax.random.key(3))
    _, rx = draw(right, jax.random.key(3))
    sl, sr = captions.measure(lx).slant, captions.measure(rx).slant
    res["slant_sign"] = float(np.concatenate([sl < 0, sr > 0]).mean())
    res["slant_pair_order"] = float((sl < sr).mean())
    res["slant_left_right_median"] = [float(np.median(sl)), float(np.median(sr))]
    # the same pairs in the training templates: is it the words' new order that fails?
    seen = captions.TRAIN_TEMPLATES

    def in_training_template(d, t, slant, k):
        return captions._fill(seen[k % len(seen)], d, t or None, slant, np.random.default_rng(k))

    left = [in_training_template(d, t, "leaning left", k) for d, t, k in zip(digits, thick, seeds)]
    right = [
        in_training_template(d, t, "leaning right", k) for d, t, k in zip(digits, thick, seeds)
    ]
    _, lx = draw(left, jax.random.key(3))
    _, rx = draw(right, jax.random.key(3))
    sl, sr = captions.measure(lx).slant, captions.measure(rx).slant
    res["slant_sign_training_templates"] = float(np.concatenate([sl < 0, sr > 0]).mean())
    res["attribute_examples"] = {"thin": thin[:2], "bold": bold[:2], "left": left[:2],
                                 "right": right[:2]}  # fmt: skip

    # 3. diversity: 20 latents per caption against real images of the same class
    per, k_caps = 20, 50
    div_caps = [held_out_caption(d % 10, None, "upright", np.random.default_rng(100 + d))
                for d in range(k_caps)]  # fmt: skip
    _, dx = draw([c for c in div_caps for _ in range(per)], jax.random.key(4))
    dx = dx.reshape(k_caps, per, -1)

    def mean_pairwise(x):  # [M, P] -> mean L2 distance over pairs
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        return d[np.triu_indices(len(x), 1)].mean()

    gen_d = float(np.mean([mean_pairwise(x) for x in dx]))
    real_d = []
    for k in range(10):
        rows = rng.choice(np.flatnonzero(real.labels == k), size=per, replace=False)
        real_d.append(mean_pairwise(real.images[rows].reshape(per, -1)))
    res["diversity_generated"], res["diversity_real"] = gen_d, float(np.mean(real_d))
    res["diversity"] = gen_d / float(np.mean(real_d))

    # pictures: held-out captions in rows, 10 latents each; stage I above stage II
    rows = [held_out_caption(d, t, s, np.random.default_rng(7 + i)) for i, (d, t, s) in enumerate(
        [(7, "bold", "leaning right"), (7, "thin", "leaning left"), (2, "bold", "upright"),
         (2, "thin", "upright"), (4, None, "leaning right"), (0, "bold", "upright"),
         (3, "thin", "leaning left"), (9, None, "upright")])]  # fmt: skip
    g16, g28 = draw([c for c in rows for _ in range(10)], jax.random.key(5))
    save_grid(g28, out / f"{name}_grid.png", ncol=10)
    res["grid_captions"] = rows
    up16 = np.asarray(stackgan.crop(spec, stackgan.upsample(g16)))
    both = np.concatenate([up16[:10], g28[:10], up16[10:20], g28[10:20]])
    save_grid(both, out / f"{name}_stages.png", ncol=10)
    return res


def markdown(p: dict, stem: str) -> str:
    r, t = p["eval"], p["train"]
    ok = lambda b: "yes" if b else "no"  # noqa: E731
    lines = [
        "# Text to image on MNIST (StackGAN)",
        "",
        f"`configs/stackgan_mnist.py` trained for {p['budget_s']:.0f} s on {p['data_name']} "
        f"(2 CPU cores): {t['steps']} steps of batch 64 (schedule fitted to {t['horizon']}), "
        f"{t['images_per_s']:.0f} images/s, {t['train_wall_s']:.0f} s of wall time. Judged by "
        "the project's evaluation classifier (held-out accuracy "
        f"{r['classifier_holdout_accuracy']:.4f}) on captions in the held-out templates.",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        f"| class named in the caption, 10,000 samples | {r['label_accuracy']:.4f} | >= 0.95 | "
        f"{ok(r['label_accuracy'] >= TARGET['label_accuracy'])} |",
        f"| 'thin' thinner than 'bold' (1,000 pairs, same z) | {r['thin_thinner']:.3f} | >= 0.90 "
        f"| {ok(r['thin_thinner'] >= TARGET['thin_thinner'])} |",
        f"| slant sign follows 'leaning left/right' (2,000 samples) | {r['slant_sign']:.3f} | "
        f">= 0.90 | {ok(r['slant_sign'] >= TARGET['slant_sign'])} |",
        f"| diversity: pairwise distance, one caption / real same class | {r['diversity']:.2f} "
        f"({r['diversity_generated']:.2f} / {r['diversity_real']:.2f}) | >= 0.5 | "
        f"{ok(r['diversity'] >= TARGET['diversity'])} |",
        f"| Frechet distance, stage II / stage I upsampled | {r['fd_stage2']:.2f} / "
        f"{r['fd_stage1_upsampled']:.2f} | II lower | "
        f"{ok(r['fd_stage2'] < r['fd_stage1_upsampled'])} |",
        "",
        " ".join([
            "Also: stage I's images (upsampled) read as the named class",
            f"{r['stage1_label_accuracy']:.4f} of the time; stage II with a sampled code",
            "(c ~ N(mu, sigma), as in training, instead of c = mu)",
            f"{r['label_accuracy_sampled_c']:.4f}; real-vs-real Frechet distance (two random",
            f"halves of the test set) {r['fd_real_halves']:.2f}; median thickness thin/bold",
            f"{r['thickness_thin_bold_median'][0]:.2f}/{r['thickness_thin_bold_median'][1]:.2f}",
            f"px; median slant left/right {r['slant_left_right_median'][0]:+.3f}/"
            f"{r['slant_left_right_median'][1]:+.3f} (pairs in the right order:",
            f"{r['slant_pair_order']:.3f}); the same left/right pairs written in the training",
            "templates instead: slant sign follows the words",
            f"{r.get('slant_sign_training_templates', float('nan')):.3f};",
            f"10,000 samples took {r['sample_s_per_10k']:.1f} s.",
        ]),
        "",
        "Label accuracy per class: "
        + ", ".join(f"{k}: {a:.3f}" for k, a in enumerate(r["per_class_accuracy"])),
        "",
        f"`{stem}_grid.png`: one held-out caption a row, 10 latents; rows: "
        + "; ".join(f'"{c}"' for c in r["grid_captions"]) + ".",
        "",
        f"`{stem}_stages.png`: stage I (upsampled) above stage II for the first two rows' latents.",
        "",
        f"Trained by `{p['train_command']}`; evaluated again by `{p['command']}`"
        if p.get("train_command") else f"Command: `{p['command']}`",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist"),
                    help="MNIST IDX folder")  # fmt: skip
    ap.add_argument("--budget", type=float, default=900.0, help="training seconds")
    ap.add_argument("--workdir", default="/tmp/jaxgen_stackgan")
    ap.add_argument("--reuse", action="store_true", help="evaluate the workdir as it is")
    ap.add_argument("--cache", default="~/.cache/jaxgen/classifiers")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="stackgan", help="stem of the result files")
    ap.add_argument("--config", default=str(ROOT / "configs" / "stackgan_mnist.py"),
                    help="the recipe (PATH[:VARIANT])")  # fmt: skip
    ap.add_argument("--set", action="append", default=[], metavar="--config.FIELD=VALUE",
                    help="a config override (repeatable)")  # fmt: skip
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        raise SystemExit(f"no MNIST folder at {args.data}; pass --data DIR (IDX files)")
    out, workdir = Path(args.out), Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    train_command = None
    if args.reuse:
        rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
        last = [r for r in rows if "d_loss" in r][-1]
        old = out / f"{args.name}.json"
        tr = {"steps": last["step"], "horizon": 0, "images_per_s": 0, "train_wall_s": 0}
        if old.exists():  # the training numbers of the run that made the workdir
            old = json.loads(old.read_text())
            tr, train_command = old["train"], old.get("train_command") or old.get("command")
    else:
        print(f"== training {args.budget:.0f} s on {args.data}", flush=True)
        tr = train(args.data, args.budget, workdir, True, args.config, args.set)
        print(tr, flush=True)
    print("== evaluating", flush=True)
    ev = evaluate(workdir, args.data, args.cache, out, args.name)
    print({k: v for k, v in ev.items() if not isinstance(v, (list, dict))}, flush=True)
    payload = {
        "budget_s": args.budget, "data": args.data,
        "data_name": "the MNIST test set (10,000 images)", "train": tr, "eval": ev,
        "target": TARGET,
        "command": "python benchmarks/stackgan.py " + " ".join(argv or sys.argv[1:]),
        "train_command": train_command,
    }  # fmt: skip
    bm.write_results(args.name, payload, markdown(payload, args.name), out)


if __name__ == "__main__":
    main()
