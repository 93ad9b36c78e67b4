"""Sampling a trained GAN: which generator parameters, batch-norm recalibration, batched generation,
and loading a generator from a workdir."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxgen.errors import UserError
from jaxgen.gan import models
from jaxgen.gan.models import GanModel
from jaxgen.gan.step import init_state, make_optimizers
from jaxgen.training import checkpoint as ckpt
from jaxgen.gan.config import KIND

def generator_params(state: dict) -> tuple[Any, Any]:
    """The generator parameters and batch-norm statistics used for sampling (EMA when kept)."""
    return state.get("ema", state["params"]["g"]), state["stats"]["g"]


@functools.partial(jax.jit, static_argnames=("model", "num", "dist", "chunk"))
def recalibrate(model: GanModel, g_params, g_stats, key, *, num: int = 16384, dist: str = "normal",
                chunk: int = 2048):
    """Batch-norm statistics of ``g_params`` measured on ``num`` fresh latents. An averaged (EMA)
    generator's weights never produced the running statistics of the training run, so they are
    re-estimated before sampling. No-op for models without batch norm.

    The latents pass in chunks of ``chunk`` (train-mode batch norm within each chunk, so memory is
    that of one chunk); each layer's statistics are pooled over the chunks: the mean of the chunk
    means, and the mean of the chunk variances plus the variance of the chunk means. 16,384
    latents rather than 2,048 raised the DCGAN's classifier score by 0.023-0.027 and lowered its
    Frechet distance for each of three sample seeds (`README.md`, GAN results)."""
    if not jax.tree.leaves(g_stats):
        return g_stats
    if num % chunk:
        raise ValueError(f"recalibrate: num ({num}) must be a multiple of chunk ({chunk})")
    z = models.sample_latent(key, num, model.latent, dist).reshape(num // chunk, chunk, model.latent)
    per_chunk = jax.lax.map(lambda zc: model.generate(g_params, g_stats, zc, train=True, key=None,
                                                      bn_momentum=0.0)[1], z)

    def pool(layer):
        mean = layer["mean"].mean(0)
        return {"mean": mean, "var": layer["var"].mean(0) + ((layer["mean"] - mean) ** 2).mean(0)}

    return {name: pool(layer) for name, layer in per_chunk.items()}


@functools.partial(jax.jit, static_argnames=("model",))
def _generate_eval(model: GanModel, g_params, g_stats, z):
    images, _ = model.generate(g_params, g_stats, z, train=False)
    return models.crop(model, images)


def generate(model: GanModel, g_params, g_stats, key, num: int, *, dist: str = "normal",
             batch: int = 500) -> np.ndarray:
    """``num`` images ``[num, H, W, C]`` float32 in [-1, 1] (cropped to the data's shape), in batches
    of ``batch`` (one compilation)."""
    out = []
    for i in range(0, num, batch):
        z = models.sample_latent(jax.random.fold_in(key, i // batch), batch, model.latent, dist)
        out.append(np.asarray(_generate_eval(model, g_params, g_stats, z)))
    return np.concatenate(out)[:num].astype(np.float32)


def load_generator(workdir: str | Path, which: str = "best"):
    """``(model, g_params, g_stats, cfg)`` of a trained GAN, ready for :func:`generate`.

    ``which="best"`` takes the checkpoint with the best sample quality when the run kept one, else the
    latest. The averaged generator is used when the run kept one, with its statistics recalibrated.
    """
    workdir = Path(workdir)
    meta = ckpt.read_meta(workdir)
    if meta is None:
        raise UserError(f"{str(workdir)!r} holds no trained model (no {ckpt.META}); train one with `jaxgen train`")
    if meta.get("model") != KIND:
        raise UserError(f"workdir {str(workdir)!r} holds a {meta.get('model')!r} model, not a GAN")
    cfg = ml_collections.ConfigDict(meta["config"])
    model = models.build(cfg.model)
    tx_g, tx_d = make_optimizers(cfg)
    template = init_state(model, cfg.seed, tx_g, tx_d, ema=cfg.train.ema_decay > 0)
    ckpts = ckpt.Checkpoints(workdir)
    try:
        for w in ([which, "latest"] if which == "best" else ["latest"]):
            got = ckpts.restore(ckpt.abstract(template), which=w)
            if got is not None:
                state = got[1]
                gp, gs = generator_params(state)
                if "ema" in state:
                    gs = recalibrate(model, gp, gs, jax.random.fold_in(jax.random.key(cfg.seed), 2),
                                     dist=cfg.model.latent_dist)
                return model, gp, gs, cfg
    finally:
        ckpts.close()
    raise UserError(f"no checkpoint could be restored from {str(workdir)!r}; train (or resume) with `jaxgen train`")
