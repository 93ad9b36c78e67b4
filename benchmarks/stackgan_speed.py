"""StackGAN train-step speed, jaxgen against its PyTorch twin (``benchmarks/stackgan_torch.py``):
the recipe's networks (``configs/stackgan_mnist.py``) at batch 64, each side in its own process
with 2 threads, alternating for ``--rounds`` rounds (the order reverses each round); each process
reports the median of ``--reps`` repetitions of 8 steps; the ratio is the median over rounds of
the per-round ratios. The step without and with the auxiliary heads are both timed.

    python benchmarks/stackgan_speed.py                 # 3 rounds of 5 repetitions, ~4 minutes
    python benchmarks/stackgan_speed.py --rounds 1 --reps 2 --out /tmp/x   # a quick look

Writes ``<name>.{json,md}`` (default ``stackgan_speed``) to ``--out``. Without torch installed the
PyTorch column is left out.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import stackgan_torch as tref  # noqa: E402  (no torch import at module level)

from jaxgen import benchmarking as bm  # noqa: E402

CONFIG = ROOT / "configs" / "stackgan_mnist.py"


def _jax_step(aux: bool):
    """The recipe's jitted train step (state donated) on a random batch, and its FLOPs."""
    import jax

    from jaxgen.config import load_config
    from jaxgen.gan import stackgan, stackgan_train, text

    cfg = load_config(CONFIG)
    cfg.model.aux_weight = 1.0 if aux else 0.0
    vocab = text.WordVocab.from_captions()
    spec = stackgan_train.spec_of(cfg, len(vocab))
    tx_g, tx_d = stackgan_train.optimizers(cfg)
    enc = text.encoder_init(
        jax.random.key(3), len(vocab), spec.text_hidden, spec.text_embed, spec.text_encoder
    )
    state = stackgan.init_state(spec, 0, enc, tx_g, tx_d)
    step = jax.jit(functools.partial(
        stackgan.train_step, spec=spec, tx_g=tx_g, tx_d=tx_d, real_label=cfg.train.real_label,
        kl_weight=cfg.train.kl_weight, aux_weight=cfg.model.aux_weight,
    ), donate_argnums=0)  # fmt: skip
    rng = np.random.default_rng(1)
    b, t = tref.BATCH, tref.WORDS
    real = rng.uniform(-1, 1, (b, 32, 32, 1)).astype(np.float32)
    lengths = rng.integers(3, t + 1, b).astype(np.int32)
    ids = rng.integers(1, len(vocab), (b, t)).astype(np.int32) * (np.arange(t) < lengths[:, None])
    targets = np.stack([rng.integers(0, n, b) for n in stackgan.AUX_GROUPS], 1).astype(np.int32)
    args = (real, ids.astype(np.int32), lengths, targets if aux else None)
    flops = bm.compiled_flops(step, state, *args)
    box = [state]

    def run(n):
        for _ in range(n):
            box[0], _ = step(box[0], *args)
        jax.block_until_ready(box[0])

    run(2)
    return run, flops, len(vocab)


def worker(aux: bool, reps: int) -> dict:
    """This process times jaxgen's step only."""
    run, flops, vocab = _jax_step(aux)
    n = tref.STEPS_PER_REP
    samples = [s / n for s in bm.interleaved({"j": lambda: run(n)}, reps=reps, warmup=1)["j"]]
    return {"s_per_step": float(np.median(samples)), "samples_s": samples,
            "flops_per_step": flops, "vocab": vocab}  # fmt: skip


def speed(reps: int, rounds: int) -> list[dict]:
    from jaxgen.gan import text

    vocab = len(text.WordVocab.from_captions())
    have_torch = importlib.util.find_spec("torch") is not None
    if not have_torch:
        print("torch is not installed: the PyTorch column is left out", flush=True)
    rows = []
    for aux in (False, True):
        flag = ["--aux"] if aux else []
        cmds = {"jaxgen": [sys.executable, __file__, "--worker", *flag, "--reps", str(reps)]}
        if have_torch:
            cmds["pytorch"] = [sys.executable, tref.__file__, "time-step", "--vocab", str(vocab),
                               "--reps", str(reps), "--threads", "2", *flag]  # fmt: skip
        runs = bm.interleaved_processes(cmds, rounds)
        j = [r["s_per_step"] for r in runs["jaxgen"]]
        row = {
            "step": "with auxiliary heads" if aux else "no auxiliary heads",
            "aux": aux, "batch": tref.BATCH, "rounds": rounds, "reps_per_round": reps,
            "jaxgen_images_per_s": tref.BATCH / float(np.median(j)),
            "jaxgen_images_per_s_rounds": [tref.BATCH / x for x in j],
            "flops_per_step": runs["jaxgen"][0]["flops_per_step"],
        }  # fmt: skip
        row["jaxgen_gflops"] = row["flops_per_step"] / float(np.median(j)) / 1e9
        if have_torch:
            t = [r["s_per_step"] for r in runs["pytorch"]]
            row.update(
                pytorch_images_per_s=tref.BATCH / float(np.median(t)),
                pytorch_images_per_s_rounds=[tref.BATCH / x for x in t],
                speedup_vs_pytorch=bm.median_ratio(t, j),
                speedup_vs_pytorch_rounds=[a / b for a, b in zip(t, j)],
                torch_version=runs["pytorch"][0]["torch_version"],
                torch_threads=runs["pytorch"][0]["torch_threads"],
                pytorch_params=runs["pytorch"][0]["params"],
            )
        print({k: v for k, v in row.items() if not isinstance(v, (list, dict))}, flush=True)
        rows.append(row)
    return rows


def markdown(p: dict) -> str:
    rows = p["rows"]
    torch_v = next((r["torch_version"] for r in rows if "torch_version" in r), None)
    head = ["step", "jaxgen images/s", "PyTorch images/s", "jaxgen / PyTorch", "jaxgen GFLOP/s"]
    body = [
        [r["step"], f"{r['jaxgen_images_per_s']:.0f}",
         f"{r['pytorch_images_per_s']:.0f}" if "pytorch_images_per_s" in r else "-",
         f"{r['speedup_vs_pytorch']:.2f}x" if "speedup_vs_pytorch" in r else "-",
         f"{r['jaxgen_gflops']:.1f}"]
        for r in rows
    ]  # fmt: skip
    r0 = rows[0]
    return "\n".join([
        "# StackGAN train step: jaxgen against its PyTorch twin",
        "",
        f"`configs/stackgan_mnist.py`'s networks, batch {r0['batch']}, one full step (both "
        "stages, both discriminators, Adam). jaxgen and "
        f"{'PyTorch ' + torch_v if torch_v else 'PyTorch (not installed)'} each in its own "
        f"process with 2 threads, {r0['rounds']} alternating rounds of {r0['reps_per_round']} "
        "repetitions of 8 steps; medians; the ratio is the median of the per-round ratios "
        "(target: >= 1.0x).",
        "",
        bm.md_table(head, body),
        "",
        "Per round (jaxgen / PyTorch): " + "; ".join(
            f"{r['step']}: " + ", ".join(f"{x:.2f}" for x in r.get("speedup_vs_pytorch_rounds", []))
            for r in rows),
        "",
        f"Command: `{p['command']}`",
        "",
    ])  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--aux", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="stackgan_speed")
    ap.add_argument("--render", metavar="JSON", help="rewrite the markdown of a results file")
    args = ap.parse_args(argv)
    if args.render:
        bm.rewrite_markdown(args.render, markdown)
        return
    if args.worker:
        import json

        print(json.dumps(worker(args.aux, args.reps)))
        return
    rows = speed(args.reps, args.rounds)
    payload = {"rows": rows, "command": "python benchmarks/stackgan_speed.py " +
               " ".join(argv if argv is not None else sys.argv[1:])}  # fmt: skip
    bm.write_results(args.name, payload, markdown(payload), Path(args.out))


if __name__ == "__main__":
    main()
