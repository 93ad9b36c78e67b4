"""Image grids and training curves (PNG), written atomically (:mod:`jaxgen.training.io`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxgen.training.io import write_atomic


def save_image_file(figure_or_image, path: Path, **save_kw) -> None:
    """A PIL image or a matplotlib figure to ``path``, atomically, in the format its suffix names
    (the temporary file's name has no image suffix, so the format is passed explicitly)."""
    suffix = path.suffix.lower()
    if hasattr(figure_or_image, "savefig"):
        fmt = suffix[1:]
        write_atomic(path, lambda f: figure_or_image.savefig(f, format=fmt, **save_kw))
        return
    from PIL import Image

    fmt = Image.registered_extensions().get(suffix)
    if fmt is None:
        raise ValueError(f"unknown image file extension {suffix!r} in {str(path)!r}")
    write_atomic(path, lambda f: figure_or_image.save(f, format=fmt, **save_kw))


def grid_array(images: np.ndarray, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """``[N, H, W, C]`` in [-1, 1] -> one uint8 ``[rows*(H+pad)+pad, ncol*(W+pad)+pad, C]``
    mosaic."""
    x = np.asarray(images, np.float32)
    n, h, w, c = x.shape
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
    u8 = ((np.clip(x, -1, 1) + 1.0) * 127.5).round().astype(np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        out[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + q * (w + pad) : pad + q * (w + pad) + w,
        ] = u8[i]
    return out


def save_grid(
    images: np.ndarray, path: str | Path, ncol: int | None = None, scale: int = 2, pad: int = 2
) -> None:
    """A grid PNG of ``[N, H, W, C]`` images in [-1, 1], each pixel drawn ``scale`` times
    (one image with ``scale=1, pad=0`` is that image as a PNG)."""
    from PIL import Image

    g = grid_array(images, ncol, pad)
    g = g[..., 0] if g.shape[-1] == 1 else g
    img = Image.fromarray(g)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    save_image_file(img, Path(path))


def save_progress(
    history: list[tuple[int, np.ndarray]], path: str | Path, rows: int = 10, scale: int = 2
) -> None:
    """One image of training progress: up to ``rows`` snapshots (evenly spaced), one row each.

    ``history`` is ``[(step, images [K, H, W, C]), ...]`` of the same fixed latent batch over
    training.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    idx = np.unique(np.linspace(0, len(history) - 1, min(rows, len(history))).round().astype(int))
    sel = [history[i] for i in idx]
    fig, axes = plt.subplots(len(sel), 1, figsize=(8, 0.9 * len(sel) + 0.3), squeeze=False)
    for ax, (step, ims) in zip(axes[:, 0], sel):
        g = grid_array(ims, ncol=len(ims))
        ax.imshow(g[..., 0] if g.shape[-1] == 1 else g, cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_ylabel(f"{step}", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("fixed latents over training (left: step)", fontsize=9)
    fig.tight_layout()
    save_image_file(fig, Path(path), dpi=100)
    plt.close(fig)


def save_loss_curves(
    metrics_jsonl: str | Path, path: str | Path, keys=("d_loss", "g_loss")
) -> None:
    """Loss curves PNG from a run's ``metrics.jsonl`` (with the quality metrics, when logged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for line in Path(metrics_jsonl).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    series = {k: [(r["step"], r[k]) for r in rows if k in r] for k in keys}
    quality = [(r["step"], r["fid"]) for r in rows if "fid" in r]
    fig, axes = plt.subplots(
        1, 2 if quality else 1, figsize=(10 if quality else 6, 3.5), squeeze=False
    )
    ax = axes[0, 0]
    for k, pts in series.items():
        if pts:
            s, v = zip(*pts)
            ax.plot(s, v, label=k, lw=0.8)
    ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.legend(), ax.set_title("GAN losses")
    if quality:
        s, v = zip(*quality)
        axes[0, 1].plot(s, v, "o-", ms=3)
        (
            axes[0, 1].set_xlabel("step"),
            axes[0, 1].set_ylabel("Frechet distance (classifier features)"),
        )
        axes[0, 1].set_yscale("log"), axes[0, 1].set_title("sample quality (lower is better)")
    fig.tight_layout()
    save_image_file(fig, Path(path), dpi=100)
    plt.close(fig)
