"""The training core (jaxgen.training.loop): periodic actions, and schedules fitted to the time
budget."""

import math

import optax
import pytest

from jaxgen import charrnn, gan
from jaxgen.training import loop
from tests.test_charrnn import tiny_cfg


def test_itstime_fires_at_multiples_and_at_the_end():
    assert [s for s in range(1, 11) if loop.itstime(s, 4, 10)] == [4, 8, 10]
    assert [s for s in range(1, 11) if loop.itstime(s, 0, 10)] == [10]  # every <= 0: only the end
    assert [s for s in range(1, 7) if loop.itstime(s, 1, 6)] == [1, 2, 3, 4, 5, 6]


def test_steps_that_fit_by_hand():
    # 100 s budget, 20 s gone, a recompile of 5 s: 75 s at 4 steps/s = 300 more steps
    assert loop.steps_that_fit(50, 4.0, 100.0, 20.0, 5.0) == 350
    assert loop.steps_that_fit(50, 4.0, 100.0, 120.0, 5.0) == 50  # past the budget: none more


def test_gan_decay_fitted_to_a_shorter_run_ends_with_it():
    cfg = gan.config.default_config()
    cfg.train.lr_decay_start, cfg.train.lr_decay_steps, cfg.train.lr_final = 400, 600, 0.0
    full = gan.step.lr_schedule(1.0, cfg)
    half = gan.step.lr_schedule(1.0, cfg, fit=0.5)  # the budget fits 500 of the 1,000 steps
    assert float(full(400)) == 1.0 and float(full(1000)) == 0.0
    assert float(half(200)) == 1.0 and float(half(350)) == pytest.approx(0.5)
    assert float(half(500)) == 0.0
    assert gan.step.lr_schedule(1.0, cfg, fit=1.0)(700) == full(700)  # fit 1: unchanged


def test_budgeted_run_fits_the_cosine_schedule_to_the_steps_that_fit(
    corpus, tmp_path, monkeypatch, capsys
):
    """A budget far shorter than the planned steps: the loop measures the rate after warm-up,
    rebuilds the step for the steps that fit (its cosine then ends at the fitted step, at the
    floor), logs the decision, and the run ends there."""
    # fits 0.3 s after the first step and at half the budget; the budget also pays the first
    # compilation, so it leaves room for a slow one on a busy machine
    monkeypatch.setattr(loop, "FIT_MIN_S", 0.3)
    cfg = tiny_cfg(
        steps=1_000_000,
        lr_schedule="cosine",
        warmup_steps=2,
        time_budget_s=4.0,
        eval_every=1_000_000,
        checkpoint_every=1_000_000,
        log_every=1_000_000,
    )
    cfg.data.path = str(corpus)
    recipe = charrnn.train.recipe(cfg, tmp_path / "w")
    horizons = []
    make_step = recipe.make_step
    recipe.make_step = lambda horizon: horizons.append(horizon) or make_step(horizon)
    summary = loop.run(recipe, tmp_path / "w", quiet=True)
    assert horizons[0] == 1_000_000 and len(horizons) in (2, 3), (
        horizons
    )  # fits early, then at half
    fitted = horizons[-1]
    assert 10 < fitted < 1_000_000 and summary.horizon == fitted
    assert summary.stopped == "budget" and summary.steps <= fitted
    assert f"schedules now end at step {fitted:,}" in capsys.readouterr().out
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.train.lr, 2, fitted, end_value=cfg.train.lr * cfg.train.final_lr_fraction
    )
    assert math.isclose(
        float(schedule(fitted)), cfg.train.lr * cfg.train.final_lr_fraction, rel_tol=1e-6
    )


def _toy_recipe(calls: list, side: int = 3) -> loop.Recipe:
    """A recipe whose ``init_state`` is expensive in real ones (it trains something): here it
    counts its calls. Each step adds the batch to ``w``."""
    import jax
    import jax.numpy as jnp
    import ml_collections
    import numpy as np

    cfg = ml_collections.ConfigDict(
        {
            "train": {"batch": 1, "steps": 4, "log_every": 1, "checkpoint_every": 2,
                      "time_budget_s": 0.0},
            "parallel": {"data_parallel": False},
        }
    )  # fmt: skip

    def init_state():
        calls.append("init")
        return {"w": jnp.full((3,), 10.0), "n": jnp.int32(0)}

    def step(state, x):
        new = {"w": state["w"] + x, "n": state["n"] + 1}
        return new, {"loss": jnp.sum(new["w"])}

    return loop.Recipe(
        kind="toy", cfg=cfg, meta={}, total_steps=cfg.train.steps, init_state=init_state,
        abstract_state=lambda: jax.eval_shape(
            lambda: {"w": jnp.zeros((side,)), "n": jnp.int32(0)}
        ),
        make_step=lambda horizon: step, batch=lambda s: (np.full((3,), s, np.float32),),
        batch_axes=(None,), items_per_step=1, unit="it", loss_keys=("loss",), describe="toy",
        nonfinite_advice="",
    )  # fmt: skip


def test_a_resume_restores_against_the_abstract_state_without_making_one(tmp_path, capsys):
    """With ``abstract_state``, a resume checks and restores the checkpoint against shapes alone
    and never runs ``init_state`` (the StackGAN's text-encoder pretraining, the CycleGAN's
    classifier); a workdir whose checkpoints are all unreadable starts afresh with it; an
    ``abstract_state`` of another layout is refused and changes nothing."""
    from jaxgen.errors import UserError
    from jaxgen.training import checkpoint

    calls = []
    r = _toy_recipe(calls)
    r.cfg.train.steps = r.total_steps = 2
    loop.run(r, tmp_path / "w", quiet=True)
    assert calls == ["init"]
    r = _toy_recipe(calls)
    loop.run(r, tmp_path / "w", quiet=True)  # steps 2 -> 4
    assert calls == ["init"]
    got = checkpoint.Checkpoints(tmp_path / "w").restore(checkpoint.abstract(r.init_state()))
    assert got[0] == 4 and got[1]["w"].tolist() == [16.0] * 3 and int(got[1]["n"]) == 4
    calls.clear()
    before = {p: p.read_bytes() for p in (tmp_path / "w").rglob("*") if p.is_file()}
    with pytest.raises(UserError, match=r"different train state \(w: shape \(3,\) -> \(5,\)"):
        loop.run(_toy_recipe(calls, side=5), tmp_path / "w", quiet=True)
    assert calls == [] and before == {
        p: p.read_bytes() for p in (tmp_path / "w").rglob("*") if p.is_file()
    }
    for p in (tmp_path / "w" / "checkpoints").rglob("*"):
        if p.is_file():
            p.write_bytes(b"")  # every checkpoint unreadable
    r = _toy_recipe(calls)
    r.cfg.train.steps = r.total_steps = 6
    s = loop.run(r, tmp_path / "w", quiet=True)
    assert calls == ["init"] and s.start == 0 and s.steps == 6
    assert "could not be restored" in capsys.readouterr().err
