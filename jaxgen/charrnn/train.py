"""Training the character-level LSTM: pure train step, evaluation, and the run loop.

The train state is a plain dict::

    {"params":    model parameters (see jaxgen.charrnn.model),
     "opt_state": optax state (global-norm clipping, Adam),
     "carries":   per-layer (h, c) [B, H] carried between batches (truncated BPTT),
     "step":      int32 [] global step,
     "key":       uint32 [2] raw PRNG key data; per step fold_in(key, step)}

so a checkpoint holds everything needed to continue exactly: the data order is
fixed, and the batch of step ``s`` is ``batches[s % num_batches]``.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgen.charrnn import data as textdata
from jaxgen.charrnn.config import KIND, _on_nonfinite, validate_config
from jaxgen.errors import UserError
from jaxgen.charrnn import model
from jaxgen.training import checkpoint as ckpt
from jaxgen.training import parallel
from jaxgen.training.metrics import RunLog, best_logged, global_norms, keep_if_finite
from jaxgen.training.preemption import StopOnSignal, not_started_message, stop_message



def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    t = cfg.train
    if t.lr_schedule == "constant":
        lr = t.lr
    elif t.lr_schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(0.0, t.lr, max(1, t.warmup_steps), max(t.warmup_steps + 1, total_steps),
                                                end_value=t.lr * t.final_lr_fraction)
    else:
        raise UserError(f"unknown train.lr_schedule {t.lr_schedule!r}; choose 'constant' or 'cosine'")
    return optax.chain(optax.clip_by_global_norm(t.clip), optax.adam(lr))


def init_state(cfg, vocab_size: int, tx: optax.GradientTransformation) -> dict:
    key = jax.random.key(cfg.seed)
    k_init, k_train = jax.random.split(key)
    params = model.init(k_init, vocab_size, cfg.model.hidden, cfg.model.layers, forget_bias=cfg.model.forget_bias)
    return {
        "params": params,
        "opt_state": tx.init(params),
        "carries": model.zero_carries(params, cfg.train.batch),
        "step": jnp.zeros((), jnp.int32),
        "key": jax.random.key_data(k_train),
    }


def train_step(state: dict, ids: jax.Array, targets: jax.Array, reset: jax.Array, *,
               tx: optax.GradientTransformation, dropout_rate: float, skip_nonfinite: bool = False):
    """One truncated-BPTT step on ``ids``/``targets`` ``[T, B]``; ``reset`` zeroes the carried state.

    Returns ``(new_state, metrics)``. Bind ``tx`` and ``dropout_rate`` with
    ``functools.partial`` and jit with ``donate_argnums=0``.
    """
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    carries = jax.tree.map(lambda c: jnp.where(reset, jnp.zeros_like(c), c), state["carries"])
    carries = jax.lax.stop_gradient(carries)  # truncated BPTT: no gradient across batches

    def loss_fn(params):
        return model.loss(params, ids, targets, carries, dropout_rate=dropout_rate, key=key)

    (loss, carries), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {"loss": loss, **global_norms(grads, state["params"], updates)}
    new_state = {**state, "params": params, "opt_state": opt_state, "carries": carries, "step": state["step"] + 1}
    if skip_nonfinite:  # a non-finite loss leaves the state as it was (and is counted in metrics)
        new_state, metrics["skipped"] = keep_if_finite(state, new_state, loss)
    return new_state, metrics


@jax.jit
def eval_step(params, carries, ids, targets):
    """Summed cross-entropy (nats) over a batch, no dropout, carrying the state."""
    carries, logits = model.apply(params, ids, carries)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).sum(), carries


def evaluate(params, batches: textdata.CharBatches) -> float:
    """Mean validation loss in nats per character over the whole validation stream."""
    carries = model.zero_carries(params, batches.batch)
    total, count = 0.0, 0
    for k in range(len(batches)):
        x, y = batches[k]
        s, carries = eval_step(params, carries, x, y)
        total += float(s)
        count += x.size
    return total / count


def prepare_data(cfg, vocab: textdata.Vocab | None = None):
    corpus = textdata.load_corpus(cfg.data.source, cfg.data.path, cfg.data.tfds_name)
    if vocab is None:
        vocab = textdata.Vocab.from_text(corpus)
    ids = vocab.encode(corpus)
    train_ids, val_ids = textdata.split_corpus(ids, cfg.data.val_fraction)
    train = textdata.CharBatches(train_ids, cfg.train.batch, cfg.train.seq_len, name="training")
    # The validation split may be shorter than a training batch: use fewer rows.
    val_batch = min(cfg.train.batch, max(1, (len(val_ids) - 1) // (cfg.train.seq_len + 1)))
    val = textdata.CharBatches(val_ids, val_batch, cfg.train.seq_len, name="validation")
    return vocab, train, val


def total_steps(cfg, train: textdata.CharBatches) -> int:
    return cfg.train.steps if cfg.train.steps > 0 else cfg.train.epochs * len(train)


def train(cfg: ml_collections.ConfigDict, workdir: str | Path, *, quiet: bool = False,
          stop: StopOnSignal | None = None) -> dict:
    """Train (or resume) a char-RNN in ``workdir``; returns a summary dict.

    SIGTERM and Ctrl-C stop the run after the current step with a checkpoint at that step
    (``summary["stopped"]`` says why). Pass ``stop`` when the signal handlers must be in place
    before this call (the CLI installs them before the heavy imports)."""
    if stop is not None:
        return _run(cfg, workdir, quiet=quiet, stop=stop)
    with StopOnSignal() as stop:
        return _run(cfg, workdir, quiet=quiet, stop=stop)


def _run(cfg: ml_collections.ConfigDict, workdir: str | Path, *, quiet: bool, stop: StopOnSignal) -> dict:
    validate_config(cfg)
    workdir = Path(workdir)
    meta = ckpt.check_workdir_kind(workdir, KIND)
    vocab = None
    if meta is not None:
        vocab = textdata.Vocab.from_json(meta["vocab"])
        old = meta["config"]["model"]
        for k in ("hidden", "layers"):
            if old[k] != cfg.model[k]:
                raise UserError(f"workdir {str(workdir)!r} holds a model with model.{k}={old[k]}, but the config "
                                f"says {cfg.model[k]}; use the same config to resume, or a new --workdir")
    vocab, train_b, val_b = prepare_data(cfg, vocab)
    steps = total_steps(cfg, train_b)
    tx = make_optimizer(cfg, steps)
    state = init_state(cfg, len(vocab), tx)
    if meta is not None:  # before anything is written: a refused resume leaves the workdir as it was
        ckpt.check_resumable(workdir, ckpt.abstract(state), meta.get("config"), cfg.to_dict())

    workdir.mkdir(parents=True, exist_ok=True)
    ckpts = ckpt.Checkpoints(workdir)
    start = 0
    restored = ckpts.restore(ckpt.abstract(state)) if meta is not None else None
    if restored is not None:
        start, state = restored
    if jax.process_index() == 0:
        ckpt.write_json_atomic(workdir / ckpt.META, {"model": KIND, "config": cfg.to_dict(), "vocab": vocab.to_json()})
    log = RunLog(workdir, steps, quiet=quiet, time_budget_s=cfg.train.time_budget_s)
    best = best_logged(workdir, "val_loss")
    tokens = cfg.train.batch * cfg.train.seq_len
    log.message(f"char-rnn: {len(vocab)} characters, {train_b.rows.size:,} training / {val_b.rows.size:,} validation "
                f"ids, {len(train_b)} batches per epoch, steps {start} -> {steps}"
                + (f" (resumed from step {start})" if start else ""))

    skip = _on_nonfinite(cfg) == "skip"
    step = functools.partial(train_step, tx=tx, dropout_rate=cfg.model.dropout, skip_nonfinite=skip)
    mesh = None
    if cfg.parallel.data_parallel and jax.device_count() > 1:
        mesh = parallel.make_mesh()
        parallel.check_batch(cfg.train.batch, mesh)
        step_fn, state = parallel.jit_data_parallel(step, mesh, state, (2, 2, 0), (1, 1, None))
        rows = parallel.local_rows(cfg.train.batch)
        log.message(f"data parallel over {mesh.devices.size} devices ({jax.process_count()} processes); global batch "
                    f"{cfg.train.batch}")
    else:
        step_fn = jax.jit(step, donate_argnums=0)
    last_saved = start
    t_start = time.perf_counter()
    rate = 0.0
    val_loss = None
    stopped = None
    if stop.requested:  # a signal during set-up: stop before compiling anything
        log.message(not_started_message(stop.reason))
        log.close()
        ckpts.close()
        return {"steps": steps, "start": start, "val_loss": None, "best_val_loss": best, "tokens_per_s": 0.0,
                "wall_s": 0.0, "stopped": stop.reason}
    try:
        for step in range(start, steps):
            _, k = train_b.position(step)
            x, y = train_b[k]
            t0 = time.perf_counter()
            if mesh is not None:  # time-major [T, B]: this process's columns of the global batch
                x = parallel.global_batch(mesh, x[:, rows], x.shape, batch_axis=1)
                y = parallel.global_batch(mesh, y[:, rows], y.shape, batch_axis=1)
            state, metrics = step_fn(state, x, y, jnp.asarray(k == 0))
            loss = float(metrics["loss"])  # blocks: steps are long enough that this costs nothing
            if not math.isfinite(loss) and skip:
                log.message(f"step {step + 1}: loss {loss}; update skipped (train.on_nonfinite='skip')")
            elif not math.isfinite(loss):
                raise UserError(
                    f"the training loss became {loss} at step {step + 1}; stopped without saving it. The last good "
                    f"checkpoint (step {last_saved}) is kept in {str(workdir)!r}. Lower --config.train.lr or "
                    "--config.train.clip and resume"
                )
            dt = time.perf_counter() - t0
            if step > start:  # the first step includes compilation
                rate = tokens / dt if rate == 0.0 else 0.9 * rate + 0.1 * tokens / dt
            done = step + 1
            if done % cfg.train.log_every == 0 or done == steps:
                log.write(done, {**metrics, "tokens_per_s": rate})
            log.progress(done, loss, rate, (steps - done) * tokens / max(rate, 1e-9),
                         elapsed_s=time.perf_counter() - t_start)
            out_of_time = bool(cfg.train.time_budget_s) and time.perf_counter() - t_start >= cfg.train.time_budget_s
            preempted = stop.should_stop(done, ckpts.latest)
            if out_of_time or preempted:
                stopped = (stop.reason or "preempted") if preempted else "budget"
            out_of_time = out_of_time or preempted
            if done % cfg.train.eval_every == 0 or done == steps or (out_of_time and not preempted):
                val_loss = evaluate(state["params"], val_b)
                improved = best is None or val_loss < best
                if improved:
                    best = val_loss
                    ckpts.save(done, state, best=True)
                log.write(done, {"val_loss": val_loss, "val_bpc": val_loss / math.log(2)})
                log.message(f"step {done}: validation loss {val_loss:.4f} nats/char ({val_loss / math.log(2):.3f} "
                            f"bits/char), best {best:.4f}, {time.perf_counter() - t_start:.0f}s")
            if done % cfg.train.checkpoint_every == 0 or done == steps or out_of_time:
                ckpts.save(done, state)
                last_saved = done
            if out_of_time:
                log.message(stop_message(done, stopped if preempted else None, cfg.train.time_budget_s, workdir))
                break
    finally:
        log.close()
        ckpts.close()
    return {"steps": steps, "start": start, "val_loss": val_loss, "best_val_loss": best,
            "tokens_per_s": rate, "wall_s": time.perf_counter() - t_start, "stopped": stopped}
