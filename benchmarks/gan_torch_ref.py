"""PyTorch twins of jaxgen's two GANs, for a side-by-side train-step speed comparison.

torch is not a dependency of jaxgen; everything here imports it lazily and ``available()`` says
whether it is installed. The networks match ``jaxgen.models.gan`` layer for layer (same parameter
counts, batch-norm scale and bias counted as parameters):

* ``fc``    G 114,800 / D 110,849 parameters; 28x28x1 images flattened to 784; batch 64;
            Adam lr 2e-3. Weights uniform(+-1/sqrt(fan_in)) (PyTorch's default, jaxgen's
            ``init_std=None``), biases zero.
* ``dcgan`` G 373,441 / D 166,817 parameters; 32x32x1 images, NCHW; batch 128;
            Adam lr 2e-4, betas (0.5, 0.999). Weights N(0, 0.02), biases zero,
            batch-norm scale one and bias zero.

One train step, the same as jaxgen's: z ~ N(0, 1) ``[B, 100]``; ``fake = G(z)`` once;
D step on ``BCE(D(real), 0.9) + BCE(D(fake.detach()), 0)`` with real and fake through D separately
(separate batch-norm batches); G step on ``BCE(D(fake), 1)`` against the updated D, reusing the same
``fake`` graph (no second G forward).

    step = make_step("dcgan", 128, threads=2)
    step()                       # one train step, nothing returned (no .item() in the timed path)
    d_loss, g_loss = step(sync=True)

    python benchmarks/gan_torch_ref.py   # smoke check: parameter counts and 3 steps of each
"""

from __future__ import annotations

from typing import Callable

LATENT = 100
ARCHS = ("fc", "dcgan")
DEFAULT_BATCH = {"fc": 64, "dcgan": 128}
EXPECTED_PARAMS = {"fc": (114_800, 110_849), "dcgan": (373_441, 166_817)}


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
            nn.Linear(LATENT, 32), nn.LeakyReLU(0.2),
            nn.Linear(32, 64), nn.LeakyReLU(0.2),
            nn.Linear(64, 128), nn.LeakyReLU(0.2),
            nn.Linear(128, 784), nn.Tanh(),
        )
        d = nn.Sequential(
            nn.Linear(784, 128), nn.LeakyReLU(0.2), nn.Dropout(0.3),
            nn.Linear(128, 64), nn.LeakyReLU(0.2), nn.Dropout(0.3),
            nn.Linear(64, 32), nn.LeakyReLU(0.2), nn.Dropout(0.3),
            nn.Linear(32, 1),
        )
        for m in list(g.modules()) + list(d.modules()):
            if isinstance(m, nn.Linear):  # weights keep PyTorch's uniform(+-1/sqrt(fan_in)); jaxgen zeroes biases
                nn.init.zeros_(m.bias)
        return g, d, (784,), dict(lr=2e-3)

    g = nn.Sequential(
        nn.Linear(LATENT, 4 * 4 * 128, bias=False), nn.BatchNorm1d(4 * 4 * 128), nn.ReLU(),
        nn.Unflatten(1, (128, 4, 4)),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.ConvTranspose2d(32, 1, 4, 2, 1, bias=True), nn.Tanh(),
    )
    d = nn.Sequential(
        nn.Conv2d(1, 32, 4, 2, 1, bias=True), nn.LeakyReLU(0.2),
        nn.Conv2d(32, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 128, 1),
    )
    with torch.no_grad():
        for m in list(g.modules()) + list(d.modules()):
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    return g, d, (1, 32, 32), dict(lr=2e-4, betas=(0.5, 0.999))


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_counts(arch: str) -> tuple[int, int]:
    """``(generator, discriminator)`` trainable parameter counts (batch-norm scale and bias included)."""
    g, d, _, _ = _build(arch)
    return _count(g), _count(d)


def make_step(arch: str, batch: int, *, threads: int | None = None, seed: int = 0) -> Callable[..., object]:
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

    gen = torch.Generator().manual_seed(seed + 1)
    real = torch.rand((batch, *image_shape), generator=gen) * 2.0 - 1.0
    real_labels = torch.full((batch, 1), 0.9)
    fake_labels = torch.zeros((batch, 1))
    g_labels = torch.ones((batch, 1))

    def step(sync: bool = False):
        z = torch.randn(batch, LATENT)
        fake = g(z)  # the step's only G forward: [B, 784] or [B, 1, 32, 32]

        opt_d.zero_grad(set_to_none=True)
        d_loss = (F.binary_cross_entropy_with_logits(d(real), real_labels)
                  + F.binary_cross_entropy_with_logits(d(fake.detach()), fake_labels))
        d_loss.backward()
        opt_d.step()

        opt_g.zero_grad(set_to_none=True)
        g_loss = F.binary_cross_entropy_with_logits(d(fake), g_labels)
        g_loss.backward()  # also fills D's grads; zeroed at the next D step
        opt_g.step()

        if sync:
            return float(d_loss.item()), float(g_loss.item())
        return None

    return step


if __name__ == "__main__":
    if not available():
        raise SystemExit("torch is not installed")
    for arch in ARCHS:
        g_n, d_n = param_counts(arch)
        want = EXPECTED_PARAMS[arch]
        print(f"{arch}: G {g_n:,} D {d_n:,} params (jaxgen: G {want[0]:,} D {want[1]:,})"
              f" {'OK' if (g_n, d_n) == want else 'MISMATCH'}")
        step = make_step(arch, DEFAULT_BATCH[arch], threads=2)
        for i in range(3):
            d_loss, g_loss = step(sync=True)
            print(f"  step {i}: d_loss {d_loss:.4f} g_loss {g_loss:.4f}")
