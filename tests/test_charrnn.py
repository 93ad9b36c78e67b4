"""Char-RNN: data, batching, carried state, checkpoints and resume, sampling, bad input."""

import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from jaxgen import charrnn, cli, nn
from jaxgen.charrnn import data as textdata
from jaxgen.charrnn import model
from jaxgen.charrnn.sample import filter_logits, generate, sample_text
from jaxgen.config import apply_override, load_with_overrides
from jaxgen.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "charrnn.py") + ":smoke"
ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def tiny_cfg(**train):
    cfg = charrnn.config.default_config()
    cfg.model.hidden, cfg.model.layers, cfg.model.dropout = 16, 2, 0.0
    cfg.train.batch, cfg.train.seq_len, cfg.train.steps = 4, 8, 12
    cfg.train.lr, cfg.train.log_every, cfg.train.eval_every, cfg.train.checkpoint_every = (
        1e-2,
        1,
        6,
        4,
    )
    for k, v in train.items():
        cfg.train[k] = v
    return cfg


# ----------------------------------------------------------------------------- data


def test_batches_by_hand():
    vocab = textdata.Vocab.from_text(ALPHABET)
    ids = vocab.encode(ALPHABET)
    np.testing.assert_array_equal(ids, np.arange(26))
    b = textdata.CharBatches(ids, batch=2, seq_len=3)
    # rows: 0..12 and 13..25; (13 - 1) // 3 = 4 windows
    assert len(b) == 4
    x, y = b.window(0)
    np.testing.assert_array_equal(x, [[0, 13], [1, 14], [2, 15]])  # time-major [T, B]
    np.testing.assert_array_equal(y, [[1, 14], [2, 15], [3, 16]])
    x, y = b.window(3)
    np.testing.assert_array_equal(x.T, [[9, 10, 11], [22, 23, 24]])
    np.testing.assert_array_equal(y.T, [[10, 11, 12], [23, 24, 25]])
    # window k+1 continues window k in every row
    for k in range(3):
        np.testing.assert_array_equal(b.window(k)[0][-1] + 1, b.window(k + 1)[0][0])
    assert b.position(9) == (2, 1)
    with pytest.raises(IndexError):
        b.window(4)
    xs, ys = b.stacked()  # every window at once, [W, T, B]
    for k in range(4):
        np.testing.assert_array_equal(xs[k], b.window(k)[0])
        np.testing.assert_array_equal(ys[k], b.window(k)[1])


def test_validation_is_one_pass_carrying_the_state():
    """The compiled validation pass equals a Python loop over the windows that carries the
    state, and differs from one that resets it (so the carry is really passed on)."""
    vocab = textdata.Vocab.from_text(ALPHABET)
    ids = vocab.encode(ALPHABET * 8)
    b = textdata.CharBatches(ids, batch=3, seq_len=5)
    params = model.init(jax.random.key(0), len(vocab), 8, 2)
    total, reset_total, carries = 0.0, 0.0, model.zero_carries(params, 3)
    for k in range(len(b)):
        x, y = b.window(k)
        s, carries = charrnn.train.eval_step(params, carries, x, y)
        total += float(s)
        zeros = model.zero_carries(params, 3)
        reset_total += float(charrnn.train.eval_step(params, zeros, x, y)[0])
    count = len(b) * 3 * 5
    got = charrnn.train.evaluate(params, b)
    assert got == pytest.approx(total / count, rel=1e-6)
    assert abs(got - reset_total / count) > 1e-4


def test_vocab_round_trip_split_and_errors():
    vocab = textdata.Vocab.from_text("hello world")
    assert vocab.chars == tuple(sorted(set("hello world")))
    assert vocab.decode(vocab.encode("low")) == "low"
    assert textdata.Vocab.from_json(vocab.to_json()) == vocab
    with pytest.raises(UserError, match="'z' are not in the model's vocabulary"):
        vocab.encode("zoo")
    tr, va = textdata.split_corpus(np.arange(100), 0.1)
    np.testing.assert_array_equal(va, np.arange(90, 100))
    assert len(tr) == 90
    with pytest.raises(UserError, match="fewer than one batch"):
        textdata.CharBatches(np.arange(20), batch=4, seq_len=8)


def _longest_non_letter_run(text):
    import re

    return max((len(m.group(0)) for m in re.finditer(r"([^A-Za-z])\1*", text)), default=0)


def test_builtin_corpus_is_tiny_shakespeare_and_pydoc_is_an_option(test_data):
    import hashlib

    text = textdata.builtin_corpus()
    # the published tiny-shakespeare, byte for byte (sha256 of Karpathy's input.txt)
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == (
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    )
    assert len(text) == 1115394 and len(textdata.Vocab.from_text(text)) == 65
    default_is_builtin = (
        textdata.load_corpus() == text
    )  # (not inside assert: pytest would diff 1 MB strings)
    assert default_is_builtin, "load_corpus()'s default source is not the built-in corpus"
    assert _longest_non_letter_run(text) <= 5  # nothing like the old corpus's '*****' rules
    head = textdata.load_corpus(path=str(test_data / "tinyshakespeare_head.txt"))
    assert len(head) == 4059 and head.startswith("First Citizen:") and text.startswith(head)
    pydoc = textdata.load_corpus(source="pydoc")
    assert len(pydoc) > 100_000 and "assert" in pydoc and _longest_non_letter_run(pydoc) > 5
    with pytest.raises(UserError, match="choose 'builtin', 'pydoc', 'file' or 'tfds'"):
        textdata.load_corpus(source="shakespeare")


def test_tfds_source_fails_fast_offline(monkeypatch):
    monkeypatch.setattr(textdata, "_reachable", lambda *a, **k: False)
    with pytest.raises(UserError, match="offline, use config.data.source=builtin"):
        textdata.load_corpus(source="tfds")


# ----------------------------------------------------------------------------- training pieces


def test_train_step_carries_state_and_resets():
    cfg = tiny_cfg()
    tx = charrnn.train.make_optimizer(cfg, 10)
    state = charrnn.train.init_state(cfg, 26, tx)
    params0 = state.params
    rng = np.random.default_rng(1)
    x1, y1, x2, y2 = (jnp.asarray(rng.integers(0, 26, (8, 4)), jnp.int32) for _ in range(4))
    step = jax.jit(functools.partial(charrnn.train.train_step, tx=tx, dropout_rate=0.0))
    state, m1 = step(state, x1, y1, jnp.asarray(True))
    zeros = model.zero_carries(params0, 4)
    loss_ref = jax.jit(model.loss)  # one compilation for the three reference losses below
    want_loss, want_carries = loss_ref(params0, x1, y1, zeros)
    np.testing.assert_allclose(m1["loss"], want_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state.carries), jax.tree.leaves(want_carries)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    params1 = state.params
    carried = state.carries
    _, m2 = step(state, x2, y2, jnp.asarray(False))
    np.testing.assert_allclose(m2["loss"], loss_ref(params1, x2, y2, carried)[0], rtol=1e-5)
    _, m3 = step(state, x2, y2, jnp.asarray(True))
    np.testing.assert_allclose(m3["loss"], loss_ref(params1, x2, y2, zeros)[0], rtol=1e-5)
    assert abs(float(m2["loss"]) - float(m3["loss"])) > 1e-6  # the carried state matters
    # truncated BPTT: the gradient does not flow into the carried state
    g = jax.jit(
        jax.grad(
            lambda c: charrnn.train.train_step(
                state._replace(carries=c), x2, y2, jnp.asarray(False), tx=tx, dropout_rate=0.0
            )[1]["loss"]
        )
    )(carried)
    assert all(float(jnp.abs(leaf).max()) == 0.0 for leaf in jax.tree.leaves(g))
    assert int(state.step) == 1 and m1.keys() >= {"loss", "grad_norm", "param_norm", "update_norm"}
    assert step._cache_size() == 1


def test_train_step_updates_are_clipped():
    """Two steps against clip-by-global-norm then Adam worked in float64: the gradient (autodiff of
    the model's loss) scaled to norm ``clip`` is what Adam's moments hold
    (``mu_1 = 0.1 * clipped g``), the parameters move by Adam's bias-corrected step on it,
    ``grad_norm`` reports the raw norm; and a run with a clip above the gradient norm holds the
    unclipped moments."""
    import optax

    clip, lr = 1e-3, 1e-2
    rng = np.random.default_rng(2)
    batches = [
        tuple(jnp.asarray(rng.integers(0, 26, (8, 4)), jnp.int32) for _ in range(2))
        for _ in range(2)
    ]
    f64 = lambda tree: jax.tree.map(lambda a: np.asarray(a, np.float64), tree)

    def adam_state(state):
        return [
            s
            for s in jax.tree.leaves(
                state.opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState)
            )
            if isinstance(s, optax.ScaleByAdamState)
        ][0]

    def run(clip_value, steps=2):
        cfg = tiny_cfg(clip=clip_value, lr=lr, lr_schedule="constant")
        tx = charrnn.train.make_optimizer(cfg, 10)
        state = charrnn.train.init_state(cfg, 26, tx)
        params0 = state.params
        step = jax.jit(functools.partial(charrnn.train.train_step, tx=tx, dropout_rate=0.0))
        out = []
        for x, y in batches[:steps]:
            state, m = step(state, x, y, jnp.asarray(True))
            out.append((state, m))
        return params0, out

    params0, clipped = run(clip)
    zeros = model.zero_carries(params0, 4)
    grad = jax.jit(jax.grad(lambda q, x, y: model.loss(q, x, y, zeros)[0]))
    p, params = f64(params0), params0
    mu, nu = jax.tree.map(np.zeros_like, p), jax.tree.map(np.zeros_like, p)
    for t, ((x, y), (state, m)) in enumerate(zip(batches, clipped), 1):
        g = f64(grad(params, x, y))
        raw = math.sqrt(sum(float(np.sum(a * a)) for a in jax.tree.leaves(g)))
        assert raw > 100 * clip  # the clip acts
        g = jax.tree.map(lambda a, raw=raw: a * clip / raw, g)
        mu = jax.tree.map(lambda m_, a: 0.9 * m_ + 0.1 * a, mu, g)
        nu = jax.tree.map(lambda v, a: 0.999 * v + 0.001 * a * a, nu, g)
        p = jax.tree.map(
            lambda q, m_, v, t=t: (
                q - lr * (m_ / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
            ),
            p,
            mu,
            nu,
        )
        assert float(m["grad_norm"]) == pytest.approx(raw, rel=1e-4)  # the raw norm is reported
        adam = adam_state(state)
        for got, want in ((adam.mu, mu), (adam.nu, nu), (state.params, p)):
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                np.testing.assert_allclose(
                    np.asarray(a, np.float64), b, rtol=1e-4, atol=1e-5 * np.abs(b).max()
                )
        params = state.params
    # unclipped (clip above the norm): Adam's first moment holds 0.1 * the raw gradient, not the
    # clipped one
    _, unclipped = run(1e9, steps=1)
    g1 = f64(grad(params0, *batches[0]))
    for a, b in zip(jax.tree.leaves(adam_state(unclipped[0][0]).mu), jax.tree.leaves(g1)):
        np.testing.assert_allclose(
            np.asarray(a, np.float64), 0.1 * b, rtol=1e-4, atol=1e-5 * np.abs(0.1 * b).max()
        )


# ------------------------------------------------------------------------ runs, checkpoints, resume


def run(cfg, workdir):
    return charrnn.train.train(cfg, workdir, quiet=True)


def final_params(workdir):
    return charrnn.sample.load_for_sampling(workdir, which="latest")[0]


def test_resume_gives_the_same_run(corpus, tmp_path):
    """A run stopped at step 4 and resumed to 12 equals an unbroken 12-step run, bit for bit.

    (The constant learning rate makes the first 4 steps of both runs identical.)"""
    cfg = tiny_cfg()
    cfg.data.path = str(corpus)
    whole, split = tmp_path / "whole", tmp_path / "split"
    run(cfg, whole)
    first = tiny_cfg(steps=4)
    first.data.path = str(corpus)
    assert run(first, split)["start"] == 0
    summary = run(cfg, split)
    assert summary["start"] == 4
    for a, b in zip(jax.tree.leaves(final_params(whole)), jax.tree.leaves(final_params(split))):
        np.testing.assert_array_equal(a, b)
    losses = lambda w: [
        r["loss"]
        for r in map(json.loads, (w / "metrics.jsonl").read_text().splitlines())
        if "loss" in r
    ]
    assert losses(whole) == losses(split) and len(losses(whole)) == 12
    assert sorted(int(p.name) for p in (split / "checkpoints").iterdir()) == [8, 12]
    assert len(list((split / "best").iterdir())) == 1


def test_cli_train_then_sample_smoke(tmp_path, capsys):
    w = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--config",
                SMOKE,
                "--workdir",
                str(w),
                "--quiet",
                "--config.train.steps=20",
                "--config.train.checkpoint_every=10",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "validation loss" in out
    assert (w / "metrics.jsonl").exists() and (w / "jaxgen.json").exists()
    assert any((w / "tb").iterdir())
    val = [
        json.loads(line)["val_loss"]
        for line in (w / "metrics.jsonl").read_text().splitlines()
        if "val_loss" in line
    ]
    vocab = textdata.Vocab.from_json(json.loads((w / "jaxgen.json").read_text())["vocab"])
    assert val[-1] < math.log(len(vocab))  # learned something beyond uniform
    args = ["sample", "--workdir", str(w), "--prime", "The ", "--length", "50", "--seed", "3"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert text.startswith("The ") and len(text) == 4 + 50 + 1
    assert cli.main(args) == 0
    assert capsys.readouterr().out == text  # same seed, same text
    # an existing, finished workdir resumes and does nothing more
    assert (
        cli.main(
            ["train", "--config", SMOKE, "--workdir", str(w), "--quiet", "--config.train.steps=20"]
        )
        == 0
    )


# ----------------------------------------------------------------------------- sampling


def test_filter_logits_by_hand():
    logits = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
    kept = np.isfinite(np.asarray(filter_logits(logits, top_p=0.8)))
    np.testing.assert_array_equal(kept, [True, True, False, False])
    kept = np.isfinite(np.asarray(filter_logits(logits, top_p=0.81)))
    np.testing.assert_array_equal(kept, [True, True, True, False])
    shuffled = jnp.log(jnp.array([0.15, 0.5, 0.05, 0.3]))
    np.testing.assert_array_equal(
        np.isfinite(np.asarray(filter_logits(shuffled, top_k=2))), [False, True, False, True]
    )
    np.testing.assert_array_equal(
        np.isfinite(np.asarray(filter_logits(shuffled, top_p=0.6))), [False, True, False, True]
    )
    np.testing.assert_allclose(filter_logits(logits, temperature=0.5), 2 * logits, rtol=1e-6)


def test_greedy_generation_matches_a_python_loop():
    params = model.init(jax.random.key(0), 7, 12, 2)
    prime = jnp.array([1, 2, 3])
    got = generate(params, prime, jax.random.key(0), length=10, top_k=1)
    apply = jax.jit(model.apply)  # two compilations (prime, then one token) instead of op by op
    carries = model.zero_carries(params, 1)
    carries, logits = apply(params, prime[:, None], carries)
    last, want = logits[-1, 0], []
    for _ in range(10):
        nxt = int(jnp.argmax(last))
        want.append(nxt)
        carries, lg = apply(params, jnp.array([[nxt]]), carries)
        last = lg[0, 0]
    np.testing.assert_array_equal(got, want)


def test_sampling_is_deterministic_per_seed():
    vocab = textdata.Vocab.from_text(ALPHABET)
    params = model.init(jax.random.key(0), 26, 12, 1)
    a = sample_text(params, vocab, prime="abc", length=40, seed=1)
    b = sample_text(params, vocab, prime="abc", length=40, seed=1)
    c = sample_text(params, vocab, prime="abc", length=40, seed=2)
    assert a == b and a != c and a.startswith("abc") and len(a) == 43
    with pytest.raises(UserError, match="not in the model's vocabulary"):
        sample_text(params, vocab, prime="ABC", length=5)
    with pytest.raises(UserError, match="temperature"):
        sample_text(params, vocab, prime="a", length=5, temperature=-1.0)


# ----------------------------------------------------------------------------- bad input


def cli_error(capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("jaxgen: error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "content,match",
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"caf\xe9 au lait", "not valid UTF-8"),
        (b"too short", "fewer than one batch needs"),
    ],
)
def test_bad_corpus_files(tmp_path, capsys, content, match):
    p = tmp_path / "t.txt"
    if content is not None:
        p.write_bytes(content)
    err = cli_error(
        capsys,
        ["train", "--config", SMOKE, "--workdir", str(tmp_path / "w"), f"--config.data.path={p}"],
    )
    assert match in err


def test_weight_decay_is_adamw_on_the_matrices_only():
    """Three updates against AdamW written from its equations in float64 NumPy: the matrices
    shrink by lr * weight_decay * p each step, biases and vectors get plain Adam; 0 keeps the
    plain-Adam state layout the checkpoints have always held."""
    cfg = tiny_cfg()
    cfg.train.lr, cfg.train.lr_schedule, cfg.train.clip = 1e-2, "constant", 1e9
    plain = charrnn.train.make_optimizer(cfg, 10)
    cfg.train.weight_decay = 0.3
    tx = charrnn.train.make_optimizer(cfg, 10)
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))}
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    grads = [
        jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32), params)
        for _ in range(3)
    ]
    state, p = tx.init(params), params
    for g in grads:
        u, state = tx.update(g, state, p)
        p = optax.apply_updates(p, u)
    b1, b2, eps, lr, wd = 0.9, 0.999, 1e-8, 1e-2, 0.3
    for name, decayed in (("w", True), ("b", False)):
        q = np.asarray(params[name], np.float64)
        m = v = np.zeros_like(q)
        for t, g in enumerate(grads, 1):
            g = np.asarray(g[name], np.float64)
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            step = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
            q = q - lr * (step + (wd * q if decayed else 0.0))
        np.testing.assert_allclose(p[name], q, rtol=1e-5, atol=1e-6, err_msg=name)
    adam = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    assert jax.tree.structure(plain.init(params)) == jax.tree.structure(adam.init(params))
    assert tiny_cfg().train.weight_decay == 0.0


@pytest.mark.parametrize(
    "override,match",
    [
        ("--config.train.batch=0", "train.batch must be a positive integer"),
        ("--config.train.eval_batch=0", "train.eval_batch must be a positive integer"),
        ("--config.model.hidden=-4", "model.hidden must be a positive integer"),
        ("--config.train.sequence=5", "unknown config field 'train.sequence'"),
        ("--config.train.lr=fast", "expects a number"),
        ("--config.model.dropout=1.5", "model.dropout must be in"),
        ("--config.model.cell=transformer", "model.cell must be 'lstm', 'mingru', 'minlstm' or"),
        ("--config.model.mlp_ratio=-1", "model.mlp_ratio must be a non-negative integer"),
        ("--config.model.conv=-2", "model.conv must be a non-negative integer"),
        ("--config.train.weight_decay=1.5", "train.weight_decay must be a number in [0, 1)"),
    ],
)
def test_bad_configs(tmp_path, capsys, override, match):
    assert match in cli_error(
        capsys, ["train", "--config", SMOKE, "--workdir", str(tmp_path / "w"), override]
    )


def test_workdir_of_another_kind_is_left_alone(tmp_path, capsys):
    w = tmp_path / "gan"
    w.mkdir()
    meta = json.dumps({"model": "fc_gan", "config": {}})
    (w / "jaxgen.json").write_text(meta)
    assert "holds a 'fc_gan' model" in cli_error(
        capsys, ["train", "--config", SMOKE, "--workdir", str(w)]
    )
    assert (w / "jaxgen.json").read_text() == meta
    assert "holds no trained model" in cli_error(
        capsys, ["sample", "--workdir", str(tmp_path / "nothing")]
    )


def test_resume_with_other_model_size_refused(tmp_path, capsys):
    w = tmp_path / "run"
    assert (
        cli.main(
            ["train", "--config", SMOKE, "--workdir", str(w), "--quiet", "--config.train.steps=2"]
        )
        == 0
    )
    err = cli_error(
        capsys, ["train", "--config", SMOKE, "--workdir", str(w), "--config.model.hidden=64"]
    )
    assert "model.hidden=32" in err
    err = cli_error(capsys, ["sample", "--workdir", str(w), "--prime", "\u2603"])
    assert "not in the model's vocabulary" in err
    before = {f: f.read_bytes() for f in sorted(w.rglob("*")) if f.is_file()}
    err = cli_error(
        capsys,
        ["train", "--config", SMOKE, "--workdir", str(w), "--config.train.weight_decay=0.1"],
    )
    assert "train.weight_decay=0.0 (plain Adam), but the config says 0.1" in err
    assert {f: f.read_bytes() for f in sorted(w.rglob("*")) if f.is_file()} == before


def test_config_overrides_are_typed():
    cfg = load_with_overrides(
        SMOKE,
        ["--config.train.steps=7", "--config.model.dropout", "0.25", "--config.data.path=x.txt"],
    )
    assert cfg.train.steps == 7 and cfg.model.dropout == 0.25 and cfg.data.path == "x.txt"
    with pytest.raises(UserError, match="is a group"):
        apply_override(cfg, "train", "3")


def test_builtin_corpus_ships_as_package_data():
    """A non-editable install copies only declared package data: the corpus must be declared in
    pyproject.toml."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["jaxgen.charrnn"]
    corpus = Path(textdata.__file__).with_name("tinyshakespeare.txt.gz")
    assert corpus.is_file() and any(fnmatch.fnmatch(corpus.name, p) for p in patterns)
    assert corpus.stat().st_size < 500_000  # gzipped (the text is 1.1 MB)


def _np_layer_norm(p, x):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _np_gelu(x):  # jax.nn.gelu's default, the tanh approximation
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _np_blocks_logits(p64, ids, hidden, cell="mingru"):
    """The blocks model in float64 NumPy from its definition (the MLP only where present)."""
    from . import reference as ref

    seq = getattr(ref, f"{cell}_seq")
    x = p64["embed"][np.asarray(ids)]
    for b in p64["blocks"]:
        if "conv" in b:  # y_t = b + sum_j w[j] x_{t-j}, zeros before the first step
            w = b["conv"]["w"]
            x = (
                x
                + b["conv"]["b"]
                + sum(
                    w[j] * np.concatenate([np.zeros((j, *x.shape[1:])), x[: len(x) - j]])
                    for j in range(len(w))
                )
            )
        y = np.stack(
            [
                seq(b["cell"], _np_layer_norm(b["ln1"], x)[:, k : k + 1], np.zeros((1, hidden)))[1][
                    :, 0
                ]
                for k in range(x.shape[1])
            ],
            axis=1,
        )
        x = x + y
        if "w1" in b:
            x = x + _np_gelu(_np_layer_norm(b["ln2"], x) @ b["w1"] + b["b1"]) @ b["w2"] + b["b2"]
    return _np_layer_norm(p64["ln_f"], x) @ p64["w_out"] + p64["b_out"]


def test_mingru_char_model_against_numpy_and_across_windows():
    """The minGRU char model (residual blocks) equals float64 NumPy written from its definition;
    two windows carrying the state equal one; the associative scan equals the sequential one;
    ``mlp_ratio`` sets the MLP's width (0: none)."""
    rng = np.random.default_rng(0)

    def perturbed(params):  # non-trivial norms and biases, so every term shows
        return jax.tree.map(lambda a: a + 0.1 * rng.normal(size=a.shape).astype(a.dtype), params)

    params = perturbed(model.init(jax.random.key(0), 11, 8, 2, cell="mingru"))
    ids = jnp.asarray(rng.integers(0, 11, (10, 3)))
    c0 = model.zero_carries(params, 3)
    carries, logits = model.apply(params, ids, c0)
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    np.testing.assert_allclose(logits, _np_blocks_logits(p64, ids, 8), rtol=2e-4, atol=2e-4)
    c1, l1 = model.apply(params, ids[:4], c0)
    c2, l2 = model.apply(params, ids[4:], c1)
    np.testing.assert_allclose(jnp.concatenate([l1, l2]), logits, rtol=1e-5, atol=1e-5)
    for a, b in zip(c2, carries):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    _, lp = model.apply(params, ids, c0, mode="parallel")
    np.testing.assert_allclose(lp, logits, rtol=1e-5, atol=1e-5)
    for ratio in (2, 0):
        p = perturbed(model.init(jax.random.key(1), 11, 8, 2, cell="mingru", mlp_ratio=ratio))
        assert (
            all(b["w1"].shape == (8, 8 * ratio) for b in p["blocks"])
            if ratio
            else all("w1" not in b and "ln2" not in b for b in p["blocks"])
        )
        _, got = model.apply(p, ids, c0)
        p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
        np.testing.assert_allclose(got, _np_blocks_logits(p64, ids, 8), rtol=2e-4, atol=2e-4)
    with pytest.raises(ValueError, match="mlp_ratio must be a non-negative int"):
        model.init(jax.random.key(0), 11, 8, 2, cell="mingru", mlp_ratio=-2)
    # the LRU in the same blocks (complex state as real | imaginary halves), both time loops
    p = perturbed(model.init(jax.random.key(2), 11, 8, 2, cell="lru", mlp_ratio=1))
    assert model.block_cell(p) == "lru" and model.block_cell(params) == "mingru"
    c_lru, got = model.apply(p, ids, c0)
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    np.testing.assert_allclose(got, _np_blocks_logits(p64, ids, 8, "lru"), rtol=2e-4, atol=2e-4)
    _, l1 = model.apply(p, ids[:4], c0)
    np.testing.assert_allclose(l1, got[:4], rtol=1e-5, atol=1e-5)
    _, lp = model.apply(p, ids, c0, mode="parallel")
    np.testing.assert_allclose(lp, got, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unknown char-RNN cell"):
        model.init(jax.random.key(0), 11, 8, 2, cell="transformer")


def test_blocks_with_a_causal_convolution():
    """``conv=K``: each block adds a causal depthwise convolution (float64 NumPy from its
    definition); its last ``K - 1`` inputs are carried, so windows of any length, down to the
    single steps of generation, equal one pass."""
    rng = np.random.default_rng(1)
    params = model.init(jax.random.key(3), 11, 8, 2, cell="mingru", mlp_ratio=1, conv=4)
    params = jax.tree.map(lambda a: a + 0.1 * rng.normal(size=a.shape).astype(a.dtype), params)
    assert all(b["conv"]["w"].shape == (4, 8) for b in params["blocks"])
    ids = jnp.asarray(rng.integers(0, 11, (9, 3)))
    c0 = model.zero_carries(params, 3)
    carries, logits = model.apply(params, ids, c0)
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    np.testing.assert_allclose(logits, _np_blocks_logits(p64, ids, 8), rtol=2e-4, atol=2e-4)
    for cuts in ((2, 7), tuple(range(1, 9))):  # windows of 2, 5, 2 steps; then one step at a time
        c, parts = c0, []
        for lo, hi in zip((0, *cuts), (*cuts, 9)):
            c, lg = model.apply(params, ids[lo:hi], c)
            parts.append(lg)
        np.testing.assert_allclose(jnp.concatenate(parts), logits, rtol=1e-5, atol=1e-5)
        for a, b in zip(jax.tree.leaves(c), jax.tree.leaves(carries)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the hand-written backward of the taps against finite differences (float64)
    with jax.enable_x64(True):
        w = jax.random.normal(jax.random.key(4), (4, 5), jnp.float64)
        xx = jax.random.normal(jax.random.key(5), (10, 3, 5), jnp.float64)
        check_grads(model._conv_taps, (w, xx), order=1, modes=["rev"])
    with pytest.raises(ValueError, match="conv must be a non-negative int"):
        model.init(jax.random.key(0), 11, 8, 2, cell="mingru", conv=-1)
    with pytest.raises(ValueError, match="conv applies to the parallel cells"):
        model.init(jax.random.key(0), 11, 8, 2, conv=3)
    cfg = tiny_cfg()
    cfg.model.cell, cfg.model.conv = "minlstm", 3
    charrnn.config.validate_config(cfg)
    state = charrnn.train.init_state(cfg, 11, charrnn.train.make_optimizer(cfg, 12))
    assert [b["conv"]["w"].shape for b in state.params["blocks"]] == [(3, 16), (3, 16)]
    assert jax.tree.map(jnp.shape, state.carries) == [((4, 16), (2, 4, 16))] * 2
    cfg.model.cell = "lstm"
    with pytest.raises(UserError, match="model.conv applies to the parallel cells"):
        charrnn.config.validate_config(cfg)


def test_layer_norm_against_numpy_and_finite_differences():
    """``nn.layer_norm`` (the blocks' LayerNorm, its backward written out) equals float64 NumPy
    from its definition, and its gradients in ``x``, ``scale`` and ``bias`` equal central
    differences."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 3, 8)) * 3.0 + 1.0
    p = {"scale": 1.0 + 0.3 * rng.normal(size=8), "bias": 0.2 * rng.normal(size=8)}
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    want = (x - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]
    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)
    got = nn.layer_norm(p32, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert jax.tree.map(jnp.shape, nn.layer_norm_init(8)) == {"scale": (8,), "bias": (8,)}
    with jax.enable_x64(True):

        def f(x, scale, bias):
            return nn.layer_norm({"scale": scale, "bias": bias}, x)

        args = (jnp.asarray(x), jnp.asarray(p["scale"]), jnp.asarray(p["bias"]))
        check_grads(f, args, order=1, modes=["rev"])


def test_config_mlp_ratio_reaches_the_blocks():
    """``model.mlp_ratio`` from the config sizes each block's MLP (0: none); the LSTM ignores it."""
    for ratio, want in ((2, (16, 32)), (0, None)):
        cfg = tiny_cfg()
        cfg.model.cell, cfg.model.mlp_ratio = "mingru", ratio
        charrnn.config.validate_config(cfg)
        state = charrnn.train.init_state(cfg, 11, charrnn.train.make_optimizer(cfg, 12))
        shapes = [b["w1"].shape if "w1" in b else None for b in state.params["blocks"]]
        assert shapes == [want, want]
    cfg = tiny_cfg()
    cfg.model.cell, cfg.model.hidden = "lru", 15
    with pytest.raises(UserError, match="model.hidden must be even for the LRU.*use 16"):
        charrnn.config.validate_config(cfg)
    cfg = tiny_cfg()
    cfg.model.mlp_ratio = 3
    assert "lstm" in charrnn.train.init_state(cfg, 11, charrnn.train.make_optimizer(cfg, 12)).params
