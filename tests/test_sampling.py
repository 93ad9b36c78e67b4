"""Sampling filters (temperature, top-k, top-p) and greedy decoding against float64 NumPy
references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.charrnn import data as textdata
from jaxgen.charrnn import model
from jaxgen.charrnn.sample import filter_logits, generate, greedy_or_sample, sample_text
from jaxgen.errors import UserError


def ref_keep(logits, temperature=1.0, top_k=0, top_p=1.0):
    """Kept tokens by the definition, in float64: rank by (-logit, index), keep the first k, then
    the smallest prefix of the renormalised distribution whose mass reaches top_p."""
    z = np.asarray(logits, np.float64) / temperature
    order = sorted(range(len(z)), key=lambda i: (-z[i], i))
    k = top_k or len(z)
    ranked = order[:k]
    p = np.exp(z[ranked] - z[ranked].max())
    p /= p.sum()
    keep = np.zeros(len(z), bool)
    mass = 0.0
    for i, p_i in zip(ranked, p):
        if top_p < 1.0 and mass >= top_p:
            break
        keep[i] = True
        mass += p_i
    return keep


# compiled once per shape and top_k (temperature and top_p traced): op by op, each new shape
# compiles a dozen ops; the uncompiled function is checked in WithAndWithoutJit below
_filter = jax.jit(filter_logits, static_argnames="top_k")


def kept(logits, **kw):
    return np.isfinite(np.asarray(_filter(jnp.asarray(logits, jnp.float32), **kw)))


def test_top_p_one_keeps_every_token():
    logits = np.array([20.0] + [0.0] * 64)  # the other 64 tokens hold ~1.3e-7 of the mass in total
    assert kept(logits, top_p=1.0).sum() == 65
    assert kept(logits).sum() == 65
    assert ref_keep(logits, top_p=1.0).sum() == 65
    np.testing.assert_array_equal(
        kept(logits, top_p=0.999), ref_keep(logits, top_p=0.999)
    )  # top token only


def test_top_k_keeps_exactly_k_with_ties_broken_by_index():
    np.testing.assert_array_equal(kept([1.0, 1.0, 0.0], top_k=1), [True, False, False])
    np.testing.assert_array_equal(
        kept([0.0, 2.0, 1.0, 2.0, 2.0], top_k=2), [False, True, False, True, False]
    )
    np.testing.assert_array_equal(kept([3.0, 3.0, 3.0, 3.0], top_k=3), [True, True, True, False])


@pytest.mark.parametrize(
    "temperature,top_k,top_p",
    [(1.0, 0, 1.0), (0.7, 0, 0.9), (1.3, 5, 1.0), (0.5, 10, 0.6), (2.0, 0, 0.3), (1.0, 1, 0.5)],
)
def test_filter_matches_numpy_reference(temperature, top_k, top_p):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 65)) * 2.0
    logits[0, :8] = logits[0, 8]  # a row with ties
    got = np.asarray(
        _filter(jnp.asarray(logits, jnp.float32), temperature=temperature, top_k=top_k, top_p=top_p)
    )
    for row, g in zip(logits, got):
        want = ref_keep(row, temperature, top_k, top_p)
        np.testing.assert_array_equal(np.isfinite(g), want)
        np.testing.assert_allclose(g[want], row[want] / temperature, rtol=1e-6)


def test_sampling_frequencies_follow_the_filtered_distribution():
    logits = np.array([0.3, 1.2, -0.5, 0.9, 0.0])
    temperature, top_k = 0.7, 3
    keep = ref_keep(logits, temperature, top_k)
    p = np.where(keep, np.exp(logits / temperature), 0.0)
    p /= p.sum()
    keys = jax.random.split(jax.random.key(0), 20000)
    draws = jax.vmap(
        lambda k: greedy_or_sample(
            k, jnp.asarray(logits, jnp.float32), temperature=temperature, top_k=top_k
        )
    )(keys)
    freq = np.bincount(np.asarray(draws), minlength=5) / len(keys)
    np.testing.assert_allclose(freq, p, atol=0.015)


def test_temperature_zero_is_argmax_with_ties_to_the_lower_index():
    logits = jnp.array([1.0, 3.0, 3.0, -2.0])
    np.testing.assert_array_equal(
        np.isfinite(np.asarray(filter_logits(logits, temperature=0.0))), [False, True, False, False]
    )
    for seed in range(5):
        assert int(greedy_or_sample(jax.random.key(seed), logits, temperature=0.0)) == 1
        assert (
            int(greedy_or_sample(jax.random.key(seed), logits, temperature=0.0, top_k=3, top_p=0.2))
            == 1
        )


def test_greedy_generation_matches_a_python_argmax_loop_for_every_seed():
    params = model.init(jax.random.key(0), 7, 12, 2)
    prime = jnp.array([1, 2, 3])
    apply = jax.jit(model.apply)
    carries = model.zero_carries(params, 1)
    carries, logits = apply(params, prime[:, None], carries)
    last, want = np.asarray(logits[-1, 0]), []
    for _ in range(8):
        nxt = int(np.argmax(last))
        want.append(nxt)
        carries, lg = apply(params, jnp.array([[nxt]]), carries)
        last = np.asarray(lg[0, 0])
    for seed in (0, 1):
        got = generate(params, prime, jax.random.key(seed), length=8, temperature=0.0)
        np.testing.assert_array_equal(got, want)


def test_sample_text_greedy_is_seed_independent_and_refuses_negative_temperature():
    vocab = textdata.Vocab.from_text("abcdefghijklmnopqrstuvwxyz")
    params = model.init(jax.random.key(0), 26, 12, 1)
    a = sample_text(params, vocab, prime="abc", length=30, temperature=0.0, seed=1)
    b = sample_text(params, vocab, prime="abc", length=30, temperature=0.0, seed=2)
    assert a == b and len(a) == 33
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(UserError, match="temperature"):
            sample_text(params, vocab, prime="a", length=5, temperature=bad)


class WithAndWithoutJit(chex.TestCase):
    """The sampling filter gives the same answer traced and eager."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_filter_logits_matches_the_reference(self):
        logits = np.array([2.0, 1.0, 1.0, -1.0, 0.5, 3.0], np.float32)
        filtered = self.variant(lambda z: filter_logits(z, temperature=0.7, top_k=4, top_p=0.9))(
            logits
        )
        chex.assert_shape(filtered, logits.shape)
        np.testing.assert_array_equal(np.isfinite(filtered), ref_keep(logits, 0.7, 4, 0.9))
