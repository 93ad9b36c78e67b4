r"""The char-RNN recipe against its PyTorch twin at equal wall-clock time, on tiny-shakespeare.

Each side trains in its own process for the same budget, one after the other (never at the
same time):

* ``jaxgen``: ``jaxgen train`` with ``configs/charrnn.py:cpu`` (through
  ``benchmarks/charrnn_quality.py``);
* ``pytorch``: ``benchmarks/charrnn_torch.py`` with the same config and PyTorch's own
  initialisation (what a PyTorch user gets);
* ``pytorch-jaxgen-init``: the same twin started from jaxgen's initial weights (converted with
  ``jaxgen.rnn.lstm_to_torch``), so that only the speed and the framework differ.

All fit their cosine schedule to the budget the same way and validate on the same split, so
the comparison is steps, tokens/s and validation loss over time.

    python benchmarks/charrnn_vs_torch.py                   # 15 minutes a side (about 47 minutes)
    python benchmarks/charrnn_vs_torch.py --minutes 2       # a quick look
    python benchmarks/charrnn_vs_torch.py --reuse /tmp/charrnn_vs_torch_XXXX --sides ...

``--reuse DIR`` takes the sides already in DIR (a previous run's directory, printed at the
start) instead of running them again. Writes charrnn_vs_torch.{json,md,png} to
benchmarks/results/ (or --out).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from jaxgen import benchmarking as bm

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = ROOT.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"
SIDES = ("jaxgen", "pytorch", "pytorch-jaxgen-init")


def write_jaxgen_init(cfg, text: str, path: Path) -> None:
    """jaxgen's initial char-RNN weights for ``cfg`` (as ``jaxgen train`` draws them), in the
    PyTorch twin's layout."""
    import jax

    from jaxgen import rnn
    from jaxgen.charrnn import data, model

    corpus = data.load_corpus(cfg.data.source, text, cfg.data.tfds_name)
    vocab = data.Vocab.from_text(corpus)
    k_init, _ = jax.random.split(jax.random.key(cfg.seed))  # as charrnn.train.init_state
    m = cfg.model
    p = model.init(k_init, len(vocab), m.hidden, m.layers, forget_bias=m.forget_bias)
    arrays = rnn.lstm_to_torch(p["lstm"])
    arrays["out.weight"] = np.asarray(p["w_out"]).T.copy()
    arrays["out.bias"] = np.asarray(p["b_out"]).copy()
    np.savez(path, **arrays)


def run_side(side, args, tmp: Path) -> dict:
    common = ["--config", args.config, "--minutes", str(args.minutes), "--text", args.text]
    py = sys.executable
    if side == "jaxgen":
        cmd = [py, str(ROOT / "benchmarks" / "charrnn_quality.py"), *common]
        cmd += ["--out", str(tmp), "--name", "jaxgen", "--workdir", str(tmp / "workdir")]
    else:
        cmd = [py, str(ROOT / "benchmarks" / "charrnn_torch.py"), *common]
        cmd += ["--out", str(tmp / f"{side}.json")]
        if side == "pytorch-jaxgen-init":
            from jaxgen.config import load_with_overrides

            init = tmp / "jaxgen_init.npz"
            write_jaxgen_init(load_with_overrides(args.config, []), args.text, init)
            cmd += ["--init-from", str(init)]
    print(f"{side}: {args.minutes:g} minutes", flush=True)
    subprocess.run(cmd, check=True)


def load_side(side, tmp: Path) -> dict:
    if side != "jaxgen":
        d = json.loads((tmp / f"{side}.json").read_text())
        return {
            "steps": d["steps"],
            "tokens_per_s": d["tokens_per_s"],
            "best_val_loss": d["best_val_loss"],
            "final_val_loss": d["curve"][-1]["val_loss"],
            "validation_seconds": d["validation_seconds"],
            "wall_s": d["wall_s"],
            "curve": d["curve"],
            "torch_version": d["torch_version"],
            "threads": d["threads"],
        }
    d = json.loads((tmp / "jaxgen.json").read_text())
    metrics = (tmp / "workdir" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in metrics]
    return {
        "steps": d["steps"],
        "tokens_per_s": d["tokens_per_s_median"],
        "best_val_loss": d["best_val_loss"],
        "final_val_loss": d["final_val_loss"],
        "validation_seconds": sum(r.get("val_seconds", 0.0) for r in rows),
        "wall_s": d["summary"]["wall_s"],
        "curve": d["curve"],
        "sample": d["sample"],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=f"{ROOT / 'configs' / 'charrnn.py'}:cpu")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--text", default=str(DEFAULT_TEXT))
    ap.add_argument("--sides", default=",".join(SIDES), help=f"any of {', '.join(SIDES)}")
    ap.add_argument("--reuse", default="", help="a previous run's directory: its sides are kept")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="charrnn_vs_torch")
    args = ap.parse_args(argv)
    sides = args.sides.split(",")
    unknown = sorted(set(sides) - set(SIDES))
    if unknown:
        ap.error(f"unknown side(s) {', '.join(unknown)}; choose from {', '.join(SIDES)}")
    tmp = Path(args.reuse or tempfile.mkdtemp(prefix="charrnn_vs_torch_"))
    print(f"run directory: {tmp}", flush=True)
    have = {s for s in SIDES if (tmp / ("jaxgen.json" if s == "jaxgen" else f"{s}.json")).exists()}
    for side in sides:
        if side not in have:
            run_side(side, args, tmp)
    results = {s: load_side(s, tmp) for s in SIDES if s in set(sides) | have}
    torch_side = next((v for k, v in results.items() if k != "jaxgen"), None)
    payload = {
        "minutes": args.minutes,
        "config": args.config,
        "torch_version": torch_side and torch_side["torch_version"],
        "torch_threads": torch_side and torch_side["threads"],
        "sides": results,
    }
    rows = []
    for k, s in results.items():
        rows.append(
            [
                k,
                f"{s['steps']:,}",
                f"{s['tokens_per_s']:,.0f}",
                f"{s['best_val_loss']:.4f}",
                f"{s['final_val_loss']:.4f}",
                f"{s['validation_seconds']:.1f}",
                f"{100 * s['validation_seconds'] / s['wall_s']:.1f}%",
            ]
        )
    header = ["side", "steps", "tokens/s", "best val loss", "final val loss", "validation s"]
    table = bm.md_table(header + ["validation share"], rows)
    table += (
        f"\n{args.minutes:g} minutes a side, one after the other, each in its own process "
        f"(PyTorch {payload['torch_version']}, {payload['torch_threads']} threads); config "
        "`configs/charrnn.py:cpu`; validation loss in nats/char on the last 10% of "
        "tiny-shakespeare. tokens/s: jaxgen's median logged rate; PyTorch's steps over its "
        "training time without validation.\n"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4))
        for k, s in results.items():
            c = s["curve"]
            label = f"{k} ({s['steps']:,} steps, best {s['best_val_loss']:.3f})"
            ax.plot(
                [p["wall_s"] / 60 for p in c],
                [p["val_loss"] for p in c],
                marker="o",
                ms=3,
                label=label,
            )
        ax.set_xlabel("wall time (minutes)")
        ax.set_ylabel("validation loss (nats/char)")
        ax.set_ylim(1.4, 2.0)
        ax.set_title("char-RNN 2x256 on tiny-shakespeare, equal time (2 CPU cores)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{args.name}.png", dpi=110)
    except ImportError:
        pass
    bm.write_results(args.name, payload, table, out)
    print(table)


if __name__ == "__main__":
    main()
