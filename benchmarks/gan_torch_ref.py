"""PyTorch twins of jaxgen's two GANs, for a side-by-side train-step speed comparison.

torch is not a dependency of jaxgen; everything here imports it lazily and ``available()`` says
whether it is installed. The networks match ``jaxgen.gan.models`` layer for layer (same parameter
counts, batch-norm scale and bias counted as parameters):

* ``fc``    G 114,800 / D 110,849 parameters; 28x28x1 images flattened to 784; batch 64;
            Adam lr 2e-3. Weights uniform(+-1/sqrt(fan_in)) (PyTorch's default, jaxgen's
            ``init_std=None``), biases zero.
* ``dcgan`` G 373,441 / D 166,817 parameters; 32x32x1 images, NCHW; batch 128;
            Adam lr 2e-4, betas (0.5, 0.999). Weights N(0, 0.02), biases zero,
            batch-norm scale one and bias zero.
* ``cdcgan`` the class-conditional DCGAN (``configs/cdcgan_mnist.py``, batch 64): G reads
            ``[z, one_hot(y)]``, D adds the projection ``e_y . phi(x)`` to its logit;
            10 classes add 20,480 parameters to each network.

One train step, the same as jaxgen's: z ~ N(0, 1) ``[B, 100]``; ``fake = G(z)`` once;
D step on ``BCE(D(real), 0.9) + BCE(D(fake.detach()), 0)`` with real and fake through D separately
(separate batch-norm batches); G step on ``BCE(D(fake), 1)`` against the updated D, reusing the same
``fake`` graph (no second G forward). In the G step D's parameters have ``requires_grad`` off, so
the backward pass computes the gradient through D's input and G's weight gradients only, the same
work as jaxgen's step (which differentiates the G loss with respect to G's parameters only); a plain
``g_loss.backward()`` would also compute D's weight gradients, a third pass of D's most expensive
convolutions.

    step = make_step("dcgan", 128, threads=2)
    step()                       # one train step, nothing returned (no .item() in the timed path)
    d_loss, g_loss = step(sync=True)

    python benchmarks/gan_torch_ref.py   # smoke check: parameter counts and 3 steps of each

Timing workers (run by ``benchmarks/gan_quality.py`` in their own process, never in one process
with JAX: there PyTorch's OpenMP threads and XLA's thread pool compete and PyTorch slows 30-80x);
each prints one JSON line with the median and every sample:

    python benchmarks/gan_torch_ref.py time-step --arch dcgan --reps 7 --threads 2
    python benchmarks/gan_torch_ref.py time-layers --reps 7 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

LATENT = 100
ARCHS = ("fc", "dcgan", "cdcgan")
CLASSES = 10  # cdcgan: the class-conditional DCGAN of configs/cdcgan_mnist.py
DEFAULT_BATCH = {"fc": 64, "dcgan": 128, "cdcgan": 64}
EXPECTED_PARAMS = {
    "fc": (114_800, 110_849),
    "dcgan": (373_441, 166_817),
    "cdcgan": (373_441 + CLASSES * 2048, 166_817 + CLASSES * 2048),
}
STEPS_PER_REP = {"fc": 200, "dcgan": 8, "cdcgan": 16}  # train steps per timed repetition
# (kind, input size, in channels, out channels) of each DCGAN convolution; kernel 4, stride 2,
# padding 1.
DCGAN_LAYERS = (
    ("D conv", 32, 1, 32),
    ("D conv", 16, 32, 64),
    ("D conv", 8, 64, 128),
    ("G conv_transpose", 4, 128, 64),
    ("G conv_transpose", 8, 64, 32),
    ("G conv_transpose", 16, 32, 1),
)
LAYER_CALLS_PER_REP = 10


def available() -> bool:
    """Whether torch can be imported."""
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")


def _build(arch: str):
    """``(G, D, image_shape, optimiser kwargs)`` for ``arch``; modules are freshly initialised."""
    import torch
    from torch import nn

    _check_arch(arch)
    if arch == "fc":
        g = nn.Sequential(
            nn.Linear(LATENT, 32),
            nn.LeakyReLU(0.2),
            nn.Linear(32, 64),
            nn.LeakyReLU(0.2),
            nn.Linear(64, 128),
            nn.LeakyReLU(0.2),
            nn.Linear(128, 784),
            nn.Tanh(),
        )
        d = nn.Sequential(
            nn.Linear(784, 128),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.3),
            nn.Linear(128, 64),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.3),
            nn.Linear(64, 32),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.3),
            nn.Linear(32, 1),
        )
        for m in list(g.modules()) + list(d.modules()):
            if isinstance(
                m, nn.Linear
            ):  # weights keep PyTorch's uniform(+-1/sqrt(fan_in)); jaxgen zeroes biases
                nn.init.zeros_(m.bias)
        return g, d, (784,), dict(lr=2e-3)

    g = nn.Sequential(
        nn.Linear(LATENT, 4 * 4 * 128, bias=False),
        nn.BatchNorm1d(4 * 4 * 128),
        nn.ReLU(),
        nn.Unflatten(1, (128, 4, 4)),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.ConvTranspose2d(32, 1, 4, 2, 1, bias=True),
        nn.Tanh(),
    )
    d = nn.Sequential(
        nn.Conv2d(1, 32, 4, 2, 1, bias=True),
        nn.LeakyReLU(0.2),
        nn.Conv2d(32, 64, 4, 2, 1, bias=False),
        nn.BatchNorm2d(64),
        nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False),
        nn.BatchNorm2d(128),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 128, 1),
    )
    if arch == "cdcgan":
        g, d = _conditional(g, "g"), _conditional(d, "d")
    with torch.no_grad():
        for m in list(g.modules()) + list(d.modules()):
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 0.02)
    return g, d, (1, 32, 32), dict(lr=2e-4, betas=(0.5, 0.999))


def _conditional(net, which: str):
    """The conditional twin of a DCGAN network: G's first layer reads ``[z, one_hot(y)]``; D
    adds ``e_y . phi(x)`` (phi: the features before its last layer) to its logit."""
    import torch
    from torch import nn

    class Conditional(nn.Module):
        def __init__(self):
            super().__init__()
            if which == "g":
                first = net[0]
                net[0] = nn.Linear(LATENT + CLASSES, first.out_features, bias=False)
                self.body = net
            else:
                self.features, self.out = net[:-1], net[-1]
                self.embed = nn.Embedding(CLASSES, self.out.in_features)

        def forward(self, x, y):
            if which == "g":
                return self.body(torch.cat([x, nn.functional.one_hot(y, CLASSES).float()], 1))
            phi = self.features(x)
            return self.out(phi) + (self.embed(y) * phi).sum(1, keepdim=True)

    return Conditional()


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_counts(arch: str) -> tuple[int, int]:
    """``(generator, discriminator)`` trainable parameter counts (batch-norm scale and bias
    included)."""
    g, d, _, _ = _build(arch)
    return _count(g), _count(d)


def make_step(
    arch: str, batch: int, *, threads: int | None = None, seed: int = 0
) -> Callable[..., object]:
    """A closure running one full GAN train step on a fixed random real batch in [-1, 1].

    ``threads``: if given, ``torch.set_num_threads(threads)`` (process-wide). ``seed`` seeds the
    initialisation, the real batch and the per-step noise/dropout. ``step()`` returns ``None``;
    ``step(sync=True)`` returns ``(d_loss, g_loss)`` as Python floats.
    """
    import torch
    import torch.nn.functional as F

    _check_arch(arch)
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)  # initialisation, and later z and dropout masks
    g, d, image_shape, opt_kw = _build(arch)
    g.train()
    d.train()
    opt_g = torch.optim.Adam(g.parameters(), **opt_kw)
    opt_d = torch.optim.Adam(d.parameters(), **opt_kw)
    d_params = list(d.parameters())

    gen = torch.Generator().manual_seed(seed + 1)
    real = torch.rand((batch, *image_shape), generator=gen) * 2.0 - 1.0
    cond = arch == "cdcgan"
    y_real = torch.randint(0, CLASSES, (batch,), generator=gen)
    G = (lambda z, y: g(z, y)) if cond else (lambda z, y: g(z))
    D = (lambda x, y: d(x, y)) if cond else (lambda x, y: d(x))
    real_labels = torch.full((batch, 1), 0.9)
    fake_labels = torch.zeros((batch, 1))
    g_labels = torch.ones((batch, 1))

    def step(sync: bool = False):
        z = torch.randn(batch, LATENT)
        y_fake = torch.randint(0, CLASSES, (batch,)) if cond else None
        fake = G(z, y_fake)  # the step's only G forward: [B, 784] or [B, 1, 32, 32]

        opt_d.zero_grad(set_to_none=True)
        d_loss = F.binary_cross_entropy_with_logits(
            D(real, y_real), real_labels
        ) + F.binary_cross_entropy_with_logits(D(fake.detach(), y_fake), fake_labels)
        d_loss.backward()
        opt_d.step()

        opt_g.zero_grad(set_to_none=True)
        for p in d_params:  # G step: gradients through D's input only, no D weight gradients
            p.requires_grad_(False)
        g_loss = F.binary_cross_entropy_with_logits(D(fake, y_fake), g_labels)
        g_loss.backward()
        for p in d_params:
            p.requires_grad_(True)
        opt_g.step()

        if sync:
            return float(d_loss.item()), float(g_loss.item())
        return None

    return step


def time_step(
    arch: str, reps: int, *, batch: int | None = None, threads: int = 2, warmup: int = 3
) -> dict:
    """Seconds per train step: median (and all samples) of ``reps`` repetitions of
    ``STEPS_PER_REP`` steps."""
    import torch

    batch = batch or DEFAULT_BATCH[arch]
    n = STEPS_PER_REP[arch]
    step = make_step(arch, batch, threads=threads)
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        samples.append((time.perf_counter() - t0) / n)
    return {
        "arch": arch,
        "batch": batch,
        "s_per_step": statistics.median(samples),
        "samples_s": samples,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def time_layers(reps: int, *, batch: int = 128, threads: int = 2) -> dict:
    """Forward + input and weight gradients of each DCGAN convolution (PyTorch module), ms per
    call, medians."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rows = []
    for kind, size, c_in, c_out in DCGAN_LAYERS:
        mod = (torch.nn.Conv2d if kind == "D conv" else torch.nn.ConvTranspose2d)(
            c_in, c_out, 4, 2, 1, bias=False
        )
        xt = torch.randn(batch, c_in, size, size, requires_grad=True)

        def fb(mod=mod, xt=xt):
            for _ in range(LAYER_CALLS_PER_REP):
                y = mod(xt)
                (y * y).sum().backward()

        fb()
        fb()
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fb()
            samples.append((time.perf_counter() - t0) / LAYER_CALLS_PER_REP * 1e3)
        rows.append(
            {
                "layer": list((kind, size, c_in, c_out)),
                "ms": statistics.median(samples),
                "samples_ms": samples,
            }
        )
    return {
        "layers": rows,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "what", nargs="?", default="smoke", choices=("smoke", "time-step", "time-layers")
    )
    ap.add_argument("--arch", choices=ARCHS, default="fc")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if not available():
        raise SystemExit("torch is not installed")
    if args.what == "time-step":
        print(json.dumps(time_step(args.arch, args.reps, batch=args.batch, threads=args.threads)))
        return
    if args.what == "time-layers":
        print(json.dumps(time_layers(args.reps, threads=args.threads)))
        return
    for arch in ARCHS:
        g_n, d_n = param_counts(arch)
        want = EXPECTED_PARAMS[arch]
        print(
            f"{arch}: G {g_n:,} D {d_n:,} params (jaxgen: G {want[0]:,} D {want[1]:,})"
            f" {'OK' if (g_n, d_n) == want else 'MISMATCH'}"
        )
        step = make_step(arch, DEFAULT_BATCH[arch], threads=args.threads)
        for i in range(3):
            d_loss, g_loss = step(sync=True)
            print(f"  step {i}: d_loss {d_loss:.4f} g_loss {g_loss:.4f}")


if __name__ == "__main__":
    _main()
