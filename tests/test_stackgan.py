"""The text-to-image StackGAN: what a caption changes, the train step against gradients written
out from the losses, exact resume, the CLI and its refusals."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen import cli, losses
from jaxgen.errors import UserError
from jaxgen.gan import stackgan, stackgan_train, text
from jaxgen.training import checkpoint

VOCAB = text.WordVocab.from_captions()
SPEC = stackgan.StackGan(
    vocab_size=len(VOCAB), latent=8, c_dim=4, text_hidden=8, text_embed=6, d_text=4, features=4,
    res_blocks=1, init_std=0.3,
)  # fmt: skip


def _fresh(seed=0):
    params, stats = stackgan.init(SPEC, jax.random.key(seed))
    return params, stats


def test_a_caption_changes_its_own_image_and_nothing_else():
    """In sampling mode each image depends on its caption and its latent only: changing caption 1
    changes image 1 and leaves the others bit for bit; padding the batch to more words changes
    nothing; another key (another z) gives another image of the same caption."""
    params, stats = _fresh()
    # batch statistics that are not the initial zeros/ones, so sampling mode is really exercised
    stats = jax.tree.map(lambda s: 1.5 * s + 0.01, stats)
    caps = ["a thin seven", "a bold 3 leaning left", "the digit 0, upright"]
    key = jax.random.key(1)
    x16, x28 = stackgan.sample_text(SPEC, params, stats, VOCAB, caps, key, max_len=8)
    assert x16.shape == (3, 16, 16, 1) and x28.shape == (3, 28, 28, 1)
    assert np.abs(x28).max() <= 1
    other = ["a thin seven", "a bold 8 leaning right", "the digit 0, upright"]
    y16, y28 = stackgan.sample_text(SPEC, params, stats, VOCAB, other, key, max_len=8)
    np.testing.assert_array_equal(y28[[0, 2]], x28[[0, 2]])
    np.testing.assert_array_equal(y16[[0, 2]], x16[[0, 2]])
    assert np.abs(y28[1] - x28[1]).max() > 1e-4 and np.abs(y16[1] - x16[1]).max() > 1e-4
    _, p28 = stackgan.sample_text(SPEC, params, stats, VOCAB, caps, key, max_len=12)
    np.testing.assert_allclose(p28, x28, atol=1e-6)
    _, k28 = stackgan.sample_text(SPEC, params, stats, VOCAB, caps, jax.random.key(2), max_len=8)
    assert np.abs(k28 - x28).max(axis=(1, 2, 3)).min() > 1e-4
    with pytest.raises(UserError, match="'purple', a word the text encoder has never seen"):
        stackgan.sample_text(SPEC, params, stats, VOCAB, ["a purple seven"], key)
    with pytest.raises(UserError, match="has no words"):
        stackgan.sample_text(SPEC, params, stats, VOCAB, [" . "], key)
    with pytest.raises(UserError, match="no caption given"):
        stackgan.sample_text(SPEC, params, stats, VOCAB, [], key)


def _reference_grads(state, real, ids, lengths, real_label, kl_weight):
    """The step's gradients written out from the losses with plain autodiff: D's at the old
    discriminators, G's against the updated ones (one SGD step of size 1), stage II reading stage
    I's image with the gradient stopped."""
    p, s = state.params, state.stats
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    k_z, k_ca = jax.random.split(key)
    emb = text.encode(p["text"], ids, lengths)
    emb_mis = jnp.concatenate([emb[-1:], emb[:-1]])  # the previous image's caption
    z = jax.random.normal(k_z, (real.shape[0], SPEC.latent))
    real16 = 0.25 * (
        real[:, ::2, ::2] + real[:, 1::2, ::2] + real[:, ::2, 1::2] + real[:, 1::2, 1::2]
    )

    def fakes(g):
        c, mu, ls = text.augment(g["ca"], emb, k_ca)
        x16, _ = stackgan.stage1(SPEC, g["g1"], s["g1"], z, c, train=True)
        x32, _ = stackgan.stage2(SPEC, g["g2"], s["g2"], jax.lax.stop_gradient(x16), c, train=True)
        return x16, x32, mu, ls

    g = {k: p[k] for k in ("ca", "g1", "g2")}
    x16, x32, _, _ = fakes(g)
    bce = losses.sigmoid_bce_with_logits

    def d_loss(d):
        total = 0.0
        for name, r, f in (("d1", real16, x16), ("d2", real, x32)):
            st = s[name]
            a, st = stackgan.discriminate(SPEC, d[name], st, r, emb, train=True)
            b, st = stackgan.discriminate(SPEC, d[name], st, r, emb_mis, train=True)
            c, st = stackgan.discriminate(SPEC, d[name], st, f, emb, train=True)
            total += bce(a, real_label).mean() + 0.5 * (bce(b, 0.0).mean() + bce(c, 0.0).mean())
        return total

    d = {k: p[k] for k in ("d1", "d2")}
    d_grads = jax.grad(d_loss)(d)
    d_new = jax.tree.map(lambda w, gr: w - gr, d, d_grads)

    def g_loss(g):
        x16, x32, mu, ls = fakes(g)
        l1, _ = stackgan.discriminate(SPEC, d_new["d1"], s["d1"], x16, emb, train=True)
        l2, _ = stackgan.discriminate(SPEC, d_new["d2"], s["d2"], x32, emb, train=True)
        kl = jnp.mean(0.5 * jnp.sum(mu**2 + jnp.exp(2 * ls) - 1 - 2 * ls, -1))
        return bce(l1, 1.0).mean() + bce(l2, 1.0).mean() + kl_weight * kl

    return d_grads, jax.grad(g_loss)(g)


def test_train_step_applies_the_gradients_of_its_losses():
    """With SGD of step 1 in place of Adam, each network moves by minus the gradient its loss
    gives; the frozen text encoder does not move; the running statistics and the step do."""
    rng = np.random.default_rng(0)
    sgd = optax.sgd(1.0)
    enc = text.encoder_init(jax.random.key(3), len(VOCAB), SPEC.text_hidden, SPEC.text_embed)
    state = stackgan.init_state(SPEC, 0, enc, sgd, sgd)
    state = state._replace(step=jnp.int32(5))
    real = rng.uniform(-1, 1, (6, 32, 32, 1)).astype(np.float32)
    caps = ["a thin seven", "a bold 3", "a 1 leaning left", "the digit 4", "a 5", "a bold 9"]
    ids, lengths = VOCAB.encode(caps, max_len=8)
    step = jax.jit(functools.partial(
        stackgan.train_step, spec=SPEC, tx_g=sgd, tx_d=sgd, real_label=0.9, kl_weight=0.7
    ))  # fmt: skip
    new, metrics = step(state, real, ids, lengths)
    reference = jax.jit(_reference_grads, static_argnums=(4, 5))  # one compilation, not op by op
    d_want, g_want = reference(state, real, ids, lengths, 0.9, 0.7)
    for part, want in (*d_want.items(), *g_want.items()):
        got = jax.tree.map(lambda a, b: a - b, state.params[part], new.params[part])
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-6, err_msg=part)
    for a, b in zip(jax.tree.leaves(state.params["text"]), jax.tree.leaves(new.params["text"])):
        np.testing.assert_array_equal(a, b)
    assert int(new.step) == 6
    moved = [
        np.abs(a - b).max()
        for a, b in zip(jax.tree.leaves(state.stats), jax.tree.leaves(new.stats))
    ]
    assert min(moved) > 0
    assert metrics["kl"] > 0 and np.isfinite(float(metrics["d_loss"]))


def _cfg(steps):
    cfg = stackgan_train.smoke_config()
    cfg.train.steps = steps
    cfg.train.log_every = 1
    cfg.train.checkpoint_every = 2
    cfg.train.sample_every = 100
    return cfg


def _files(w):
    return {p: p.read_bytes() for p in w.rglob("*") if p.is_file()}


def test_smoke_training_resumes_bit_for_bit_and_refuses_bad_input(tmp_path, capsys):
    """Four steps straight equal two, a resume and two more, bit for bit. The CLI samples a caption
    (the same images as the library), and every refusal leaves the workdir as it was."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    stackgan_train.train(_cfg(4), whole, quiet=True)
    stackgan_train.train(_cfg(2), split, quiet=True)
    stackgan_train.train(_cfg(4), split, quiet=True)
    a = stackgan_train.load(whole)
    b = stackgan_train.load(split)
    for x, y in zip(jax.tree.leaves(a[1:3]), jax.tree.leaves(b[1:3])):
        np.testing.assert_array_equal(x, y)
    rows = [json.loads(r) for r in (split / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "d_loss" in r] == [1, 2, 3, 4]
    assert (split / "samples" / "latest.png").exists()
    assert (split / "samples" / "latest_stage1.png").exists()

    out = tmp_path / "sevens.npy"
    caption = "a bold seven leaning right"
    assert cli.main(["sample", "--workdir", str(whole), "--text", caption, "--num", "3",
                     "--out", str(out)]) == 0  # fmt: skip
    spec, params, stats, vocab, cfg = a
    _, want = stackgan.sample_text(spec, params, stats, vocab, [caption] * 3, jax.random.key(0),
                                   max_len=cfg.text.max_words, chunk=3)  # fmt: skip
    np.testing.assert_array_equal(np.load(out), want)

    before = _files(whole)
    x = ["--out", str(tmp_path / "x.npy")]
    capsys.readouterr()
    for argv, match in (
        (["--text", "a purple seven", *x], "'purple', a word the text encoder has never seen"),
        (["--text", "  ", *x], "has no words"),
        ([*x], "describe the digit with --text"),
        (["--text", "a seven", "--label", "7", *x], "a StackGAN takes --text"),
    ):
        assert cli.main(["sample", "--workdir", str(whole), *argv]) == 2
        assert match in capsys.readouterr().err
    changed = _cfg(6)
    changed.model.features = 16
    with pytest.raises(UserError, match="config.model.features=8"):
        stackgan_train.train(changed, whole, quiet=True)
    nolabels = _cfg(6)
    np.save(tmp_path / "digits.npy", np.zeros((40, 28, 28, 1), np.float32))
    nolabels.data.path = str(tmp_path / "digits.npy")
    with pytest.raises(UserError, match="has no labels"):
        stackgan_train.train(nolabels, whole, quiet=True)
    bad = _cfg(6)
    bad.train.kl_weight = -1.0
    with pytest.raises(UserError, match="config.train.kl_weight must be >= 0"):
        stackgan_train.train(bad, whole, quiet=True)
    assert _files(whole) == before
    assert not (tmp_path / "x.npy").exists()
    # a workdir of another model kind
    (tmp_path / "gan").mkdir()
    checkpoint.write_json_atomic(tmp_path / "gan" / "jaxgen.json", {"model": "gan", "config": {}})
    gan_before = _files(tmp_path / "gan")
    with pytest.raises(UserError, match="gan"):
        stackgan_train.train(_cfg(2), tmp_path / "gan", quiet=True)
    assert cli.main(["sample", "--workdir", str(tmp_path / "gan"), "--text", "a seven", *x]) == 2
    assert _files(tmp_path / "gan") == gan_before


def test_text_pretraining_learns_what_the_captions_say():
    """The pretrained encoder's probe loss falls (digit cross-entropy plus the attributes' squared
    errors), and the frozen encoder then tells two digits apart."""
    from jaxgen.data.images import load_images
    from jaxgen.gan import captions

    data = load_images("builtin")
    x, y = data.images[:200], data.labels[:200]
    caps = captions.write_captions(x, y, per_image=2)
    ids, lengths = VOCAB.encode([c for cs in caps for c in cs], max_len=12)
    attrs = captions.measure(x)
    enc, history = text.pretrain_encoder(
        jax.random.key(0), ids.reshape(200, 2, 12), lengths.reshape(200, 2), y, attrs.thickness,
        attrs.slant, vocab_size=len(VOCAB), hidden=16, embed_dim=8, steps=150, batch=32, lr=1e-2,
    )  # fmt: skip
    assert history.shape == (150,) and history[-20:].mean() < 0.5 * history[:20].mean()
    e = np.asarray(text.encode(enc, *VOCAB.encode(["a seven", "a one", "a 7"], max_len=12)))
    assert np.linalg.norm(e[0] - e[2]) < np.linalg.norm(e[0] - e[1])
