"""Text conditioning for StackGAN: the word vocabulary, the LSTM text encoder on padded captions,
conditioning augmentation and its KL penalty against closed forms, the matching-aware loss on
hand-made logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import rnn
from jaxgen.errors import UserError
from jaxgen.gan import captions, text
from jaxgen.nn import layers as nn


def test_vocab_covers_every_caption_and_refuses_the_rest():
    vocab = text.WordVocab.from_captions()
    imgs = -np.ones((10, 28, 28, 1), np.float32)
    for k in range(10):  # thin, bold and in-between strokes, both slants
        imgs[k, 4:24, 12 : 13 + k % 5] = 1.0
    for held_out in (False, True):
        caps = captions.write_captions(imgs, np.arange(10), per_image=30, held_out=held_out)
        ids, lengths = vocab.encode([c for cs in caps for c in cs])
        assert ids.shape[0] == 300 and (ids[np.arange(300), lengths - 1] > 0).all()
        assert all((row[n:] == 0).all() for row, n in zip(ids, lengths))
    with pytest.raises(UserError, match="'purple', a word the text encoder has never seen"):
        vocab.encode(["a purple seven"])
    with pytest.raises(UserError, match="has no words"):
        vocab.encode(["  ,. "])


@pytest.mark.parametrize("kind", text.ENCODERS)
def test_encoder_reads_each_caption_to_its_own_last_word(kind):
    """Padding a batch to a longer length changes no embedding; each embedding equals the one of
    its caption encoded alone; another word changes it."""
    vocab = text.WordVocab.from_captions()
    params = text.encoder_init(jax.random.key(0), len(vocab), hidden=16, embed_dim=8, kind=kind)
    caps = ["a thin seven", "the digit 3, bold, leaning left", "a 1"]
    enc = jax.jit(text.encode)
    ids, lengths = vocab.encode(caps)
    e = np.asarray(enc(params, ids, lengths))
    ids12, _ = vocab.encode(caps, max_len=12)
    np.testing.assert_allclose(enc(params, ids12, lengths), e, rtol=1e-5, atol=1e-6)
    for i, c in enumerate(caps):  # padded to 12 words as well: one compilation for all three
        alone = enc(params, *vocab.encode([c], max_len=12))
        np.testing.assert_allclose(alone[0], e[i], rtol=1e-5, atol=1e-6)
    other = np.asarray(enc(params, *vocab.encode(["a thin eight"], max_len=12)))
    assert np.abs(other[0] - e[0]).max() > 1e-4


def test_bidirectional_encoder_reads_each_caption_both_ways():
    """The bidirectional embedding, from each caption alone and unpadded: the forward LSTM's
    final state over its words, joined with the final state of the backward LSTM run forwards
    over the words in reverse order, through the dense layer."""
    vocab = text.WordVocab.from_captions()
    params = text.encoder_init(jax.random.key(1), len(vocab), 16, 8, kind="bilstm")
    caps = ["written leaning left, the digit 3", "a bold 7", "handwritten, an upright nine"]
    got = np.asarray(text.encode(params, *vocab.encode(caps, max_len=12)))
    (layer,) = params["bilstm"]
    for i, c in enumerate(caps):
        ids, _ = vocab.encode([c])
        (h_f, _), _ = rnn.lstm(layer["fwd"], ids[0][:, None])
        (h_b, _), _ = rnn.lstm(layer["bwd"], ids[0][::-1, None])
        want = nn.dense(params["out"], jnp.concatenate([h_f, h_b], -1))[0]
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6, err_msg=c)
    with pytest.raises(ValueError, match="text encoder kind must be one of"):
        text.encoder_init(jax.random.key(1), len(vocab), 16, 8, kind="gru")
    # direction dropout (pretraining): a dropped caption reads one direction with the other zeroed
    ids, lengths = vocab.encode(caps * 4, max_len=12)
    kw = dict(drop_key=jax.random.key(5), direction_dropout=1.0)
    dropped = np.asarray(text.encode(params, ids, lengths, **kw))
    finals, _ = rnn.lstm_stack(params["bilstm"], ids, bidirectional=True, lengths=lengths,
                               time_major=False)  # fmt: skip
    (h_f, _), (h_b, _) = finals[0]
    only_f = np.asarray(nn.dense(params["out"], jnp.concatenate([h_f, 0 * h_b], -1)))
    only_b = np.asarray(nn.dense(params["out"], jnp.concatenate([0 * h_f, h_b], -1)))
    is_f = np.abs(dropped - only_f).max(1) < 1e-6
    is_b = np.abs(dropped - only_b).max(1) < 1e-6
    assert (is_f ^ is_b).all() and is_f.any() and is_b.any()
    half = text.encode(params, ids, lengths, drop_key=jax.random.key(5), direction_dropout=0.5)
    full = np.asarray(text.encode(params, ids, lengths))
    kept = np.abs(np.asarray(half) - full).max(1) < 1e-6
    assert kept.any() and not kept.all()
    np.testing.assert_array_equal(text.encode(params, ids, lengths, direction_dropout=0.5), full)


def test_augmentation_and_kl_against_closed_forms():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(5, 4))
    log_sigma = rng.normal(scale=0.5, size=(5, 4))
    # KL(N(mu, S) || N(0, I)) = (tr S + mu.mu - k - ln det S) / 2, written with matrices
    want = np.mean(
        [
            0.5 * (np.trace(S) + m @ m - 4 - np.log(np.linalg.det(S)))
            for m, S in ((m, np.diag(np.exp(2 * s))) for m, s in zip(mu, log_sigma))
        ]
    )
    assert float(text.kl_to_standard(jnp.asarray(mu), jnp.asarray(log_sigma))) == pytest.approx(
        want, rel=1e-5
    )
    assert float(text.kl_to_standard(jnp.zeros((3, 4)), jnp.zeros((3, 4)))) == 0.0
    p = text.augment_init(jax.random.key(1), 6, 4)
    emb = jnp.asarray(rng.normal(size=(2000, 6)), jnp.float32)
    c, m, ls = text.augment(p, emb, jax.random.key(2))
    eps = (c - m) / jnp.exp(ls)  # the noise must be standard normal, and c must use sigma
    assert abs(float(eps.mean())) < 0.03 and abs(float(eps.std()) - 1) < 0.03
    c0, m0, _ = text.augment(p, emb, None)
    np.testing.assert_array_equal(c0, m0)


def test_matching_aware_loss_on_hand_made_logits():
    sp = lambda x: np.log1p(np.exp(x))  # softplus: BCE(x, 1) = sp(-x), BCE(x, 0) = sp(x)
    rm, rx, fm = np.array([2.0, -1.0]), np.array([0.5, -3.0]), np.array([1.0, 0.0])
    loss, parts = text.matching_aware_d_loss(jnp.asarray(rm), jnp.asarray(rx), jnp.asarray(fm))
    want = sp(-rm).mean() + 0.5 * (sp(rx).mean() + sp(fm).mean())
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(parts["d_real_mismatch"]) == pytest.approx(sp(rx).mean(), rel=1e-6)
    # a real image with the wrong caption is a negative: its logit's gradient is positive
    g = jax.grad(lambda x: text.matching_aware_d_loss(jnp.asarray(rm), x, jnp.asarray(fm))[0])
    assert (np.asarray(g(jnp.asarray(rx))) > 0).all()
