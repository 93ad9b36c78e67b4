"""Training the character-level LSTM: the train state, the pure step, evaluation, and the recipe
that :func:`jaxgen.training.loop.run` runs.

A checkpoint holds everything needed to continue exactly: the data order is fixed (the batch of
step ``s`` is window ``s % num_windows`` of the id stream) and the step's dropout key is
``fold_in(key, step)``.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from ml_collections import ConfigDict

from jaxgen.charrnn import data, model
from jaxgen.charrnn.config import KIND, _on_nonfinite, validate_config
from jaxgen.errors import UserError
from jaxgen.training import loop
from jaxgen.training.metrics import global_norms, keep_if_finite
from jaxgen.training.preemption import StopOnSignal


class TrainState(NamedTuple):
    """The char-RNN train state (a pytree; orbax saves it field by field)."""

    params: dict  # model parameters (jaxgen.charrnn.model)
    opt_state: Any  # optax state (global-norm clipping, Adam)
    carries: list  # per-layer (h, c) [B, H] carried between batches (truncated BPTT)
    step: jax.Array  # int32 [] global step
    key: jax.Array  # uint32 [2] raw PRNG key data; step s uses fold_in(key, s)


def make_optimizer(
    cfg: ml_collections.ConfigDict, total_steps: int
) -> optax.GradientTransformation:
    """Global-norm clipping, then Adam at ``train.lr``: constant, or warmup + cosine decay to
    ``lr * train.final_lr_fraction`` at ``total_steps``; with ``train.weight_decay`` > 0, AdamW
    (decoupled decay of the matrices only: biases, gains and LayerNorms are left alone). Equal
    settings give the same object, so a step jitted with it is reused (see ``training.loop``)
    instead of traced again."""
    t = cfg.train
    if t.lr_schedule not in ("constant", "cosine"):
        raise UserError(
            f"unknown config.train.lr_schedule {t.lr_schedule!r}; choose 'constant' or 'cosine'"
        )
    cosine = t.lr_schedule == "cosine"
    return _optimizer(
        float(t.lr),
        float(t.clip),
        (int(t.warmup_steps), int(total_steps), float(t.final_lr_fraction)) if cosine else None,
        float(t.get("weight_decay", 0.0)),
    )


def _is_matrix(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


@functools.lru_cache(maxsize=16)
def _optimizer(
    lr: float, clip: float, cosine: tuple | None, weight_decay: float = 0.0
) -> optax.GradientTransformation:
    if cosine is not None:
        warmup, total_steps, final = cosine
        lr = optax.warmup_cosine_decay_schedule(
            0.0, lr, max(1, warmup), max(warmup + 1, total_steps), end_value=lr * final
        )
    if weight_decay == 0.0:  # plain Adam: the optimizer state checkpoints have always held
        return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr))
    adamw = optax.adamw(lr, weight_decay=weight_decay, mask=_is_matrix)
    return optax.chain(optax.clip_by_global_norm(clip), adamw)


def init_state(cfg, vocab_size: int, tx: optax.GradientTransformation) -> TrainState:
    k_init, k_train = jax.random.split(jax.random.key(cfg.seed))
    params = model.init(
        k_init,
        vocab_size,
        cfg.model.hidden,
        cfg.model.layers,
        forget_bias=cfg.model.forget_bias,
        cell=cfg.model.get("cell", "lstm"),
        mlp_ratio=cfg.model.get("mlp_ratio", 4),
        conv=cfg.model.get("conv", 0),
    )
    return TrainState(
        params=params,
        opt_state=tx.init(params),
        carries=model.zero_carries(params, cfg.train.batch),
        step=jnp.zeros((), jnp.int32),
        key=jax.random.key_data(k_train),
    )


def train_step(
    state: TrainState,
    ids: jax.Array,
    targets: jax.Array,
    reset: jax.Array,
    *,
    tx: optax.GradientTransformation,
    dropout_rate: float,
    skip_nonfinite: bool = False,
) -> tuple[TrainState, dict]:
    """One truncated-BPTT step on ``ids``/``targets`` ``[T, B]``; ``reset`` zeroes the carries.

    Returns ``(new_state, metrics)``. Bind ``tx`` and ``dropout_rate`` with
    ``functools.partial`` and jit with ``donate_argnums=0``.
    """
    chex.assert_rank(ids, 2)  # time-major [T, B]
    chex.assert_equal_shape([ids, targets])
    chex.assert_shape(reset, ())
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    carries = jax.tree.map(lambda c: jnp.where(reset, jnp.zeros_like(c), c), state.carries)
    carries = jax.lax.stop_gradient(carries)  # truncated BPTT: no gradient across batches

    def loss_fn(params):
        return model.loss(params, ids, targets, carries, dropout_rate=dropout_rate, key=key)

    (loss, carries), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, **global_norms(grads, state.params, updates)}
    new_state = TrainState(params, opt_state, carries, state.step + 1, state.key)
    if skip_nonfinite:  # a non-finite loss leaves the state as it was (and is counted in metrics)
        new_state, metrics["skipped"] = keep_if_finite(state, new_state, loss)
    return new_state, metrics


@jax.jit
def eval_step(params, carries, ids, targets):
    """Summed cross-entropy (nats) over a batch, no dropout, carrying the state."""
    carries, logits = model.apply(params, ids, carries)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).sum(), carries


@jax.jit
def _eval_stream(params, xs, ys):
    """Mean cross-entropy over stacked windows ``xs``, ``ys`` ``[W, T, B]``: one compiled scan
    over the windows, carrying the state from each window to the next."""

    def body(carries, window):
        total, carries = eval_step(params, carries, *window)
        return carries, total

    _, totals = jax.lax.scan(body, model.zero_carries(params, xs.shape[2]), (xs, ys))
    return totals.sum() / xs.size


def evaluate(params, batches: data.CharBatches) -> float:
    """Mean validation loss in nats per character over the whole validation stream (all its
    windows in one compiled pass; the state is carried along each row)."""
    return float(_eval_stream(params, *batches.stacked()))


def prepare_data(cfg, vocab: data.Vocab | None = None):
    """``(vocab, train_batches, val_batches)``; ``vocab`` from the corpus unless given (resume)."""
    corpus = data.load_corpus(cfg.data.source, cfg.data.path, cfg.data.tfds_name)
    if vocab is None:
        vocab = data.Vocab.from_text(corpus)
    ids = vocab.encode(corpus)
    train_ids, val_ids = data.split_corpus(ids, cfg.data.val_fraction)
    train = data.CharBatches(train_ids, cfg.train.batch, cfg.train.seq_len, name="training")
    # train.eval_batch rows (more rows: fewer, larger steps; the loss changes by the context
    # lost at each row's start); a short validation split gets fewer rows.
    rows = int(cfg.train.get("eval_batch", cfg.train.batch))
    val_batch = min(rows, max(1, (len(val_ids) - 1) // (cfg.train.seq_len + 1)))
    val = data.CharBatches(val_ids, val_batch, cfg.train.seq_len, name="validation")
    return vocab, train, val


def total_steps(cfg, train: data.CharBatches) -> int:
    return cfg.train.steps if cfg.train.steps > 0 else cfg.train.epochs * len(train)


def recipe(cfg: ml_collections.ConfigDict, workdir: str | Path) -> loop.Recipe:
    """The char-RNN as a :class:`jaxgen.training.loop.Recipe` (reads the workdir's vocabulary
    when it resumes, so the ids mean the same characters)."""
    from jaxgen.training import checkpoint

    validate_config(cfg)
    meta = checkpoint.check_workdir_kind(workdir, KIND)
    vocab = None
    if meta is not None:
        vocab = data.Vocab.from_json(meta["vocab"])
        old = meta["config"]["model"]
        for k in ("hidden", "layers"):
            if old[k] != cfg.model[k]:
                raise UserError(
                    f"workdir {str(workdir)!r} holds a model with config.model.{k}={old[k]}, but "
                    f"the config says {cfg.model[k]}; "
                    "use the same config to resume, or a new workdir"
                )
        old_wd = float(meta["config"]["train"].get("weight_decay", 0.0))
        new_wd = float(cfg.train.get("weight_decay", 0.0))
        if (old_wd == 0.0) != (new_wd == 0.0):  # Adam's and AdamW's states differ in shape
            raise UserError(
                f"workdir {str(workdir)!r} was trained with config.train.weight_decay={old_wd} "
                f"({'plain Adam' if old_wd == 0.0 else 'AdamW'}), but the config says {new_wd}; "
                f"resume with --config.train.weight_decay={old_wd}, or use a new workdir"
            )
        if "eval_batch" not in meta["config"]["train"]:
            # Written before train.eval_batch, when validation used train.batch rows: keep
            # that, so the validation losses before and after the resume compare.
            cfg = ConfigDict(cfg.to_dict())
            cfg.train.eval_batch = cfg.train.batch
    vocab, train_b, val_b = prepare_data(cfg, vocab)
    steps = total_steps(cfg, train_b)
    skip = _on_nonfinite(cfg) == "skip"

    def make_step(horizon: int):
        return functools.partial(
            train_step,
            tx=make_optimizer(cfg, horizon),
            dropout_rate=cfg.model.dropout,
            skip_nonfinite=skip,
        )

    def batch(step: int) -> tuple:
        _, window = train_b.position(step)
        x, y = train_b.window(window)
        return x, y, np.asarray(window == 0)

    def evaluation(step: int, state: TrainState) -> loop.Evaluation:
        start = time.perf_counter()
        val_loss = evaluate(state.params, val_b)
        seconds = time.perf_counter() - start
        bits = val_loss / math.log(2)
        return loop.Evaluation(
            val_loss,
            {"val_loss": val_loss, "val_bpc": bits, "val_seconds": seconds},
            f"step {step}: validation loss {val_loss:.4f} nats/char ({bits:.3f} bits/char), "
            f"best {{best:.4f}}, {{elapsed:.0f}}s (validation {seconds:.1f}s)",
        )

    return loop.Recipe(
        kind=KIND,
        cfg=cfg,
        meta={"vocab": vocab.to_json()},
        total_steps=steps,
        init_state=lambda: init_state(cfg, len(vocab), make_optimizer(cfg, steps)),
        make_step=make_step,
        batch=batch,
        batch_axes=(1, 1, None),
        items_per_step=cfg.train.batch * cfg.train.seq_len,
        unit="tok",
        loss_keys=("loss",),
        describe=(
            f"char-rnn: {len(vocab)} characters, {train_b.rows.size:,} training / "
            f"{val_b.rows.size:,} validation ids, {len(train_b)} batches per epoch"
        ),
        nonfinite_advice="Lower config.train.lr or config.train.clip",
        evaluate=evaluation,
        eval_every=cfg.train.eval_every,
        best_key="val_loss",
        fits_schedule=cfg.train.lr_schedule != "constant" and cfg.train.get("budget_fit", True),
    )


def train(cfg: ConfigDict, workdir: str | Path, *, quiet=False, stop: StopOnSignal = None) -> dict:
    """Train (or resume) a char-RNN in ``workdir``; returns a summary dict (``steps`` reached,
    ``start``, ``val_loss``, ``best_val_loss``, ``tokens_per_s``, ``wall_s``, ``stopped``)."""
    s = loop.run(recipe(cfg, workdir), workdir, quiet=quiet, stop=stop)
    return {
        "steps": s.steps,
        "start": s.start,
        "val_loss": s.last_eval.get("val_loss"),
        "best_val_loss": s.best,
        "tokens_per_s": s.rate,
        "wall_s": s.wall_s,
        "stopped": s.stopped,
        "horizon": s.horizon,
    }
