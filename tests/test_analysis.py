"""jaxgen.analysis: probe gradients, decay fits, long-lag task generators."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import rnn
from jaxgen.analysis import gradient_decay, models, report, tasks, train


def test_linear_rnn_gradient_norms_follow_a_to_the_lag():
    # h_t = a h_{t-1} + x_t W_ih, L = sum_b v . h_T  =>  dL/dh_t = a^(T-t) v for every example.
    T, B, F, H, a = 12, 3, 4, 5, 0.5
    params = rnn.rnn_init(jax.random.key(0), F, H, recurrent_init="identity", recurrent_scale=a)
    xs = jax.random.normal(jax.random.key(1), (T, B, F))
    v = jax.random.normal(jax.random.key(2), (H,))
    cell = functools.partial(rnn.rnn_cell, activation="identity")
    grads = gradient_decay.hidden_state_grads(
        cell, params, rnn.rnn_zero_carry(params, (B,)), xs, lambda h: jnp.sum(h @ v)
    )
    assert grads.shape == (T, B, H)
    lags = np.arange(T)[::-1]  # row t has lag T-1-t
    expected = a ** lags[:, None, None] * np.broadcast_to(np.asarray(v), (T, B, H))
    np.testing.assert_allclose(grads, expected, rtol=1e-5, atol=1e-7)
    norms = np.asarray(gradient_decay.grad_norms_by_lag(grads))
    np.testing.assert_allclose(norms / norms[0], a ** np.arange(T), rtol=1e-5)
    fit = gradient_decay.decay_fit(norms)
    assert fit["slope"] == pytest.approx(np.log10(a), rel=1e-4)
    assert fit["factor"] == pytest.approx(a, rel=1e-4)
    assert fit["horizon"] == 10  # 0.5**9 = 1.95e-3, 0.5**10 = 9.8e-4
    assert fit["horizon_extrapolated"] == pytest.approx(3 / np.log10(2), rel=1e-4)


def test_mingru_gradient_is_the_product_of_its_keep_gates():
    # h_t = (1 - z_t) h_{t-1} + z_t g(.) with z_t from the input alone, L = sum_b v . h_T
    # =>  dL/dh_t = prod_{s > t} (1 - z_s) * v, elementwise (float64 NumPy for the gates).
    T, B, F, H = 12, 3, 4, 5
    params = rnn.mingru_init(jax.random.key(0), F, H)
    xs = jax.random.normal(jax.random.key(1), (T, B, F))
    v = jax.random.normal(jax.random.key(2), (H,))
    grads = gradient_decay.hidden_state_grads(
        rnn.mingru_cell, params, jnp.zeros((B, H)), xs, lambda h: jnp.sum(h @ v)
    )
    w, b = np.asarray(params["w_ih"], np.float64), np.asarray(params["b"], np.float64)
    keep = 1.0 / (1.0 + np.exp(np.asarray(xs, np.float64) @ w[:, :H] + b[:H]))  # 1 - sigmoid
    expected = np.empty((T, B, H))
    running = np.broadcast_to(np.asarray(v, np.float64), (B, H))
    for t in range(T - 1, -1, -1):
        expected[t] = running
        running = running * keep[t]
    np.testing.assert_allclose(grads, expected, rtol=1e-5, atol=1e-7)


def test_lru_gradient_rotates_back_by_conjugate_lambda():
    # h_t = lambda h_{t-1} + B x_t per complex mode, L = sum_b v . [Re h_T, Im h_T]
    # =>  dL/dh_t (as g_re + i g_im) = conj(lambda)^(T-1-t) (v_re + i v_im), lambda in float64.
    T, B, F, H = 12, 3, 4, 6
    params = rnn.lru_init(jax.random.key(0), F, H, r_min=0.5, r_max=0.95, max_phase=np.pi)
    xs = jax.random.normal(jax.random.key(1), (T, B, F))
    v = jax.random.normal(jax.random.key(2), (H,))
    grads = np.asarray(
        gradient_decay.hidden_state_grads(
            rnn.lru_cell, params, rnn.lru_zero_carry(params, (B,)), xs, lambda h: jnp.sum(h @ v)
        )
    )
    nu, theta = (np.asarray(params[k], np.float64) for k in ("nu_log", "theta_log"))
    lam = np.exp(-np.exp(nu) + 1j * np.exp(theta))
    v64 = np.asarray(v, np.float64)
    g_T = v64[: H // 2] + 1j * v64[H // 2 :]
    for t in range(T):
        want = np.conj(lam) ** (T - 1 - t) * g_T
        got = grads[t, :, : H // 2] + 1j * grads[t, :, H // 2 :]
        np.testing.assert_allclose(got, np.broadcast_to(want, (B, H // 2)), rtol=1e-5, atol=1e-7)
    # the norm per mode falls as |lambda|^lag: the LRU's memory is set by its ring at init
    norms = np.asarray(gradient_decay.grad_norms_by_lag(jnp.asarray(grads)))
    want_norms = np.sqrt(
        (np.abs(lam)[None, :] ** (2 * np.arange(T))[:, None] * abs(g_T) ** 2).sum(1)
    )
    np.testing.assert_allclose(norms, want_norms * np.sqrt(B), rtol=1e-5)


def test_decay_fit_censored_and_underflow():
    fit = gradient_decay.decay_fit(np.full(20, 2.0))
    assert (
        fit["censored"] and fit["horizon"] is None and fit["slope"] == pytest.approx(0.0, abs=1e-12)
    )
    n = np.array([1.0, 0.1, 0.01, 1e-3, 1e-4, 0.0, 0.0])  # zeros: float32 underflow, not fitted
    fit = gradient_decay.decay_fit(n)
    assert fit["slope"] == pytest.approx(-1.0) and fit["horizon"] == 4


@pytest.mark.parametrize("kind", models.KINDS)
def test_probe_gradients_equal_direct_gradients(kind):
    T, B, F, H = 5, 2, 3, 4
    scale = {"recurrent_scale": 1.3} if kind in ("rnn", "lstm", "gru") else {}
    params = models.init_model(kind, jax.random.key(3), F, H, 1, **scale)
    xs = jax.random.normal(jax.random.key(4), (T, B, F))
    cell = models.cell_fn(kind)
    carry0 = models.zero_carry(kind, params["cell"], (B,))

    def loss_fn(h):
        return jnp.sum(jnp.sin(h @ params["w_out"]))

    probe = gradient_decay.hidden_state_grads(cell, params["cell"], carry0, xs, loss_fn)

    # Manual loop: the carry after every step, then d loss / d h_t with the rest of the run.
    carries, c = [], carry0
    for t in range(T):
        c, _ = cell(params["cell"], c, xs[t])
        carries.append(c)

    def rest(h, t):
        c = models.set_h(carries[t], h)
        for s in range(t + 1, T):
            c, _ = cell(params["cell"], c, xs[s])
        return loss_fn(models.get_h(c))

    for t in range(T):
        direct = jax.grad(rest)(models.get_h(carries[t]), t)
        np.testing.assert_allclose(probe[t], direct, rtol=1e-5, atol=1e-6)


def test_model_grad_norms_all_kinds_finite():
    xs, y = tasks.adding_problem(jax.random.key(5), 4, 9)
    for kind in models.KINDS:
        params = models.init_model(kind, jax.random.key(6), 2, 8, 1)
        n = gradient_decay.model_grad_norms(kind, params, xs, y)
        assert n.shape == (9,) and bool(jnp.all(jnp.isfinite(n))) and float(n[0]) > 0


def test_pascanu_check():
    w = 0.5 * np.eye(6)
    assert gradient_decay.pascanu_check(w, "tanh") == {
        "sigma_max": pytest.approx(0.5),
        "bound": 1.0,
        "vanishing_guaranteed": True,
    }
    r = gradient_decay.pascanu_check(2.0 * np.eye(6), "sigmoid")
    assert r["bound"] == 4.0 and r["vanishing_guaranteed"]
    assert not gradient_decay.pascanu_check(2.0 * np.eye(6), "tanh")["vanishing_guaranteed"]
    assert gradient_decay.gate_sigma_max(
        np.concatenate([np.eye(3), 3 * np.eye(3)], 1), 2
    ) == pytest.approx([1.0, 3.0])


def test_adding_target_hand_made():
    values = jnp.array([[0.2], [-0.4], [0.6], [0.8]])
    markers = jnp.array([[0.0], [1.0], [0.0], [1.0]])
    xs = jnp.stack([values, markers], -1)  # [T=4, B=1, 2]
    np.testing.assert_allclose(tasks.adding_target(xs), [0.5 + (-0.4 + 0.8) / 4])


def test_adding_problem_generator():
    T, B = 11, 64
    xs, y = tasks.adding_problem(jax.random.key(7), B, T)
    assert xs.shape == (T, B, 2) and y.shape == (B,)
    m = np.asarray(xs[..., 1])
    assert set(np.unique(m)) <= {0.0, 1.0}
    np.testing.assert_array_equal(m[: T // 2].sum(0), 1)  # one marker in the first half
    np.testing.assert_array_equal(m[T // 2 :].sum(0), 1)  # one in the second
    vals = np.asarray(xs[..., 0])
    assert vals.min() >= -1 and vals.max() <= 1
    p = np.argmax(m[: T // 2], 0), T // 2 + np.argmax(m[T // 2 :], 0)
    expect = 0.5 + (vals[p[0], np.arange(B)] + vals[p[1], np.arange(B)]) / 4
    np.testing.assert_allclose(y, expect, rtol=1e-6)
    xs2, y2 = tasks.adding_problem(jax.random.key(7), B, T)  # same key, same batch
    np.testing.assert_array_equal(xs, xs2)


def test_latch_task_hand_made_and_generator():
    ids = jnp.array([[2, 0], [5, 4], [6, 7], [8, 8]])  # symbols 2 and 0, two distractors, query 8
    np.testing.assert_array_equal(tasks.latch_target(ids), [2, 0])
    lag, B = 6, 32
    ids, y = tasks.latch_task(jax.random.key(8), B, lag, num_symbols=4, num_distractors=4)
    ids = np.asarray(ids)
    assert ids.shape == (lag + 2, B) and ids.dtype == np.int32
    assert ((ids[0] >= 0) & (ids[0] < 4)).all()
    assert ((ids[1:-1] >= 4) & (ids[1:-1] < 8)).all()
    assert (ids[-1] == 8).all() and tasks.latch_vocab_size(4, 4) == 9
    np.testing.assert_array_equal(y, ids[0])


def test_train_seeds_smoke():
    task = train.make_task("latch", 1)
    out = train.train_seeds(
        "gru",
        task,
        jax.random.key(9),
        num_seeds=2,
        hidden_size=8,
        batch_size=16,
        learning_rate=3e-2,
        max_steps=40,
        eval_every=20,
        eval_size=64,
        stop_when_solved=False,
    )
    assert out["steps_run"] == 40 and len(out["success"]) == 2 and len(out["history"]) == 2
    assert jax.tree.leaves(out["params"])[0].shape[0] == 2
    assert all(0.0 <= m <= 1.0 for m in out["final_metric"])
    with pytest.raises(ValueError, match="unknown task"):
        train.make_task("copy-everything", 3)


def _run(task, kind, lag, success, steps, best):
    return {"task": task, "kind": kind, "lag": lag, "success": success, "steps_to_solve": steps,
            "best_metric": best}  # fmt: skip


def test_memory_span_markdown_puts_each_run_in_its_cell():
    settings = {"tasks": ["adding", "latch"], "kinds": ["lstm", "gru"], "lags": [5, 50],
                "num_seeds": 2, "hidden_size": 8, "learning_rate": 0.01, "batch_size": 4,
                "max_steps": 100, "eval_every": 50}  # fmt: skip
    runs = [
        _run(task, kind, lag, [False, False], [None, None], [0.5, 0.25])
        for task in settings["tasks"]
        for kind in settings["kinds"]
        for lag in settings["lags"]
    ]
    runs[5] = _run("latch", "lstm", 50, [True, True], [100, 50], [0.5, 1.0])
    runs[6] = _run("latch", "gru", 5, [True, False], [150, None], [1.0, 0.0])
    md = report.memory_span_markdown(runs, settings)
    success, steps = [part.split("\n\n")[1] for part in md.split("## ")[1:]]
    assert success.splitlines()[2:] == [
        "| 5 | 0/2 | 0/2 | 0/2 | 1/2 |",
        "| 50 | 0/2 | 0/2 | 2/2 | 0/2 |",
    ]
    assert steps.splitlines()[0] == "| lag | adding lstm | adding gru | latch lstm | latch gru |"
    assert steps.splitlines()[2:] == [
        "| 5 | - (0.375) | - (0.375) | - (0.375) | 150 (0.500) |",
        "| 50 | - (0.375) | - (0.375) | 75 (0.750) | - (0.375) |",
    ]


def test_format_horizon():
    assert report.format_horizon({"censored": False, "horizon": 7}, 20) == "7"
    assert report.format_horizon({"censored": True, "horizon": None}, 20) == ">19"
    assert report.format_horizon({"nonfinite": True, "censored": False, "horizon": 3}, 20) == "n/f"


def test_chance_of_passing_matches_a_random_guess_model():
    """The chance that an input-blind model passes a criterion, computed, against the pass rate of
    simulated blind models: exact binomial tail (latch), normal tail (adding). At the study's
    criteria (1,000 sequences) the chance is astronomically small."""
    R = 10000
    # latch, 8 sequences, a loosened threshold (4 of 8 right): P(Binomial(8, 1/4) >= 4) = 0.1138
    latch = train.make_task("latch", 5)._replace(threshold=0.5)
    c = train.chance_of_passing(latch, 8)
    assert c["per_evaluation"] == pytest.approx(0.11381531, rel=1e-6)
    _, y = latch.sample(jax.random.key(0), 8 * R)
    guess = np.random.default_rng(0).integers(0, 4, 8 * R)
    rate = np.mean((np.asarray(y) == guess).reshape(R, 8).mean(1) >= 0.5)
    assert rate == pytest.approx(c["per_evaluation"], abs=4 * np.sqrt(0.114 * 0.886 / R))
    # adding, the constant 0.5 over 1,000 sequences, a loosened threshold just above its mean MAE
    adding = train.make_task("adding", 2)._replace(threshold=0.17)
    c = train.chance_of_passing(adding, 1000)
    _, y = adding.sample(jax.random.key(1), 1000 * 1000)
    rate = np.mean(np.abs(np.asarray(y) - 0.5).reshape(1000, 1000).mean(1) < 0.17)
    assert 0.6 < c["per_evaluation"] < 0.95
    assert rate == pytest.approx(c["per_evaluation"], abs=4 * np.sqrt(0.25 / 1000))
    # the study's criteria: no blind model passes, over any number of evaluations a run makes
    for name in ("latch", "adding"):
        c = train.chance_of_passing(train.make_task(name, 100), 1000, evaluations=16)
        assert c["log10_per_evaluation"] < -200 and c["at_most_any"] < 1e-200


def test_memory_span_study_end_to_end(tmp_path, monkeypatch):
    """The study's cells reach the initialisers (the forget-gate factor, chrono's T_max = the
    longest sequence), a cell that solves no seed is not trained at longer lags, the re-run with
    more seeds happens, and the JSON, markdown and plot are written."""
    from jaxgen.analysis import runners

    seen = []
    real = dict(models._INITS)

    def spy(kind):
        def init(*args, **kw):
            seen.append((kind, kw))
            return real[kind](*args, **kw)

        return init

    for kind in real:
        monkeypatch.setitem(models._INITS, kind, spy(kind))
    path = runners.run_memory_span(
        tmp_path, lags=(3, 6), task_names=("latch",), cells=("rnn", "lstm-chrono"),
        num_seeds=2, hidden_size=4, batch_size=4, max_steps=4, eval_every=4, eval_size=8,
        recheck=("latch", "rnn", (3,), 3), verbose=False,
    )  # fmt: skip
    assert ("lstm", {"chrono": 8}) in seen and ("rnn", {}) in seen
    assert runners.memory_cells(8)["lstm-b3"][:2] == ("lstm", {"forget_bias": 3.0})
    import json

    out = json.loads(path.read_text())
    runs = {(r["cell"], r["lag"]): r for r in out["runs"]}
    for cell in ("rnn", "lstm-chrono"):  # 4 steps solve nothing: lag 6 is skipped
        assert not any(runs[cell, 3]["success"]) and runs[cell, 6] == {
            "task": "latch", "lag": 6, "cell": cell, "skipped": True
        }  # fmt: skip
    assert len(out["recheck"]) == 1 and len(out["recheck"][0]["success"]) == 3
    assert out["settings"]["chance"]["latch"]["per_evaluation"] == pytest.approx(0.25**8)
    md = (tmp_path / "memory_span.md").read_text()
    assert "| 6 | · | · |" in md and "Re-run with more seeds" in md
    assert (tmp_path / "memory_span.png").stat().st_size > 1000
    # a sweep stopped part-way is re-rendered from its JSON
    (tmp_path / "memory_span.png").unlink()
    report.render_memory_span(path)
    assert (tmp_path / "memory_span.md").read_text() == md
    assert (tmp_path / "memory_span.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="unknown memory-span cells"):
        runners.run_memory_span(tmp_path, cells=("lstm-b7",), verbose=False)
