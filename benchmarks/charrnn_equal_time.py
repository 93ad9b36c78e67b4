r"""Char-RNN recipes at equal wall-clock time, back to back: the LSTM against a parallel cell.

    python benchmarks/charrnn_equal_time.py                # 2 x 15 minutes
    python benchmarks/charrnn_equal_time.py --render --recipe lstm=... --recipe ...  # tables only
    python benchmarks/charrnn_equal_time.py --minutes 3 \
        --recipe lstm=configs/charrnn.py:cpu \
        --recipe mingru=configs/charrnn_mingru.py --set mingru:--config.model.mlp_ratio=2

Each recipe trains in its own process (``benchmarks/charrnn_quality.py``, one after the other, so
no two share the cores) on tiny-shakespeare for the same budget; each writes
``<stem>_<name>.{json,md,png}``, and this script writes the side-by-side
``<stem>.{json,md,png}`` (``--stem``, default ``charrnn_equal_time``): steps, tokens/s and
the validation loss against time and against steps. Compare within one run: this machine's
speed drifts between runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from jaxgen import benchmarking as bm

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECIPES = ("lstm=configs/charrnn.py:cpu", "mingru=configs/charrnn_mingru.py")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--recipe", action="append", default=None, help="NAME=CONFIG (repeatable)")
    ap.add_argument("--set", action="append", default=[], help="NAME:--config.FIELD=VALUE")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--stem", default="charrnn_equal_time", help="result files' name stem")
    ap.add_argument(
        "--render",
        action="store_true",
        help="no training: rebuild the side-by-side files from the recipes' JSON in --out",
    )
    args = ap.parse_args(argv)
    recipes = []
    for item in args.recipe or DEFAULT_RECIPES:
        name, sep, config = item.partition("=")
        if not sep or not name or not config:
            ap.error(f"--recipe expects NAME=CONFIG, got {item!r}")
        recipes.append((name, config))
    names = [n for n, _ in recipes]
    overrides = {n: [] for n in names}
    for item in args.set:
        name, sep, flag = item.partition(":")
        if not sep or name not in overrides or not flag.startswith("--config."):
            ap.error(f"--set expects NAME:--config.FIELD=VALUE with NAME in {names}, got {item!r}")
        overrides[name].append(flag)
    results = {}
    for name, config in [] if args.render else recipes:
        cmd = [
            sys.executable,
            str(ROOT / "benchmarks" / "charrnn_quality.py"),
            "--config",
            str(ROOT / config) if not Path(config.split(":")[0]).is_absolute() else config,
            "--minutes",
            str(args.minutes),
            "--out",
            args.out,
            "--name",
            f"{args.stem}_{name}",
            *overrides[name],
        ]
        print(f"[equal-time] {name}: {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=True)
    for name in names:
        results[name] = json.loads((Path(args.out) / f"{args.stem}_{name}.json").read_text())
    rows = []
    for name in names:
        r = results[name]
        m = r["config"]["model"]
        cell = m.get("cell", "lstm")
        size = (
            f"{m['layers']}x{m['hidden']}"
            + (f", MLP {m.get('mlp_ratio', 4)}x" if cell != "lstm" else "")
            + (f", conv {m['conv']}" if m.get("conv", 0) else "")
        )
        rows.append(
            [
                name,
                f"{cell} ({size})",
                r["minutes"],
                r["steps"],
                r["tokens_per_s_median"] or 0.0,
                f"{r['best_val_loss']:.3f}",
                f"{r['best_val_loss'] - results[names[0]]['best_val_loss']:+.3f}",
            ]
        )
    table = bm.md_table(
        [
            "recipe",
            "cell",
            "minutes",
            "steps",
            "tokens/s",
            "best val loss (nats/char)",
            f"vs {names[0]}",
        ],
        rows,
    )
    minutes = results[names[0]]["minutes"]
    table += (
        f"\nTrained one after the other in their own processes, {minutes:g} minutes each, "
        "on tiny-shakespeare (validation: the last 10%). Per recipe: "
        + ", ".join(f"`{args.stem}_{n}.md`" for n in names)
        + f".\n\n![equal time]({args.stem}.png)\n"
    )
    out = Path(args.out)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for name in names:
            c = results[name]["curve"]
            axes[0].plot([p["wall_s"] / 60 for p in c], [p["val_loss"] for p in c], "o-", ms=3)
            axes[1].plot([p["step"] for p in c], [p["val_loss"] for p in c], "o-", ms=3, label=name)
        for ax, xlabel in zip(axes, ("wall time (minutes)", "training steps")):
            ax.set_xlabel(xlabel)
            ax.set_ylabel("validation loss (nats/char)")
            ax.grid(alpha=0.3)
        axes[1].legend()
        fig.suptitle(f"char-RNN recipes at equal time ({minutes:g} minutes each)")
        fig.tight_layout()
        fig.savefig(out / f"{args.stem}.png", dpi=110)
    except ImportError:
        pass
    payload = {
        "minutes": minutes,
        "recipes": dict(recipes),
        "overrides": overrides,
        "runs": {
            n: {k: results[n][k] for k in ("best_val_loss", "steps", "tokens_per_s_median")}
            for n in names
        },
    }
    bm.write_results(args.stem, payload, table, out)
    print(table)


if __name__ == "__main__":
    main()
