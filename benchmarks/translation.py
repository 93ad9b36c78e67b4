"""Image-to-image translation on digits (CPU): Pix2Pix edges -> digits, against a U-Net trained
on L1 alone for the same time, and CycleGAN MNIST <-> UCI digits.

    python benchmarks/translation.py                     # 5 + 5 + 15 minutes of training
    python benchmarks/translation.py --pix2pix 60 --cyclegan 120 --name translation_quick
    python benchmarks/translation.py --reuse             # evaluate the trained workdirs again

Data: ``--data`` (MNIST IDX files, the 10,000 test images) and scikit-learn's UCI digits (1,797
8x8 scans, upsampled to 28x28). Every number is on images the models never trained on.

* **Pix2Pix** (``configs/pix2pix_edges2digits.py``, ``--pix2pix`` seconds; the last 1,000 MNIST
  images held out): the held-out outlines translated (dropout on, as Pix2Pix samples); how often
  the evaluation classifier (trained on the 9,000 training digits) reads the source digit's label
  (target >= 0.95), the L1 to the true digit, and the Frechet distance (classifier features) to the
  true held-out digits. **L1 only**: the same config with ``model.gan_weight=0``, the same time:
  the GAN term should give a lower Frechet distance at an equal or better label rate.
* **CycleGAN** (``configs/cyclegan_mnist_uci.py``, ``--cyclegan`` seconds; the last
  ``--hold-mnist`` MNIST digits (1,000) and the last 300 UCI digits held out): a classifier
  trained on the target domain's training images reads the translated held-out source images
  (with the standard error); MNIST -> UCI target >= 0.90, UCI -> MNIST >= 0.85, each above the
  no-translation baseline (the same classifier on the untranslated source images). The cycle
  reconstruction L1 (A -> B -> A, B -> A -> B) too, and two hand-made translations with no
  learning (MNIST put through the UCI scanning, UCI scans sharpened): what changing the scanner
  alone gives. ``--classes 10`` / ``--semantic W`` / ``--set [GROUP.]FIELD=VALUE`` override the
  config's class-conditional discriminators, CyCADA weight, or any other field.

Writes ``<name>.{json,md}`` and ``<name>_pix2pix.png`` (outline | Pix2Pix | L1 only | truth) and
``<name>_cyclegan.png`` (MNIST | as UCI | back; UCI | as MNIST | back) to ``--out``.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxgen import benchmarking as bm  # noqa: E402
from jaxgen.config import load_config  # noqa: E402
from jaxgen.data import pairs  # noqa: E402
from jaxgen.data.images import Images, builtin_digits, load_images  # noqa: E402
from jaxgen.evaluation.cache import get_classifier  # noqa: E402
from jaxgen.evaluation.classifier import features_and_probs  # noqa: E402
from jaxgen.evaluation.scores import frechet_distance, gaussian_stats  # noqa: E402
from jaxgen.gan import translation_train as tt  # noqa: E402
from jaxgen.plots import save_grid  # noqa: E402

TARGET = {"pix2pix_label": 0.95, "mnist_to_uci": 0.90, "uci_to_mnist": 0.85}
P2P_HOLD, CG_HOLD_UCI = 1000, 300
LEGACY_HOLD = 300  # MNIST digits held out from the CycleGAN before --hold-mnist (the last 300)


def _train(config: str, workdir: Path, budget: float, overrides: dict) -> dict:
    cfg = load_config(ROOT / "configs" / config)
    for k, v in overrides.items():
        group, _, field = k.rpartition(".")
        (cfg[group] if group else cfg)[field] = v
    cfg.train.time_budget_s = float(budget)
    if workdir.exists():
        shutil.rmtree(workdir)
    t0 = time.perf_counter()
    s = tt.train(cfg, workdir, quiet=True)
    return {"steps": s["steps"], "horizon": s["horizon"], "images_per_s": round(s["images_per_s"]),
            "train_wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip


def _accuracy(clf, x, labels) -> float:
    return float((features_and_probs(clf, x)[1].argmax(-1) == labels).mean())


def pix2pix_eval(
    workdir: Path, mnist: Images, clf, real_stats, draws: int = 1
) -> tuple[dict, np.ndarray, np.ndarray]:
    """The label rate, L1 and Frechet distance of one dropout draw (seed 0), and the label rate
    over ``draws`` draws (seeds 0 ...): the per-image fraction of draws read as the label is
    returned too, for the paired comparison of two models on the same outlines."""
    model = tt.load(workdir, "latest")
    held = pairs.edges_to_digits(mnist.images[-P2P_HOLD:], mnist.labels[-P2P_HOLD:])
    y = tt.translate(model, held.a, seed=0)
    feats, probs = features_and_probs(clf, y)
    right = [probs.argmax(-1) == held.labels]
    for seed in range(1, draws):
        other = tt.translate(model, held.a, seed=seed)
        right.append(features_and_probs(clf, other)[1].argmax(-1) == held.labels)
    per_image = np.mean(right, axis=0)
    return (
        {
            "label_rate": float(right[0].mean()),
            "l1_to_truth": float(np.abs(y - held.b).mean()),
            "fd_to_truth": float(frechet_distance(*gaussian_stats(feats), *real_stats)),
            "draws": draws,
            "label_rate_draws": float(per_image.mean()),
        },
        y,
        per_image,
    )


def uci_scan(x: np.ndarray, box: int) -> np.ndarray:
    """MNIST digits ``[N, 28, 28, 1]`` put through the UCI set's own preprocessing, no learning:
    the digit's bounding square scaled to a 32x32 bitmap (threshold at half ink), the on-pixels
    counted in 4x4 blocks (8x8, 0..16), then the benchmark's framing of the UCI scans (upsampled
    to ``box`` and centred in 28x28). What a translator that only changes the scanner gives."""
    from PIL import Image

    out = np.full(x.shape, -1.0, np.float32)
    lo = (28 - box) // 2
    for i, im in enumerate((x[..., 0] + 1.0) / 2.0):
        ys, xs = np.nonzero(im > 0.1)
        crop = im[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        h, w = crop.shape
        side = max(h, w)
        square = np.zeros((side, side))
        square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = crop
        big = np.asarray(Image.fromarray(np.uint8(square * 255)).resize((32, 32), Image.BILINEAR))
        counts = (big > 127).reshape(8, 4, 8, 4).sum((1, 3))  # 0..16, as the UCI files store
        up = Image.fromarray(np.uint8(counts / 16 * 255)).resize((box, box), Image.BILINEAR)
        out[i, lo : lo + box, lo : lo + box, 0] = np.asarray(up, np.float32) / 255 * 2 - 1
    return out


def sharpened(x: np.ndarray) -> np.ndarray:
    """UCI scans with their blur turned into strokes, no learning: a steep sigmoid of the ink
    (centre 0.5, slope 12), the contrast of an MNIST digit."""
    ink = (x + 1.0) / 2.0
    return (2.0 / (1.0 + np.exp(-12.0 * (ink - 0.5))) - 1.0).astype(np.float32)


def cyclegan_eval(
    workdir: Path, mnist: Images, uci: Images, clf_m, clf_u, box: int
) -> tuple[dict, list]:
    model = tt.load(workdir, "latest")
    hold_a, hold_b = (tt.cyclegan_holdout(model.cfg, d)[0] for d in "ab")  # as it was trained
    a, la = mnist.images[-hold_a:], mnist.labels[-hold_a:]
    b, lb = uci.images[-hold_b:], uci.labels[-hold_b:]
    ab, ba = tt.translate(model, a, "a2b"), tt.translate(model, b, "b2a")
    aba, bab = tt.translate(model, ab, "b2a"), tt.translate(model, ba, "a2b")
    res = {
        "mnist_to_uci": _accuracy(clf_u, ab, la),
        "mnist_to_uci_baseline": _accuracy(clf_u, a, la),
        "uci_to_mnist": _accuracy(clf_m, ba, lb),
        "uci_to_mnist_baseline": _accuracy(clf_m, b, lb),
        "mnist_to_uci_scanned": _accuracy(clf_u, uci_scan(a, box), la),
        "uci_to_mnist_sharpened": _accuracy(clf_m, sharpened(b), lb),
        "cycle_l1_mnist": float(np.abs(aba - a).mean()),
        "cycle_l1_uci": float(np.abs(bab - b).mean()),
        "held_out": {"mnist": hold_a, "uci": hold_b},
    }
    if hold_a > LEGACY_HOLD:  # the slice every run before --hold-mnist was judged on
        last, rest = slice(-LEGACY_HOLD, None), slice(None, -LEGACY_HOLD)
        for name, part in (("last300", last), ("before_last300", rest)):
            res[f"mnist_to_uci_{name}"] = _accuracy(clf_u, ab[part], la[part])
            res[f"mnist_to_uci_baseline_{name}"] = _accuracy(clf_u, a[part], la[part])
    return res, [a, ab, aba, b, ba, bab]


def _pix2pix_md(p: dict, stem: str) -> list[str]:
    e, t = p["eval"], p["train"]
    names = [n for n in ("pix2pix", "l1_only") if n in e]
    if not names:
        return ["Not run in this call (a CycleGAN-only trial).\n"]
    draws = e[names[0]].get("draws", 1)
    rows = [
        [label, p["budget"]["pix2pix"], t[name]["steps"], e[name]["label_rate"]]
        + ([round(e[name]["label_rate_draws"], 4)] if draws > 1 else [])
        + [e[name]["l1_to_truth"], e[name]["fd_to_truth"]]
        for name, label in (("pix2pix", "Pix2Pix (GAN + 100 x L1)"),
                            ("l1_only", "U-Net on L1 alone"))
        if name in e
    ]  # fmt: skip
    head = ["model", "budget (s)", "steps", "label rate"]
    head += [f"label rate, mean of {draws} dropout draws"] if draws > 1 else []
    out = [bm.md_table(head + ["L1 to truth", "Frechet distance"], rows)]
    if "label_rate_difference" in e:
        d = e["label_rate_difference"]
        out.append(
            f"Paired, on the same {P2P_HOLD:,} outlines over the {draws} draws: Pix2Pix's label "
            f"rate minus the L1-only U-Net's = {d['mean']:+.4f} +- {d['se']:.4f} (standard "
            f"error of the per-image differences; {d['images_differing']} outlines differ).\n"
        )
    if len(names) == 2:
        out += [f"![outline, Pix2Pix, L1 only, truth]({stem}_pix2pix.png)\n",
                "Rows: outline, Pix2Pix, the L1-only U-Net, the true digit.\n"]  # fmt: skip
    return out


def _cyclegan_md(p: dict, stem: str) -> list[str]:
    e, t = p["eval"], p["train"]
    if "cyclegan" not in e:
        return ["Not run in this call (a Pix2Pix-only run).\n"]
    c = e["cyclegan"]
    held = c.get("held_out", {"mnist": 300, "uci": 300})  # results written before --hold-mnist
    cg_steps = t.get("cyclegan", {}).get("steps", "an unknown number of")  # --reuse, no json

    def acc(p: float, n: int) -> str:
        return f"{p:.3f} +- {np.sqrt(p * (1 - p) / n):.3f} (n {n:,})"

    return [
        f"{p['budget']['cyclegan']:.0f} s of training, {cg_steps} steps, seed {p.get('seed', 0)}"
        + (f", also {', '.join(p['set'])}" if p.get("set") else "")
        + f"; held out: the last {held['mnist']:,} MNIST digits and the last {held['uci']:,} UCI "
        "digits (accuracies with their standard error, sqrt(p (1 - p) / n)); the UCI "
        f"digits upsampled to {p['uci_box']}x{p['uci_box']} and centred in 28x28; cycle weight "
        f"{p.get('cycle_weight', 10.0):g} (identity {p.get('identity_weight', 0.5):g} of it); "
        f"discriminator inputs shifted by up to {p.get('augment_shift', 0)} px; "
        "CyCADA's "
        f"semantic-consistency weight {p['semantic_weight']:g} (0: plain CycleGAN); "
        + (
            f"class-conditional discriminators ({p['num_classes']} classes, both domains' "
            "labels, no pairs)"
            if p.get("num_classes")
            else "unconditional discriminators"
        )
        + ". Each classifier is trained on the target domain's training images; the baseline "
        "is that classifier on the untranslated source images. Hand-made, no learning: MNIST "
        "digits put through the UCI set's own scanning (32x32 bitmap, 4x4 counts; "
        "`uci_scan`), and UCI scans sharpened to strokes (`sharpened`).\n",
        bm.md_table(
            ["direction", "accuracy", "no translation", "hand-made", "target", "cycle L1"],
            [
                [
                    "MNIST -> UCI",
                    acc(c["mnist_to_uci"], held["mnist"]),
                    c["mnist_to_uci_baseline"],
                    c.get("mnist_to_uci_scanned", "-"),
                    TARGET["mnist_to_uci"],
                    c["cycle_l1_mnist"],
                ],
                [
                    "UCI -> MNIST",
                    acc(c["uci_to_mnist"], held["uci"]),
                    c["uci_to_mnist_baseline"],
                    c.get("uci_to_mnist_sharpened", "-"),
                    TARGET["uci_to_mnist"],
                    c["cycle_l1_uci"],
                ],
            ],  # fmt: skip
        ),
        (
            f"MNIST -> UCI on the last {LEGACY_HOLD} MNIST digits alone (what runs before "
            f"`--hold-mnist` held out and were judged on): {c['mnist_to_uci_last300']:.3f}, no "
            f"translation {c['mnist_to_uci_baseline_last300']:.3f}; on the "
            f"{held['mnist'] - LEGACY_HOLD:,} before them: {c['mnist_to_uci_before_last300']:.3f}, "
            f"no translation {c['mnist_to_uci_baseline_before_last300']:.3f}.\n"
            if "mnist_to_uci_last300" in c
            else ""
        ),
        f"![MNIST, as UCI, back; UCI, as MNIST, back]({stem}_cyclegan.png)\n",
        "Rows: MNIST, translated to UCI, translated back; UCI, translated to MNIST, back.\n",
        "Classifiers' held-out accuracy on their own domain: MNIST "
        f"{p['classifiers']['mnist']:.3f}, UCI {p['classifiers']['uci']:.3f}.\n",
    ]


def markdown(p: dict, stem: str) -> str:
    out = [
        f"# Image-to-image translation on digits ({stem})\n",
        (
            f"Trained by `{'`, `'.join(p['trained_by'])}`; evaluated by `{p['command']}`. "
            if p.get("trained_by") and p["trained_by"] != [p["command"]]
            else f"`{p['command']}`. "
        )
        + "Every number is on images the models never trained on.\n",
        "## Pix2Pix: outline -> digit\n",
        f"The last {P2P_HOLD:,} MNIST test digits held out. Label rate: how often the evaluation "
        "classifier (trained on the 9,000 training digits) reads the source digit's label in the "
        f"translation (target >= {TARGET['pix2pix_label']}; one dropout draw, seed 0, and the "
        "mean over several where measured). Frechet distance: classifier features of the "
        "translations against the true held-out digits.\n",
        *_pix2pix_md(p, stem),
        "## CycleGAN: MNIST <-> UCI digits\n",
        *_cyclegan_md(p, stem),
    ]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist"),
                    help="MNIST IDX folder")  # fmt: skip
    ap.add_argument("--pix2pix", type=float, default=300.0, help="Pix2Pix (and L1-only) seconds")
    ap.add_argument("--cyclegan", type=float, default=900.0, help="CycleGAN training seconds")
    ap.add_argument("--workdir", default="/tmp/jaxgen_translation")
    ap.add_argument("--reuse", action="store_true", help="evaluate the workdirs as they are")
    ap.add_argument("--runs", default="pix2pix,l1_only,cyclegan",
                    help="which to train (the others are evaluated as they are)")  # fmt: skip
    ap.add_argument(
        "--semantic",
        type=float,
        default=None,
        help="CycleGAN: CyCADA's semantic-consistency weight (default: the config's)",
    )
    ap.add_argument(
        "--box",
        type=int,
        default=None,
        help="CycleGAN: the UCI digits upsampled to this box in 28x28 (28: fill it; default: "
        "the config's)",
    )
    ap.add_argument(
        "--classes",
        type=int,
        default=None,
        help="CycleGAN: class-conditional discriminators over this many classes (0: off; "
        "default: the config's)",
    )
    ap.add_argument(
        "--cycle", type=float, default=None, help="CycleGAN: cycle weight (default: the config's)"
    )
    ap.add_argument(
        "--identity",
        type=float,
        default=None,
        help="CycleGAN: identity weight, a fraction of the cycle weight (default: the config's)",
    )
    ap.add_argument(
        "--augment",
        type=int,
        default=None,
        help="CycleGAN: DiffAugment shift in pixels for the discriminators (default: the config's)",
    )
    ap.add_argument(
        "--draws",
        type=int,
        default=5,
        help="Pix2Pix: dropout draws per outline for the averaged label rate (1: one draw)",
    )
    ap.add_argument(
        "--hold-mnist",
        type=int,
        default=1000,
        help="CycleGAN: the last N MNIST digits held out (trained on the rest; before "
        "2026-12-04 evening: 300)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="CycleGAN: any other config override, e.g. train.lr_g=4e-4 or seed=1 (repeatable)",
    )
    ap.add_argument("--cache", default="~/.cache/jaxgen/classifiers")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="translation", help="stem of the result files")
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        raise SystemExit(f"no MNIST folder at {args.data}; pass --data DIR (IDX files)")
    out, root = Path(args.out), Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    # the step cap well above what fits, so the budget ends both runs (L1 alone steps ~2x faster)
    long = {"data.path": args.data, "train.steps": 24000, "train.lr_decay_start": 12000,
            "train.lr_decay_steps": 12000}  # fmt: skip
    runs = {
        "pix2pix": ("pix2pix_edges2digits.py", args.pix2pix, long),
        "l1_only": ("pix2pix_edges2digits.py", args.pix2pix, {**long, "model.gan_weight": 0.0}),
        "cyclegan": ("cyclegan_mnist_uci.py", args.cyclegan,
                     {"data.a_path": args.data, "data.holdout_a": args.hold_mnist,
                      "data.holdout_b": CG_HOLD_UCI}),
    }  # fmt: skip
    for flag, field in (("semantic", "model.semantic_weight"), ("box", "data.builtin_box")):
        if getattr(args, flag) is not None:
            runs["cyclegan"][2][field] = getattr(args, flag)
    if args.classes is not None:
        runs["cyclegan"][2]["model.num_classes"] = args.classes
    if args.cycle is not None:
        runs["cyclegan"][2]["model.cycle_weight"] = args.cycle
    if args.identity is not None:
        runs["cyclegan"][2]["model.identity_weight"] = args.identity
    if args.augment is not None:
        runs["cyclegan"][2]["model.augment_shift"] = args.augment
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key.count(".") > 1:
            raise SystemExit(f"--set {item!r}: give [GROUP.]FIELD=VALUE, e.g. train.lr_g=4e-4")
        runs["cyclegan"][2][key] = ast.literal_eval(value)
    todo = [] if args.reuse else args.runs.split(",")
    if set(todo) - set(runs):
        raise SystemExit(f"--runs: choose from {', '.join(runs)}")
    tr, trained_by = {}, []
    earlier = out / f"{args.name}.json"
    if set(runs) - set(todo) and earlier.exists():  # the others' training numbers, if any
        before = json.loads(earlier.read_text())
        tr = before["train"]
        trained_by = before.get("trained_by", [before["command"]])
    for name in todo:
        config, budget, over = runs[name]
        print(f"== training {name} for {budget:.0f} s", flush=True)
        tr[name] = _train(config, root / name, budget, over)
        print(tr[name], flush=True)
    print("== evaluating", flush=True)
    mnist = load_images("tfds", args.data, "mnist")
    cache = Path(args.cache).expanduser()
    train_m = Images(mnist.images[:-P2P_HOLD], mnist.labels[:-P2P_HOLD], mnist.name + "[:-1000]")
    clf_p2p, info_p2p = get_classifier(train_m, cache, seed=0)
    real_feats, _ = features_and_probs(clf_p2p, mnist.images[-P2P_HOLD:])
    real_stats = gaussian_stats(real_feats)
    ev, shown, per_image = {}, {}, {}
    for name in ("pix2pix", "l1_only"):
        if not (root / name).exists() or name not in tr:  # a CycleGAN-only trial
            print(f"{name}: no workdir or training numbers under {root}: not evaluated", flush=True)
            continue
        ev[name], shown[name], per_image[name] = pix2pix_eval(
            root / name, mnist, clf_p2p, real_stats, args.draws
        )
        print(name, ev[name], flush=True)
    if len(per_image) == 2:  # paired: the same outlines, Pix2Pix minus L1 alone
        d = per_image["pix2pix"] - per_image["l1_only"]
        ev["label_rate_difference"] = {
            "mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))),
            "images_differing": int((d != 0).sum()),
        }  # fmt: skip
    held = pairs.edges_to_digits(mnist.images[-P2P_HOLD:])
    k = 12
    if len(shown) == 2:
        grid = [held.a[:k], shown["pix2pix"][:k], shown["l1_only"][:k], held.b[:k]]
        save_grid(np.concatenate(grid), out / f"{args.name}_pix2pix.png", ncol=k)
    command = "python benchmarks/translation.py " + " ".join(argv or sys.argv[1:])
    payload = {
        "data": args.data, "budget": {"pix2pix": args.pix2pix, "cyclegan": args.cyclegan},
        "train": tr, "eval": ev, "target": TARGET,
        "classifiers": {"pix2pix": info_p2p["holdout_accuracy"]},
        "command": command,
        "trained_by": trained_by + [command] if todo else trained_by,
    }  # fmt: skip
    if (root / "cyclegan").exists():
        cg_cfg = tt.load(root / "cyclegan", "latest").cfg
        box = cg_cfg.data.get("builtin_box", 28)
        uci = builtin_digits(28, box)
        ha, hb = (tt.cyclegan_holdout(cg_cfg, d)[0] for d in "ab")
        cg_m = Images(mnist.images[:-ha], mnist.labels[:-ha], f"{mnist.name}[:-{ha}]")
        cg_u = Images(uci.images[:-hb], uci.labels[:-hb], f"{uci.name}[:-{hb}]")
        print(f"UCI digits upsampled to {box}x{box} in 28x28", flush=True)
        clf_m, info_m = get_classifier(cg_m, cache, seed=0)
        clf_u, info_u = get_classifier(cg_u, cache, seed=0)
        ev["cyclegan"], rows = cyclegan_eval(root / "cyclegan", mnist, uci, clf_m, clf_u, box)
        print("cyclegan", ev["cyclegan"], flush=True)
        save_grid(np.concatenate([r[:k] for r in rows]), out / f"{args.name}_cyclegan.png", ncol=k)
        payload.update({
            "uci_box": box, "seed": cg_cfg.seed, "set": args.set,
            "semantic_weight": cg_cfg.model.get("semantic_weight", 0.0),
            "num_classes": cg_cfg.model.get("num_classes", 0),
            "cycle_weight": cg_cfg.model.cycle_weight,
            "identity_weight": cg_cfg.model.identity_weight,
            "augment_shift": cg_cfg.model.get("augment_shift", 0),
        })  # fmt: skip
        payload["classifiers"].update(
            {"mnist": info_m["holdout_accuracy"], "uci": info_u["holdout_accuracy"]}
        )
    else:
        print(f"cyclegan: no workdir under {root}: not evaluated", flush=True)
    bm.write_results(args.name, payload, markdown(payload, args.name), out)
    print(f"wrote {out / args.name}.json, .md and the grids", flush=True)


if __name__ == "__main__":
    main()
