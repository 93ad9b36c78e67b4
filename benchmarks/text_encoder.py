"""Does the StackGAN's text encoder understand captions in word orders it never saw?

    python benchmarks/text_encoder.py            # both encoders, 3 seeds, ~1 minute

Each encoder recipe is pretrained as ``configs/stackgan_mnist.py`` does (``text.pretrain_encoder``:
batches of 128 of 5 training-template captions of each of the 10,000 MNIST test digits, a linear
probe reading the digit and the standardised thickness and slant):

* ``lstm``: left to right, its state at the last word, 1,500 steps (the ``:plain`` recipe);
* ``bilstm``: both directions' final states, 1,500 and 3,000 steps;
* ``bilstm``, 3,000 steps, direction dropout 0.5 (for half the captions one direction's state,
  drawn at random, is zeroed, so each direction carries the whole caption);
* the same with the paraphrase term 0.1 (the default recipe: two captions of one image are
  pulled to one embedding).

Then the probe reads one caption per image written in the **held-out templates** (new word
orders: "written leaning left, the digit 3") and one in the training templates:

* digit: how often the probe's class is the caption's digit;
* slant: for captions that say "leaning left" / "leaning right", how often the probe's slant has
  that sign (the mean of the two rates); thickness likewise for "thin" / "bold".

The generator can only draw what the embedding carries: a caption read wrongly here is a sample
drawn wrongly in ``benchmarks/stackgan.py``. Writes ``<name>.{json,md}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxgen import benchmarking as bm  # noqa: E402
from jaxgen.data.images import load_images  # noqa: E402
from jaxgen.gan import captions, text  # noqa: E402
from jaxgen.nn import layers as nn  # noqa: E402

K, T, HIDDEN, EMBED = 5, 12, 64, 32
# (encoder kind, pretraining steps, direction dropout, paraphrase weight)
RECIPES = (
    ("lstm", 1500, 0.0, 0.0),
    ("bilstm", 1500, 0.0, 0.0),
    ("bilstm", 3000, 0.0, 0.0),
    ("bilstm", 3000, 0.5, 0.0),
    ("bilstm", 3000, 0.5, 0.1),
)


def probe_scores(probe, enc, ids, lengths, labels, cls) -> dict:
    o = np.asarray(nn.dense(probe, text.encode(enc, jnp.asarray(ids), jnp.asarray(lengths))))

    def sign_rate(col, which):
        v = o[:, col]
        return float(((v[which == 0] < 0).mean() + (v[which == 2] > 0).mean()) / 2)

    return {
        "digit": float((o[:, :10].argmax(1) == labels).mean()),
        "thickness_sign": sign_rate(10, cls[:, 0]),
        "slant_sign": sign_rate(11, cls[:, 1]),
    }


def run(data_dir: str, seeds) -> list[dict]:
    data = load_images("tfds", data_dir, "mnist")
    vocab = text.WordVocab.from_captions()
    caps = captions.write_captions(data.images, data.labels, per_image=K, seed=0)
    ids, lengths = vocab.encode([c for cs in caps for c in cs], max_len=T)
    ids, lengths = ids.reshape(-1, K, T), lengths.reshape(-1, K)
    attrs = captions.measure(data.images)
    cls = captions.classes(attrs)
    evals = {}
    for name, held, seed in (("held_out", True, 1), ("training", False, 7)):
        one = captions.write_captions(data.images, data.labels, per_image=1, held_out=held,
                                      seed=seed)  # fmt: skip
        evals[name] = vocab.encode([c[0] for c in one], max_len=T)
    standard = lambda v: (v - v.mean()) / v.std()  # noqa: E731
    targets = np.stack([standard(attrs.thickness), standard(attrs.slant)], 1).astype(np.float32)
    rows = []
    for kind, steps, dd, pw in RECIPES:
        for seed in seeds:
            t0 = time.perf_counter()
            k_init, k_probe, k_data = jax.random.split(jax.random.key(seed), 3)
            params = {"enc": text.encoder_init(k_init, len(vocab), HIDDEN, EMBED, kind),
                      "probe": nn.dense_init(k_probe, EMBED, 12)}  # fmt: skip
            params, hist = text._pretrain(
                params, jnp.asarray(ids), jnp.asarray(lengths),
                jnp.asarray(data.labels, jnp.int32), jnp.asarray(targets), k_data, steps=steps,
                batch=128, lr=3e-3, direction_dropout=dd, paraphrase_weight=pw,
            )  # fmt: skip
            row = {"kind": kind, "steps": steps, "direction_dropout": dd, "paraphrase": pw,
                   "seed": seed,
                   "final_loss": float(np.mean(hist[-50:])),
                   "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            for name, (i, n) in evals.items():
                row[name] = probe_scores(params["probe"], params["enc"], i, n, data.labels, cls)
            print(row, flush=True)
            rows.append(row)
    return rows


def _label(r) -> str:
    dd = f", direction dropout {r['direction_dropout']}" if r["direction_dropout"] else ""
    pw = f", paraphrase {r['paraphrase']}" if r.get("paraphrase") else ""
    return f"`{r['kind']}`, {r['steps']:,} steps{dd}{pw}"


def markdown(p: dict) -> str:
    rows = p["rows"]
    body, means = [], {}
    for r in rows:
        h, t = r["held_out"], r["training"]
        train = f"{t['digit']:.3f} / {t['slant_sign']:.3f} / {t['thickness_sign']:.3f}"
        body.append([_label(r), r["seed"], f"{r['final_loss']:.3f}", f"{h['digit']:.3f}",
                     f"{h['slant_sign']:.3f}", f"{h['thickness_sign']:.3f}", train])  # fmt: skip
        means.setdefault(_label(r), []).append(h)
    mean_rows = [[k, f"{np.mean([h['digit'] for h in v]):.3f}",
                  f"{np.mean([h['slant_sign'] for h in v]):.3f}",
                  f"{min(h['slant_sign'] for h in v):.3f}",
                  f"{np.mean([h['thickness_sign'] for h in v]):.3f}"]
                 for k, v in means.items()]  # fmt: skip
    return "\n".join([
        "# The StackGAN's text encoder on captions in new word orders",
        "",
        "Each encoder pretrained as `configs/stackgan_mnist.py` does (the steps named below, batch "
        "128, 5 training-template captions per MNIST test digit, a linear probe; the default "
        "recipe is the last row, `:plain` the first), then its probe read "
        "one caption per image (10,000) in the held-out templates and one in the training "
        "templates. Digit: the probe's class is the caption's; slant / thickness: the probe's "
        "value has the sign the caption's word says (left/right, thin/bold; the mean of the two "
        "rates).",
        "",
        "Held-out templates, mean over seeds:",
        "",
        bm.md_table(["encoder", "digit", "slant sign", "slant sign, worst seed", "thickness sign"],
                    mean_rows),
        "",
        "Every run:",
        "",
        bm.md_table(["encoder", "seed", "probe loss", "held-out: digit", "held-out: slant",
                     "held-out: thickness", "training: digit / slant / thickness"], body),
        "",
        f"Command: `{p['command']}`",
        "",
    ])  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="text_encoder")
    ap.add_argument("--render", metavar="JSON", help="rewrite the markdown of a results file")
    args = ap.parse_args(argv)
    if args.render:
        bm.rewrite_markdown(args.render, markdown)
        return
    if not Path(args.data).exists():
        raise SystemExit(f"no MNIST folder at {args.data}; pass --data DIR (IDX files)")
    rows = run(args.data, range(args.seeds))
    payload = {"rows": rows, "command": "python benchmarks/text_encoder.py " +
               " ".join(argv if argv is not None else sys.argv[1:])}  # fmt: skip
    bm.write_results(args.name, payload, markdown(payload), Path(args.out))


if __name__ == "__main__":
    main()
