r"""Char-RNN quality against wall time: validation loss of a config trained for a fixed budget.

    python benchmarks/charrnn_quality.py                       # configs/charrnn.py:cpu, 15 minutes
    python benchmarks/charrnn_quality.py --minutes 3 --config configs/charrnn.py:cpu \
        --config.model.hidden=256

Trains on ../shared/data/text/tinyshakespeare.txt (validation = the last 10%), then writes
charrnn_quality.{json,md,png} with the validation curve (nats/char against seconds), tokens/s
and a generated sample.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from jaxgen import benchmarking as bm
from jaxgen import charrnn
from jaxgen.charrnn.sample import sample_text
from jaxgen.config import load_with_overrides

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = ROOT.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"
CELL_NAMES = {
    "lstm": "LSTM",
    "mingru": "minGRU blocks",
    "minlstm": "minLSTM blocks",
    "lru": "LRU blocks",
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=f"{ROOT / 'configs' / 'charrnn.py'}:cpu")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--text", default=str(DEFAULT_TEXT))
    ap.add_argument("--workdir", default=None, help="default: a fresh temporary directory")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="charrnn_quality")
    ap.add_argument("--quick", action="store_true", help="2 minutes")
    args, rest = ap.parse_known_args(argv)
    minutes = 2.0 if args.quick else args.minutes
    cfg = load_with_overrides(args.config, rest)
    with cfg.unlocked():
        cfg.data.path = args.text
        cfg.train.time_budget_s = 60.0 * minutes
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="charrnn_quality_"))
    summary = charrnn.train.train(cfg, workdir)
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    curve = [(r["wall_s"], r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
    params, vocab, _ = charrnn.sample.load_for_sampling(workdir)
    text = sample_text(params, vocab, prime="ROMEO:", length=600, temperature=0.8, top_k=5, seed=0)
    best = min(v for _, _, v in curve)
    payload = {
        "config": cfg.to_dict(),
        "minutes": minutes,
        "curve": [{"wall_s": w, "step": s, "val_loss": v} for w, s, v in curve],
        "best_val_loss": best,
        "final_val_loss": curve[-1][2],
        "tokens_per_s_median": statistics.median(rates) if rates else None,
        "steps": curve[-1][1],
        "sample": text,
        "summary": summary,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([w / 60 for w, _, _ in curve], [v for _, _, v in curve], marker="o", ms=3)
        ax.axhline(1.60, color="gray", ls="--", lw=1, label="target 1.60")
        ax.axhline(1.50, color="gray", ls=":", lw=1, label="stretch 1.50")
        ax.set_xlabel("wall time (minutes)")
        ax.set_ylabel("validation loss (nats/char)")
        ax.set_title(f"char-RNN {cfg.model.layers}x{cfg.model.hidden} on tiny-shakespeare")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / f"{args.name}.png", dpi=110)
    except ImportError:
        pass
    m = cfg.model
    t = cfg.train
    table = bm.md_table(
        ["recipe", "minutes", "steps", "tokens/s", "best val loss (nats/char)", "bits/char"],
        [
            [
                f"{m.layers}x{m.hidden} {CELL_NAMES[m.get('cell', 'lstm')]}"
                + (f" (MLP {m.get('mlp_ratio', 4)}x)" if m.get("cell", "lstm") != "lstm" else "")
                + (f" (conv {m.get('conv', 0)})" if m.get("conv", 0) else "")
                + f", dropout "
                f"{m.dropout}, batch {t.batch}, "
                f"seq {t.seq_len}, "
                f"Adam {t.lr:g} {t.lr_schedule}",
                minutes,
                payload["steps"],
                payload["tokens_per_s_median"] or 0.0,
                best,
                best / 0.6931471805599453,
            ]
        ],
    )
    table += (
        "\nSample (prime `ROMEO:`, temperature 0.8, top-k 5, seed 0):\n\n```\n" + text + "\n```\n"
    )
    bm.write_results(args.name, payload, table, out)
    print(table)


if __name__ == "__main__":
    main()
