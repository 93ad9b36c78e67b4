"""Train-step speed of jaxgen's Pix2Pix and CycleGAN against PyTorch twins of the same networks.

    python benchmarks/translation_speed.py                 # 3 rounds, each side in its own process
    python benchmarks/translation_speed.py --rounds 1 --name translation_speed_quick

The twins match ``jaxgen.gan.translation`` layer for layer at the shipped configs' sizes
(``configs/pix2pix_edges2digits.py``: 5-level U-Net (32, 64, 128, 128, 128), PatchGAN (32, 64,
128), batch 16, 32x32 grey; ``configs/cyclegan_mnist_uci.py``: ResNet generators of 16 features
and 4 blocks, class-conditional PatchGANs (32, 64, 128; 10 classes), batch 16, 28x28 grey): 4x4
convolutions with padding 1 (stride 2 down, transposed up), 7x7 and 3x3 convolutions padded to
keep the size, affine instance norm (eps 1e-5), biases everywhere (but the class projections),
N(0, 0.02) weights, Adam 2e-4 with betas (0.5, 0.999).

One step is the same work on both sides:

* Pix2Pix: ``fake = G(a)`` once (dropout on); D's update on the real and the generated pair;
  G's update on ``BCE(D(a, fake), 1) + 100 * L1`` against the updated D, with D's weight
  gradients off (jaxgen differentiates with respect to G only).
* CycleGAN: the generators' update (``G_ab(a)``, ``G_ba(b)``, both cycles, both identities,
  both discriminators read with their weight gradients off), then both histories queried image
  by image (the reference implementation's Python loop on the PyTorch side; each label kept with
  its image) and the discriminators' update; every discriminator call takes the images' labels
  (the logit and the 10 class projections from one convolution, the label's channel added).

Each side runs in its own process (in one process PyTorch's OpenMP threads and XLA's pool fight),
2 threads for PyTorch, ``--steps`` steps per sample after a warm-up, the median of ``--reps``
samples; rounds alternate the order. Writes ``<name>.{json,md}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 16
CLASSES = 10  # configs/cyclegan_mnist_uci.py: class-conditional discriminators
SHAPES = {"pix2pix": (32, 1, 1), "cyclegan": (28, 1, 1)}  # side, channels A, channels B


# --------------------------------------------------------------------------------- jaxgen


def time_jax(model: str, steps: int, reps: int) -> dict:
    import jax
    import numpy as np

    from jaxgen.config import load_config
    from jaxgen.gan import cyclegan, pix2pix
    from jaxgen.gan import translation_train as tt
    from jaxgen.gan.step import make_optimizers

    side, ca, cb = SHAPES[model]
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (BATCH, side, side, ca)).astype(np.float32)
    b = rng.uniform(-1, 1, (BATCH, side, side, cb)).astype(np.float32)
    if model == "pix2pix":
        cfg = load_config(ROOT / "configs" / "pix2pix_edges2digits.py")
        spec = tt.pix2pix_spec(cfg, ca, cb)
        tx_g, tx_d = make_optimizers(cfg)
        state = pix2pix.init_state(spec, 0, tx_g, tx_d)
        fn = pix2pix.train_step
    else:
        cfg = load_config(ROOT / "configs" / "cyclegan_mnist_uci.py")
        spec = tt.cyclegan_spec(cfg, ca, cb)
        tx_g, tx_d = make_optimizers(cfg)
        if spec.num_classes != CLASSES:
            raise SystemExit(f"the twin has {CLASSES} classes, the config {spec.num_classes}")
        state = cyclegan.init_state(spec, 0, a.shape[1:], b.shape[1:], tx_g, tx_d)
        fn = cyclegan.train_step
        labels = tuple(rng.integers(0, CLASSES, BATCH).astype(np.int32) for _ in "ab")
    if model == "pix2pix":
        labels = ()
    step = jax.jit(
        lambda s, *batch: fn(s, *batch, spec=spec, tx_g=tx_g, tx_d=tx_d), donate_argnums=0
    )
    batch = jax.device_put((a, b, *labels))
    for _ in range(3):
        state, m = step(state, *batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(steps):
            state, m = step(state, *batch)
        jax.block_until_ready(state)
        times.append((time.perf_counter() - t0) / steps)
    params = {k: int(sum(x.size for x in jax.tree.leaves(v))) for k, v in state.params.items()}
    return {"median_s": statistics.median(times), "times": times, "params": params,
            "finite": bool(np.isfinite(float(m["g_loss"])))}  # fmt: skip


# --------------------------------------------------------------------------------- PyTorch


def _torch_nets(model: str):
    import torch
    from torch import nn

    def init(m):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    class UNet(nn.Module):
        def __init__(self, c_in, c_out, feats=(32, 64, 128, 128, 128)):
            super().__init__()
            d = len(feats)
            self.enc = nn.ModuleList()
            self.enc_norm = nn.ModuleList()
            c = c_in
            for k, f in enumerate(feats):
                self.enc.append(nn.Conv2d(c, f, 4, 2, 1))
                self.enc_norm.append(nn.InstanceNorm2d(f, affine=True) if 0 < k < d - 1
                                     else nn.Identity())  # fmt: skip
                c = f
            self.dec = nn.ModuleList()
            self.dec_norm = nn.ModuleList()
            for k in reversed(range(d)):
                co = c_out if k == 0 else feats[k - 1]
                ci = feats[k] if k == d - 1 else 2 * feats[k]
                self.dec.append(nn.ConvTranspose2d(ci, co, 4, 2, 1))
                self.dec_norm.append(nn.InstanceNorm2d(co, affine=True) if k > 0
                                     else nn.Identity())  # fmt: skip
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            skips = []
            for k, (conv, norm) in enumerate(zip(self.enc, self.enc_norm)):
                x = norm(conv(x if k == 0 else nn.functional.leaky_relu(x, 0.2)))
                skips.append(x)
            d = len(self.enc)
            for n, (conv, norm) in enumerate(zip(self.dec, self.dec_norm)):
                k = d - 1 - n
                if n > 0:
                    x = torch.cat([x, skips[k]], 1)
                x = norm(conv(torch.relu(x)))
                if n < 3 and k > 0:
                    x = self.drop(x)
            return torch.tanh(x)

    class ClassHead(nn.Module):
        """The class-conditional PatchGAN's output: one convolution to the logit and to every
        class's projection (no bias but the logit's), the label's channel added to the logit."""

        def __init__(self, c, classes):
            super().__init__()
            self.conv = nn.Conv2d(c, 1 + classes, 4, 1, 1, bias=False)
            self.bias = nn.Parameter(torch.zeros(1))

        def forward(self, h, y):
            out = self.conv(h)
            idx = y[:, None, None, None].expand(-1, 1, out.shape[2], out.shape[3]) + 1
            return out[:, :1] + self.bias + out.gather(1, idx)

    class CondPatchGAN(nn.Module):
        def __init__(self, body, head):
            super().__init__()
            self.body, self.head = body, head

        def forward(self, x, y):
            return self.head(self.body(x), y)

    def patchgan(c_in, feats=(32, 64, 128), classes=0):
        mods, c = [], c_in
        for k, f in enumerate(feats):
            mods.append(nn.Conv2d(c, f, 4, 2 if k < len(feats) - 1 else 1, 1))
            if k > 0:
                mods.append(nn.InstanceNorm2d(f, affine=True))
            mods.append(nn.LeakyReLU(0.2))
            c = f
        if classes:
            return CondPatchGAN(nn.Sequential(*mods), ClassHead(c, classes))
        mods.append(nn.Conv2d(c, 1, 4, 1, 1))
        return nn.Sequential(*mods)

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c1, self.n1 = nn.Conv2d(c, c, 3, 1, 1), nn.InstanceNorm2d(c, affine=True)
            self.c2, self.n2 = nn.Conv2d(c, c, 3, 1, 1), nn.InstanceNorm2d(c, affine=True)

        def forward(self, x):
            return x + self.n2(self.c2(torch.relu(self.n1(self.c1(x)))))

    def resnet(c_in, c_out, f=16, blocks=4):
        cbr = lambda ci, co, k, s, p: [nn.Conv2d(ci, co, k, s, p),
                                       nn.InstanceNorm2d(co, affine=True), nn.ReLU()]  # fmt: skip
        up = lambda ci, co: [nn.ConvTranspose2d(ci, co, 4, 2, 1),
                             nn.InstanceNorm2d(co, affine=True), nn.ReLU()]  # fmt: skip
        return nn.Sequential(
            *cbr(c_in, f, 7, 1, 3), *cbr(f, 2 * f, 4, 2, 1), *cbr(2 * f, 4 * f, 4, 2, 1),
            *[Block(4 * f) for _ in range(blocks)],
            *up(4 * f, 2 * f), *up(2 * f, f), nn.Conv2d(f, c_out, 7, 1, 3), nn.Tanh(),
        )  # fmt: skip

    _, ca, cb = SHAPES[model]
    if model == "pix2pix":
        nets = {"g": UNet(ca, cb), "d": patchgan(ca + cb)}
    else:
        nets = {"g_ab": resnet(ca, cb), "g_ba": resnet(cb, ca),
                "d_a": patchgan(ca, classes=CLASSES),
                "d_b": patchgan(cb, classes=CLASSES)}  # fmt: skip
    for n in nets.values():
        n.apply(init)
        n.train()
    return nets


def _pool(size: int):
    """The reference implementation's image pool, image by image, each label kept with its
    image (for the class-conditional discriminators)."""
    import random

    import torch

    stored = []

    def query(images, labels):
        out = []
        for im, y in zip(images, labels):
            item = (im.unsqueeze(0), y.view(1))
            if len(stored) < size:
                stored.append(item)
                out.append(item)
            elif random.random() < 0.5:
                i = random.randrange(size)
                out.append((stored[i][0].clone(), stored[i][1]))
                stored[i] = item
            else:
                out.append(item)
        return torch.cat([o[0] for o in out], 0), torch.cat([o[1] for o in out], 0)

    return query


def time_torch(model: str, steps: int, reps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    side, ca, cb = SHAPES[model]
    a = torch.rand(BATCH, ca, side, side) * 2 - 1
    b = torch.rand(BATCH, cb, side, side) * 2 - 1
    nets = _torch_nets(model)
    adam = lambda *ms: torch.optim.Adam([p for m in ms for p in m.parameters()], lr=2e-4,
                                        betas=(0.5, 0.999))  # fmt: skip
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    l1 = lambda x, y: (x - y).abs().mean()

    def frozen(ms, flag):
        for m in ms:
            for p in m.parameters():
                p.requires_grad_(not flag)

    if model == "pix2pix":
        g, d = nets["g"], nets["d"]
        opt_g, opt_d = adam(g), adam(d)

        def step():
            fake = g(a)
            real_l = d(torch.cat([a, b], 1))
            fake_l = d(torch.cat([a, fake.detach()], 1))
            ones, zeros = torch.ones_like(real_l), torch.zeros_like(fake_l)
            ld = 0.5 * (bce(real_l, ones) + bce(fake_l, zeros))
            opt_d.zero_grad(set_to_none=True)
            ld.backward()
            opt_d.step()
            frozen([d], True)
            out = d(torch.cat([a, fake], 1))
            lg = bce(out, torch.ones_like(out)) + 100.0 * l1(fake, b)
            opt_g.zero_grad(set_to_none=True)
            lg.backward()
            opt_g.step()
            frozen([d], False)
            return lg
    else:
        gab, gba, da, db = (nets[k] for k in ("g_ab", "g_ba", "d_a", "d_b"))
        opt_g, opt_d = adam(gab, gba), adam(da, db)
        pool_a, pool_b = _pool(50), _pool(50)
        lsg = lambda x: ((x - 1) ** 2).mean()

        la = torch.randint(0, CLASSES, (BATCH,))
        lb = torch.randint(0, CLASSES, (BATCH,))

        def step():
            frozen([da, db], True)
            fake_b, fake_a = gab(a), gba(b)
            lg = (lsg(db(fake_b, la)) + lsg(da(fake_a, lb))
                  + 10.0 * (l1(gba(fake_b), a) + l1(gab(fake_a), b))
                  + 5.0 * (l1(gab(b), b) + l1(gba(a), a)))  # fmt: skip
            opt_g.zero_grad(set_to_none=True)
            lg.backward()
            opt_g.step()
            frozen([da, db], False)
            (old_a, old_la), (old_b, old_lb) = (
                pool_a(fake_a.detach(), lb),
                pool_b(fake_b.detach(), la),
            )
            lsd = lambda r, f: 0.5 * (((r - 1) ** 2).mean() + (f**2).mean())
            ld = lsd(da(a, la), da(old_a, old_la)) + lsd(db(b, lb), db(old_b, old_lb))
            opt_d.zero_grad(set_to_none=True)
            ld.backward()
            opt_d.step()
            return lg

    for _ in range(3):
        loss = step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        times.append((time.perf_counter() - t0) / steps)
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in nets.items()}
    return {"median_s": statistics.median(times), "times": times, "params": params,
            "finite": bool(torch.isfinite(loss).item()), "torch": torch.__version__}  # fmt: skip


# --------------------------------------------------------------------------------- driver


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("mode", nargs="?", default="compare", choices=("compare", "jax", "torch"))
    ap.add_argument("--model", default="pix2pix", choices=tuple(SHAPES))
    ap.add_argument("--steps", type=int, default=0, help="steps per sample (0: by model)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="translation_speed")
    args = ap.parse_args(argv)
    steps = args.steps or {"pix2pix": 20, "cyclegan": 5}[args.model]
    if args.mode == "jax":
        print(json.dumps(time_jax(args.model, steps, args.reps)))
        return
    if args.mode == "torch":
        print(json.dumps(time_torch(args.model, steps, args.reps, args.threads)))
        return
    from jaxgen import benchmarking as bm

    me = [sys.executable, str(Path(__file__).resolve())]
    res, rows = {}, []
    for model in SHAPES:
        common = ["--model", model, "--reps", str(args.reps)]
        got = bm.interleaved_processes(
            {"jaxgen": [*me, "jax", *common],
             "torch": [*me, "torch", *common, "--threads", str(args.threads)]},
            args.rounds,
        )  # fmt: skip
        j = [r["median_s"] for r in got["jaxgen"]]
        t = [r["median_s"] for r in got["torch"]]
        ratio = bm.median_ratio(t, j)
        if got["jaxgen"][0]["params"] != got["torch"][0]["params"]:
            raise SystemExit(f"{model}: the twins differ: {got['jaxgen'][0]['params']} against "
                             f"{got['torch'][0]['params']}")  # fmt: skip
        res[model] = {"jaxgen_s": j, "torch_s": t, "speedup_vs_torch": ratio,
                      "params": got["torch"][0]["params"]}  # fmt: skip
        rows.append([model, BATCH, statistics.median(j) * 1e3, statistics.median(t) * 1e3,
                     BATCH / statistics.median(j), f"{ratio:.2f}x"])  # fmt: skip
        print(model, res[model], flush=True)
    table = bm.md_table(
        ["model", "batch", "jaxgen ms/step", "PyTorch ms/step", "jaxgen img/s",
         "jaxgen speed / PyTorch"], rows,
    )  # fmt: skip
    md = (
        "# Translation train step: jaxgen against PyTorch twins\n\n"
        f"`python benchmarks/translation_speed.py {' '.join(argv or sys.argv[1:])}`: "
        f"{args.rounds} rounds, each side in its own process (PyTorch {args.threads} threads), "
        "medians; the ratio is the median of the per-round ratios (above 1: jaxgen is faster).\n\n"
        + table
    )
    bm.write_results(args.name, {"batch": BATCH, "rounds": args.rounds, "results": res}, md,
                     args.out)  # fmt: skip


if __name__ == "__main__":
    main()
