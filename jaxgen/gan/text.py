"""Text conditioning for the text-to-image GAN (StackGAN, Zhang et al. 2017), as pure functions.

* :class:`WordVocab` maps captions to word ids over a closed vocabulary (the caption writer's
  words, :mod:`jaxgen.gan.captions`); a word it has never seen is refused with the word named.
* :func:`encoder_init` / :func:`encode`: an LSTM from :mod:`jaxgen.rnn` over the word ids (padded
  batches with their lengths: each caption's embedding is the hidden state at its own last word),
  or a bidirectional one (both final states), then a dense layer to the text embedding.
* :func:`augment`: conditioning augmentation. The embedding gives ``mu`` and ``log sigma``;
  the generator gets ``c = mu + sigma * eps`` with ``eps ~ N(0, I)``, and :func:`kl_to_standard`
  is the penalty ``KL(N(mu, sigma^2) || N(0, I))`` that keeps the conditioning manifold smooth.
* :func:`matching_aware_d_loss`: the GAN-CLS discriminator loss (Reed et al. 2016), where a real
  image with a mismatched caption is a negative as well as a generated image with its caption.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import losses, rnn
from jaxgen.errors import UserError
from jaxgen.gan import captions
from jaxgen.nn import layers as nn

PAD = "<pad>"


def words_of(text: str) -> list[str]:
    """Lower-case words (letters, digits, hyphens) of ``text``; punctuation is dropped."""
    return re.findall(r"[a-z0-9-]+", text.lower())


class WordVocab:
    """Word ids over the caption writer's closed vocabulary (id 0 is padding)."""

    def __init__(self, words: list[str]):
        self.words = [PAD, *sorted(set(words) - {PAD})]
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def from_captions(cls) -> WordVocab:
        """Every word of the training captions: digits as words and numerals, every synonym and
        every training template's words (the held-out templates reuse them in new orders)."""
        words = list(captions.DIGITS) + [str(d) for d in range(10)]
        for group in (captions.SYNONYMS, captions.ADJECTIVES):
            for options in group.values():
                words += [w for o in options for w in words_of(o)]
        for pair in captions.TRAIN_TEMPLATES:
            words += [w for t in pair for w in words_of(re.sub(r"\{\w+\}", " ", t))]
        return cls(words + ["a", "an"])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, texts: list[str], max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [N, T] int32, lengths [N] int32)``: each caption's word ids, padded with 0 to
        the longest (or ``max_len``). Empty captions and unknown words are refused."""
        rows = []
        for text in texts:
            ws = words_of(text)
            if not ws:
                raise UserError(f"the caption {text!r} has no words; describe a digit, e.g. "
                                "'a thin seven leaning right'")  # fmt: skip
            unknown = [w for w in ws if w not in self.index]
            if unknown:
                raise UserError(
                    f"the caption {text!r} uses {unknown[0]!r}, a word the text encoder has never "
                    f"seen; it knows {len(self) - 1} words, such as "
                    f"{', '.join(self.words[1:9])} (see jaxgen.gan.captions)"
                )
            rows.append([self.index[w] for w in ws])
        t = max_len or max(len(r) for r in rows)
        if any(len(r) > t for r in rows):
            raise UserError(f"a caption has more than {t} words; shorten it")
        ids = np.zeros((len(rows), t), np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        return ids, np.array([len(r) for r in rows], np.int32)


ENCODERS = ("lstm", "bilstm")


def encoder_init(
    key, vocab_size: int, hidden: int = 64, embed_dim: int = 32, kind: str = "lstm"
) -> dict:
    """The text encoder: ``kind="lstm"``, an LSTM over word ids (forget bias 1) and a dense layer
    to ``embed_dim``; ``"bilstm"``, one bidirectional LSTM layer (:func:`jaxgen.rnn.lstm_stack`)
    whose two final hidden states, joined, go through the dense layer (AttnGAN's sentence
    feature). The forward LSTM's state at the last word forgets what came first; read both ways,
    captions in word orders never seen in training keep more of their meaning (pretraining probe
    on held-out templates, ``benchmarks/results/text_encoder.md``: digit 0.989 and slant sign
    0.951 against 0.884 and 0.751 for one way; 1.000 and 1.000 with the recipe's direction
    dropout and paraphrase term, :func:`pretrain_encoder`)."""
    if kind not in ENCODERS:
        raise ValueError(f"text encoder kind must be one of {ENCODERS}, got {kind!r}")
    k1, k2 = jax.random.split(key)
    if kind == "bilstm":
        return {
            "bilstm": rnn.lstm_stack_init(k1, vocab_size, hidden, 1, bidirectional=True),
            "out": nn.dense_init(k2, 2 * hidden, embed_dim),
        }
    return {
        "lstm": rnn.lstm_init(k1, vocab_size, hidden),
        "out": nn.dense_init(k2, hidden, embed_dim),
    }


def encode(params: dict, ids, lengths, *, drop_key=None, direction_dropout: float = 0.0):
    """Text embeddings ``[N, embed_dim]`` of padded word ids ``[N, T]`` (batch-major) with their
    ``lengths [N]``: the LSTM's hidden state at each caption's last word (bidirectional: joined
    with the backward LSTM's state at its first word), through the dense layer.

    ``drop_key`` and ``direction_dropout`` (pretraining only, bidirectional): for that fraction of
    the captions one direction's state, drawn at random, is zeroed, so each direction learns to
    carry the whole caption on its own."""
    if "bilstm" in params:
        finals, _ = rnn.lstm_stack(
            params["bilstm"], ids, bidirectional=True, lengths=lengths, time_major=False
        )
        (h_fwd, _), (h_bwd, _) = finals[0]
        if drop_key is not None and direction_dropout > 0:
            k_drop, k_which = jax.random.split(drop_key)
            drop = jax.random.bernoulli(k_drop, direction_dropout, (h_fwd.shape[0], 1))
            fwd = jax.random.bernoulli(k_which, 0.5, (h_fwd.shape[0], 1))
            h_fwd = jnp.where(drop & fwd, 0.0, h_fwd)
            h_bwd = jnp.where(drop & ~fwd, 0.0, h_bwd)
        return nn.dense(params["out"], jnp.concatenate([h_fwd, h_bwd], -1))
    (h, _), _ = rnn.lstm(params["lstm"], ids, lengths=lengths, time_major=False)
    return nn.dense(params["out"], h)


def augment_init(key, embed_dim: int, c_dim: int) -> dict:
    """The dense layer from a text embedding to ``(mu, log sigma)``, each ``[c_dim]``."""
    return nn.dense_init(key, embed_dim, 2 * c_dim)


def augment(params: dict, embedding, key) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Conditioning augmentation: ``(c, mu, log_sigma)`` with ``c = mu + sigma * eps``,
    ``eps ~ N(0, I)`` from ``key`` (``key=None``: ``c = mu``, for sampling the mean)."""
    out = nn.dense(params, embedding)
    mu, log_sigma = jnp.split(out, 2, axis=-1)
    if key is None:
        return mu, mu, log_sigma
    eps = jax.random.normal(key, mu.shape, mu.dtype)
    return mu + jnp.exp(log_sigma) * eps, mu, log_sigma


def kl_to_standard(mu, log_sigma) -> jax.Array:
    """``KL(N(mu, diag sigma^2) || N(0, I))``, summed over the code and averaged over the batch:
    ``0.5 * sum(mu^2 + sigma^2 - 1 - 2 log sigma)``."""
    per = 0.5 * jnp.sum(mu**2 + jnp.exp(2 * log_sigma) - 1.0 - 2 * log_sigma, axis=-1)
    return per.mean()


def matching_aware_d_loss(real_match, real_mismatch, fake_match, real_label: float = 1.0):
    """GAN-CLS: ``BCE(real, matching text -> real_label) + (BCE(real, mismatched text -> 0) +
    BCE(fake, its text -> 0)) / 2``, each the mean over its logits ``[B]``. Returns the loss and
    its three terms."""
    parts = {
        "d_real_match": losses.sigmoid_bce_with_logits(real_match, real_label).mean(),
        "d_real_mismatch": losses.sigmoid_bce_with_logits(real_mismatch, 0.0).mean(),
        "d_fake_match": losses.sigmoid_bce_with_logits(fake_match, 0.0).mean(),
    }
    loss = parts["d_real_match"] + 0.5 * (parts["d_real_mismatch"] + parts["d_fake_match"])
    return loss, parts


def pretrain_encoder(
    key,
    ids,
    lengths,
    labels,
    thickness,
    slant,
    *,
    vocab_size: int,
    hidden: int = 64,
    embed_dim: int = 32,
    steps: int = 1500,
    batch: int = 128,
    lr: float = 3e-3,
    kind: str = "lstm",
    direction_dropout: float = 0.0,
    paraphrase_weight: float = 0.0,
) -> tuple[dict, np.ndarray]:
    """A text encoder trained to say what the captioned image shows, then frozen (StackGAN
    pretrains its text encoder; Reed et al. 2016 train it against image features).

    ``ids [N, K, T]`` / ``lengths [N, K]``: ``K`` captions of each of ``N`` images; ``labels [N]``,
    ``thickness [N]``, ``slant [N]``: what :func:`captions.measure` found on each image. The
    embedding feeds a linear probe trained with it: cross-entropy on the digit plus the squared
    error on the standardised thickness and slant. Every step draws ``batch`` (image, caption)
    pairs from ``key``; all ``steps`` run in one compiled ``lax.scan``. ``direction_dropout``:
    see :func:`encode` (bidirectional encoders). ``paraphrase_weight``: each step also encodes
    another caption of the same images and adds this weight times the mean squared distance
    between the two embeddings, so that what a caption says, not how it is worded, sets the
    embedding. Returns the encoder's parameters and the loss of each step ``[steps]``."""
    standard = lambda v: (v - v.mean()) / max(float(v.std()), 1e-6)  # noqa: E731
    targets = np.stack(
        [standard(np.asarray(thickness, np.float32)), standard(np.asarray(slant, np.float32))], 1
    )
    k_init, k_probe, k_data = jax.random.split(key, 3)
    params = {
        "enc": encoder_init(k_init, vocab_size, hidden, embed_dim, kind),
        "probe": nn.dense_init(k_probe, embed_dim, 10 + 2),
    }
    params, history = _pretrain(
        params, jnp.asarray(ids), jnp.asarray(lengths), jnp.asarray(labels, jnp.int32),
        jnp.asarray(targets), k_data, steps=int(steps), batch=int(batch), lr=float(lr),
        direction_dropout=float(direction_dropout), paraphrase_weight=float(paraphrase_weight),
    )  # fmt: skip
    return params["enc"], np.asarray(history)


@functools.partial(
    jax.jit, static_argnames=("steps", "batch", "lr", "direction_dropout", "paraphrase_weight")
)
def _pretrain(params, ids, lengths, labels, targets, key, *, steps, batch, lr,
              direction_dropout=0.0, paraphrase_weight=0.0):  # fmt: skip
    import optax

    n, k = lengths.shape
    tx = optax.adam(lr)

    def loss_fn(p, rows, which, other, k_drop):
        k1, k2 = jax.random.split(k_drop)
        e = encode(p["enc"], ids[rows, which], lengths[rows, which], drop_key=k1,
                   direction_dropout=direction_dropout)  # fmt: skip
        out = nn.dense(p["probe"], e)
        ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(out[:, :10]), labels[rows, None], 1))
        loss = ce + jnp.mean((out[:, 10:] - targets[rows]) ** 2)
        if paraphrase_weight:
            e2 = encode(p["enc"], ids[rows, other], lengths[rows, other], drop_key=k2,
                        direction_dropout=direction_dropout)  # fmt: skip
            loss = loss + paraphrase_weight * jnp.mean(jnp.sum((e - e2) ** 2, -1))
        return loss

    def body(carry, s):
        p, opt = carry
        kr, kw, kd, ko = jax.random.split(jax.random.fold_in(key, s), 4)
        rows = jax.random.randint(kr, (batch,), 0, n)
        which = jax.random.randint(kw, (batch,), 0, k)
        other = jax.random.randint(ko, (batch,), 0, k)
        loss, g = jax.value_and_grad(loss_fn)(p, rows, which, other, kd)
        upd, opt = tx.update(g, opt, p)
        return (optax.apply_updates(p, upd), opt), loss

    (params, _), history = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(steps))
    return params, history
