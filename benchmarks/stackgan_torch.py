"""PyTorch twin of jaxgen's StackGAN train step (``jaxgen.gan.stackgan``), for a side-by-side
speed comparison: the same networks layer for layer at the recipe's sizes (``configs/
stackgan_mnist.py``: features 32, latent 64, code 16, text LSTM 64 -> embedding 32, two residual
blocks, projection discriminators; ``--aux`` adds the auxiliary heads), the same step:

1. ``e = E(caption)`` under ``no_grad`` (the frozen text encoder: a bidirectional LSTM over
   one-hot word ids, packed by length, its two final hidden states joined, a dense layer);
   ``c = mu + sigma * eps``;
   ``x16 = G1(z, c)``; ``x32 = G2(x16.detach(), c)``, once.
2. D1 and D2: the matching-aware loss on (real, its caption), (real, the previous image's caption),
   (generated, its caption), three separate passes (separate batch-norm batches, as jaxgen); with
   ``--aux``, the heads' cross entropies on the real images. Adam.
3. G: the non-saturating loss of each stage against the updated discriminators (their parameters
   with ``requires_grad`` off: gradients through their inputs only, as jaxgen's VJP), plus the KL
   term and, with ``--aux``, the heads' cross entropies on the generated images; backward through
   step 1's graph (no second generator forward). Adam.

Parameter counts equal jaxgen's part by part (``python benchmarks/stackgan_torch.py --vocab 50``:
ca 1,056, g1 300,161, g2 260,737, d1 83,633, d2 265,137 with the heads) but for the frozen text
encoder, where PyTorch's LSTM keeps two bias vectors (512 more parameters).

torch is not a dependency of jaxgen. Run it in its own process, never with JAX in the same one
(their thread pools compete and PyTorch slows 30-80x); ``benchmarks/stackgan_speed.py`` does so.

    python benchmarks/stackgan_torch.py                 # parameter counts and 3 steps
    python benchmarks/stackgan_torch.py time-step --reps 5 --threads 2 [--aux]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

F, LATENT, C_DIM, HIDDEN, EMBED, RES = 32, 64, 16, 64, 32, 2
BATCH, WORDS = 64, 12
AUX_GROUPS = (10, 3, 3)
STEPS_PER_REP = 8
LR_G, LR_D, BETAS = 1e-3, 4e-4, (0.5, 0.999)
REAL_LABEL, KL_WEIGHT = 0.9, 0.1


def _build(vocab: int, aux: bool):
    """``(E, CA, G1, G2, D1, D2)``, initialised as jaxgen's: weights N(0, 0.02), biases zero,
    batch-norm scale one and bias zero (the text encoder's values do not matter for speed)."""
    import torch
    from torch import nn

    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.vocab = vocab
            self.lstm = nn.LSTM(vocab, HIDDEN, batch_first=True, bidirectional=True)
            self.out = nn.Linear(2 * HIDDEN, EMBED)

        def forward(self, ids, lengths):
            x = nn.functional.one_hot(ids, self.vocab).float()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)  # h [2, B, H]: forward and backward final states
            return self.out(torch.cat([h[0], h[1]], 1))

    class G1(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Sequential(
                nn.Linear(LATENT + C_DIM, 16 * 4 * F, bias=False), nn.BatchNorm1d(16 * 4 * F),
                nn.ReLU(),
            )  # fmt: skip
            self.up = nn.Sequential(
                nn.ConvTranspose2d(4 * F, 2 * F, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * F),
                nn.ReLU(), nn.ConvTranspose2d(2 * F, 1, 4, 2, 1), nn.Tanh(),
            )  # fmt: skip

        def forward(self, z, c):
            return self.up(self.fc(torch.cat([z, c], 1)).view(-1, 4 * F, 4, 4))

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(2 * F, 2 * F, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * F), nn.ReLU(),
                nn.Conv2d(2 * F, 2 * F, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * F),
            )  # fmt: skip

        def forward(self, x):
            return torch.relu(x + self.body(x))

    class G2(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(
                nn.Conv2d(1, F, 3, 1, 1), nn.ReLU(),
                nn.Conv2d(F, 2 * F, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * F), nn.ReLU(),
            )  # fmt: skip
            self.join = nn.Sequential(
                nn.Conv2d(2 * F + C_DIM, 2 * F, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * F),
                nn.ReLU(), *[Res() for _ in range(RES)],
                nn.ConvTranspose2d(2 * F, F, 4, 2, 1, bias=False), nn.BatchNorm2d(F), nn.ReLU(),
                nn.ConvTranspose2d(F, 1, 4, 2, 1), nn.Tanh(),
            )  # fmt: skip

        def forward(self, x16, c):
            h = self.enc(x16)
            planes = c[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
            return self.join(torch.cat([h, planes], 1))

    class D(nn.Module):
        def __init__(self, chans):
            super().__init__()
            layers, cin = [], 1
            for i, c in enumerate(chans):
                layers.append(nn.Conv2d(cin, c, 4, 2, 1, bias=(i == 0)))
                if i > 0:
                    layers.append(nn.BatchNorm2d(c))
                layers.append(nn.LeakyReLU(0.2))
                cin = c
            self.body = nn.Sequential(*layers, nn.Flatten())
            self.out = nn.Linear(16 * cin, 1)
            self.proj = nn.Linear(EMBED, 16 * cin, bias=False)
            self.aux = nn.Linear(16 * cin, sum(AUX_GROUPS)) if aux else None

        def forward(self, x, emb, with_aux=False):
            phi = self.body(x)
            logit = self.out(phi)[:, 0] + (self.proj(emb) * phi).sum(1)
            return (logit, self.aux(phi)) if with_aux else logit

    nets = (Text(), nn.Linear(EMBED, 2 * C_DIM), G1(), G2(), D((F, 2 * F)), D((F, 2 * F, 4 * F)))
    with torch.no_grad():
        for net in nets[1:]:
            for m in net.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                    nn.init.normal_(m.weight, 0.0, 0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
    return nets


def param_counts(vocab: int, aux: bool) -> dict:
    names = ("text", "ca", "g1", "g2", "d1", "d2")
    return {k: sum(p.numel() for p in n.parameters()) for k, n in zip(names, _build(vocab, aux))}


def make_step(vocab: int, *, aux: bool = False, batch: int = BATCH, threads=None, seed: int = 0):
    """A closure running one StackGAN train step on a fixed random batch (images in [-1, 1],
    random captions and targets); ``step(sync=True)`` returns ``(d_loss, g_loss)``."""
    import torch
    import torch.nn.functional as tf

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    enc, ca, g1, g2, d1, d2 = _build(vocab, aux)
    enc.eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    g_params = [*ca.parameters(), *g1.parameters(), *g2.parameters()]
    d_params = [*d1.parameters(), *d2.parameters()]
    opt_g = torch.optim.Adam(g_params, lr=LR_G, betas=BETAS)
    opt_d = torch.optim.Adam(d_params, lr=LR_D, betas=BETAS)
    gen = torch.Generator().manual_seed(seed + 1)
    real = torch.rand((batch, 1, 32, 32), generator=gen) * 2 - 1
    real16 = tf.avg_pool2d(real, 2)
    lengths = torch.randint(3, WORDS + 1, (batch,), generator=gen)
    ids = torch.randint(1, vocab, (batch, WORDS), generator=gen)
    ids = ids * (torch.arange(WORDS)[None] < lengths[:, None])
    targets = torch.stack(
        [torch.randint(0, n, (batch,), generator=gen) for n in AUX_GROUPS], 1
    )  # fmt: skip
    bce = tf.binary_cross_entropy_with_logits
    ones, zeros, reals = torch.ones(batch), torch.zeros(batch), torch.full((batch,), REAL_LABEL)

    def heads(logits):
        out, start = 0.0, 0
        for j, n in enumerate(AUX_GROUPS):
            out = out + tf.cross_entropy(logits[:, start : start + n], targets[:, j])
            start += n
        return out

    def step(sync: bool = False):
        with torch.no_grad():
            emb = enc(ids, lengths)
        emb_mis = torch.roll(emb, 1, 0)
        mu, log_sigma = ca(emb).chunk(2, 1)
        c = mu + torch.exp(log_sigma) * torch.randn_like(mu)
        x16 = g1(torch.randn(batch, LATENT), c)
        x32 = g2(x16.detach(), c)

        opt_d.zero_grad(set_to_none=True)
        d_loss = 0.0
        for d, r, f in ((d1, real16, x16), (d2, real, x32)):
            rm = d(r, emb, with_aux=aux)
            if aux:
                rm, a = rm
                d_loss = d_loss + heads(a)
            rx, fm = d(r, emb_mis), d(f.detach(), emb)
            d_loss = d_loss + bce(rm, reals) + 0.5 * (bce(rx, zeros) + bce(fm, zeros))
        d_loss.backward()
        opt_d.step()

        opt_g.zero_grad(set_to_none=True)
        for p in d_params:
            p.requires_grad_(False)
        kl = (0.5 * (mu**2 + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma).sum(1)).mean()
        g_loss = KL_WEIGHT * kl
        for d, f in ((d1, x16), (d2, x32)):
            out = d(f, emb, with_aux=aux)
            if aux:
                out, a = out
                g_loss = g_loss + heads(a)
            g_loss = g_loss + bce(out, ones)
        g_loss.backward()
        for p in d_params:
            p.requires_grad_(True)
        opt_g.step()
        if sync:
            return float(d_loss.item()), float(g_loss.item())
        return None

    return step


def time_step(vocab: int, reps: int, *, aux: bool, threads: int = 2, warmup: int = 3) -> dict:
    """Seconds per train step: the median (and every sample) of ``reps`` repetitions of
    ``STEPS_PER_REP`` steps."""
    import torch

    step = make_step(vocab, aux=aux, threads=threads)
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(STEPS_PER_REP):
            step()
        samples.append((time.perf_counter() - t0) / STEPS_PER_REP)
    return {
        "s_per_step": statistics.median(samples), "samples_s": samples, "batch": BATCH,
        "aux": aux, "params": param_counts(vocab, aux), "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", default="smoke", choices=("smoke", "time-step"))
    ap.add_argument("--vocab", type=int, default=50, help="word ids, padding included")
    ap.add_argument("--aux", action="store_true", help="with the auxiliary heads")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.what == "time-step":
        print(json.dumps(time_step(args.vocab, args.reps, aux=args.aux, threads=args.threads)))
        return
    print(param_counts(args.vocab, args.aux))
    step = make_step(args.vocab, aux=args.aux, threads=args.threads)
    for i in range(3):
        print(f"step {i}: d_loss {{:.4f}} g_loss {{:.4f}}".format(*step(sync=True)))


if __name__ == "__main__":
    main()
