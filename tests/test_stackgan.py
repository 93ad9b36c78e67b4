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


def _xent(logits, labels):
    """Mean softmax cross entropy, from the log-sum-exp."""
    logz = jax.scipy.special.logsumexp(logits, -1)
    return jnp.mean(logz - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0])


def _heads(logits, targets):
    """The auxiliary loss written out: digit (columns 0-9), thickness (10-12), slant (13-15)."""
    return sum(_xent(logits[:, a:b], targets[:, j]) for j, (a, b) in
               enumerate(((0, 10), (10, 13), (13, 16))))  # fmt: skip


def _reference_grads(state, real, ids, lengths, targets, real_label, kl_weight, aux_weight, spec):
    """The step's gradients written out from the losses with plain autodiff: D's at the old
    discriminators, G's against the updated ones (one SGD step of size 1), stage II reading stage
    I's image with the gradient stopped; with auxiliary heads, their cross entropies on the real
    images (D) and on the generated ones (G), against the same targets."""
    SPEC = spec
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
            a, st = stackgan.discriminate(SPEC, d[name], st, r, emb, train=True, with_aux=SPEC.aux)
            if SPEC.aux:
                a, heads = a
                total += aux_weight * _heads(heads, targets)
            b, st = stackgan.discriminate(SPEC, d[name], st, r, emb_mis, train=True)
            c, st = stackgan.discriminate(SPEC, d[name], st, f, emb, train=True)
            total += bce(a, real_label).mean() + 0.5 * (bce(b, 0.0).mean() + bce(c, 0.0).mean())
        return total

    d = {k: p[k] for k in ("d1", "d2")}
    d_grads = jax.grad(d_loss)(d)
    d_new = jax.tree.map(lambda w, gr: w - gr, d, d_grads)

    def g_loss(g):
        x16, x32, mu, ls = fakes(g)
        kw = dict(train=True, with_aux=SPEC.aux)
        l1, _ = stackgan.discriminate(SPEC, d_new["d1"], s["d1"], x16, emb, **kw)
        l2, _ = stackgan.discriminate(SPEC, d_new["d2"], s["d2"], x32, emb, **kw)
        extra = 0.0
        if SPEC.aux:
            (l1, h1), (l2, h2) = l1, l2
            extra = aux_weight * (_heads(h1, targets) + _heads(h2, targets))
        kl = jnp.mean(0.5 * jnp.sum(mu**2 + jnp.exp(2 * ls) - 1 - 2 * ls, -1))
        return bce(l1, 1.0).mean() + bce(l2, 1.0).mean() + kl_weight * kl + extra

    return d_grads, jax.grad(g_loss)(g)


@pytest.mark.parametrize("aux", [False, True], ids=["stackgan", "aux-heads"])
def test_train_step_applies_the_gradients_of_its_losses(aux):
    """With SGD of step 1 in place of Adam, each network moves by minus the gradient its loss
    gives (with auxiliary heads: their cross entropies included, on real images for D and on
    generated ones for G); the frozen text encoder does not move; the running statistics and the
    step do."""
    spec = SPEC._replace(aux=aux)
    rng = np.random.default_rng(0)
    sgd = optax.sgd(1.0)
    enc = text.encoder_init(jax.random.key(3), len(VOCAB), spec.text_hidden, spec.text_embed)
    state = stackgan.init_state(spec, 0, enc, sgd, sgd)
    state = state._replace(step=jnp.int32(5))
    real = rng.uniform(-1, 1, (6, 32, 32, 1)).astype(np.float32)
    caps = ["a thin seven", "a bold 3", "a 1 leaning left", "the digit 4", "a 5", "a bold 9"]
    targets = np.array([[7, 0, 1], [3, 2, 1], [1, 1, 0], [4, 1, 1], [5, 1, 2], [9, 2, 1]],
                       np.int32)  # fmt: skip
    ids, lengths = VOCAB.encode(caps, max_len=8)
    step = jax.jit(functools.partial(
        stackgan.train_step, spec=spec, tx_g=sgd, tx_d=sgd, real_label=0.9, kl_weight=0.7,
        aux_weight=0.6,
    ))  # fmt: skip
    new, metrics = step(state, real, ids, lengths, targets if aux else None)
    # one compilation, not op by op
    reference = jax.jit(_reference_grads, static_argnums=(5, 6, 7, 8))
    d_want, g_want = reference(state, real, ids, lengths, targets, 0.9, 0.7, 0.6, spec)
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
    if aux:  # the heads exist (10 + 3 + 3 outputs) and their losses are reported
        assert set(new.params["d1"]) > {"aux"} and new.params["d2"]["aux"]["w"].shape[-1] == 16
        for k in ("d1_aux", "d2_aux", "g1_aux", "g2_aux"):
            assert float(metrics[k]) > 0, k
        with pytest.raises(ValueError, match="needs the targets"):
            step(state, real, ids, lengths)
    else:
        assert "aux" not in new.params["d1"] and "d1_aux" not in metrics


def test_discriminator_heads_read_the_last_features():
    """D1 written out layer by layer (4x4 stride-2 convolutions, batch norm on batch statistics,
    leaky ReLU): its logit is ``w . phi + b + (P e) . phi`` and its auxiliary heads are
    ``phi @ W_aux + b_aux`` on the same flattened features ``phi``."""
    spec = SPEC._replace(aux=True)
    params, stats = stackgan.init(spec, jax.random.key(4))
    d = params["d1"]
    x = jax.random.uniform(jax.random.key(5), (5, 16, 16, 1), minval=-1, maxval=1)
    emb = jax.random.normal(jax.random.key(6), (5, spec.text_embed))
    (logits, heads), _ = stackgan.discriminate(spec, d, stats["d1"], x, emb, train=True,
                                               with_aux=True)  # fmt: skip
    h = jax.lax.conv_general_dilated(x, d["down0"]["w"], (2, 2), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
    h = h + d["down0"]["b"]
    h = jnp.where(h > 0, h, spec.slope * h)
    h = jax.lax.conv_general_dilated(h, d["down1"]["w"], (2, 2), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
    mean, var = h.mean((0, 1, 2)), h.var((0, 1, 2))
    bn = d["down1_bn"]
    h = (h - mean) / jnp.sqrt(var + 1e-5) * bn["scale"] + bn["bias"]
    phi = jnp.where(h > 0, h, spec.slope * h).reshape(5, -1)
    want = phi @ d["out"]["w"][:, 0] + d["out"]["b"][0] + jnp.sum((emb @ d["proj"]["w"]) * phi, -1)
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(heads, phi @ d["aux"]["w"] + d["aux"]["b"], rtol=1e-4, atol=1e-5)
    assert heads.shape == (5, sum(stackgan.AUX_GROUPS))
    # the heads' loss: the three groups' cross entropies, each against its own column
    t = jnp.array([[3, 0, 2], [9, 1, 0], [0, 2, 1], [5, 1, 1], [7, 0, 0]])
    ls = jax.nn.log_softmax
    want = sum(-jnp.mean(ls(heads[:, a:b])[jnp.arange(5), t[:, j]])
               for j, (a, b) in enumerate(((0, 10), (10, 13), (13, 16))))  # fmt: skip
    np.testing.assert_allclose(stackgan.aux_loss(heads, t), want, rtol=1e-5)


def _cfg(steps):
    cfg = stackgan_train.smoke_config()
    cfg.train.steps = steps
    cfg.train.log_every = 1
    cfg.train.checkpoint_every = 2
    cfg.train.sample_every = 100
    return cfg


def _files(w):
    return {p: p.read_bytes() for p in w.rglob("*") if p.is_file()}


def test_smoke_training_resumes_bit_for_bit_and_refuses_bad_input(tmp_path, capsys, monkeypatch):
    """Four steps straight equal two, a resume and two more, bit for bit (the resume restores the
    pretrained text encoder and does not pretrain another). The CLI samples a caption (the same
    images as the library), and every refusal leaves the workdir as it was."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    stackgan_train.train(_cfg(4), whole, quiet=True)
    stackgan_train.train(_cfg(2), split, quiet=True)
    with monkeypatch.context() as m:
        m.setattr(text, "pretrain_encoder", lambda *a, **k: pytest.fail("pretrained again"))
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
    for field, value, match in (
        ("train.kl_weight", -1.0, "config.train.kl_weight must be >= 0"),
        ("model.aux_weight", -0.5, "config.model.aux_weight must be a number >= 0"),
        ("model.text_encoder", "gru", "config.model.text_encoder must be one of lstm, bilstm"),
    ):
        bad = _cfg(6)
        group, name = field.split(".")
        bad[group][name] = value
        with pytest.raises(UserError, match=match):
            stackgan_train.train(bad, whole, quiet=True)
    assert _files(whole) == before
    # a workdir written before the text encoder and the auxiliary heads were config fields holds
    # the first recipe (a left-to-right encoder, no heads): resuming it with today's is refused
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    meta = json.loads((whole / "jaxgen.json").read_text())
    for k in ("text_encoder", "aux_weight"):
        del meta["config"]["model"][k]
    del meta["config"]["text"]["direction_dropout"]
    checkpoint.write_json_atomic(legacy / "jaxgen.json", meta)
    with pytest.raises(UserError, match="config.model.text_encoder=lstm"):
        stackgan_train.train(_cfg(6), legacy, quiet=True)
    assert [p.name for p in legacy.iterdir()] == ["jaxgen.json"]
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

    # the paraphrase term: two captions of one image end closer, relative to the spread of all
    # embeddings, than without it (the same seed, data and steps)
    def spread(weight):
        enc, _ = text.pretrain_encoder(
            jax.random.key(0), ids.reshape(200, 2, 12), lengths.reshape(200, 2), y,
            attrs.thickness, attrs.slant, vocab_size=len(VOCAB), hidden=16, embed_dim=8,
            steps=150, batch=32, lr=1e-2, kind="bilstm", paraphrase_weight=weight,
        )  # fmt: skip
        e = np.asarray(text.encode(enc, ids, lengths)).reshape(200, 2, 8)
        return np.mean(np.sum((e[:, 0] - e[:, 1]) ** 2, -1)) / np.sum(e.reshape(400, 8).var(0))

    assert spread(1.0) < 0.5 * spread(0.0)


def test_the_recipe_pretrains_the_encoder_its_config_names(monkeypatch):
    """The text fields of the config reach the pretraining: encoder kind, steps, direction
    dropout (bidirectional only) and the paraphrase term."""
    from jaxgen.data.images import load_images
    from jaxgen.gan import captions

    seen = []
    monkeypatch.setattr(text, "pretrain_encoder", lambda *a, **kw: seen.append(kw) or ({}, []))
    data = load_images("builtin")
    attrs = captions.measure(data.images[:4])
    for kind, dd in (("bilstm", 0.3), ("lstm", 0.0)):
        cfg = stackgan_train.smoke_config()
        cfg.model.text_encoder = kind
        cfg.text.direction_dropout, cfg.text.paraphrase_weight = 0.3, 0.25
        stackgan_train.pretrained_text(cfg, data, VOCAB, (None, None, attrs))
        kw = seen[-1]
        assert (kw["kind"], kw["direction_dropout"], kw["paraphrase_weight"]) == (kind, dd, 0.25)
        assert kw["steps"] == cfg.text.pretrain_steps
