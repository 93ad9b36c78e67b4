"""Pix2Pix / CycleGAN building blocks: U-Net shapes and skips, the PatchGAN's receptive field,
the ResNet generator, instance norm, the losses on hand-made values, the image history."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.gan import translation as tr

FEATURES = (4, 8, 8)  # a 3-level U-Net on 8x8 images
# Jitted once here: run eagerly, each network compiles every one of its operations per shape.
unet = jax.jit(tr.unet, static_argnames="dropout_rate")
patchgan, resnet_generator = jax.jit(tr.patchgan), jax.jit(tr.resnet_generator)


@pytest.fixture(scope="module")
def unet_params():
    return tr.unet_init(jax.random.key(0), 1, 1, FEATURES)


def test_instance_norm_against_numpy():
    x = np.random.default_rng(0).normal(2.0, 3.0, (2, 5, 6, 3))
    p = {"scale": jnp.asarray([1.0, 2.0, 0.5]), "bias": jnp.asarray([0.0, -1.0, 3.0])}
    got = tr.instance_norm(p, jnp.asarray(x, jnp.float32))
    mean = x.mean(axis=(1, 2), keepdims=True)
    want = (x - mean) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 1e-5)
    want = want * np.asarray(p["scale"]) + np.asarray(p["bias"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_instance_norm_gradient_against_finite_differences():
    """The written-out VJP against central differences in float64 (input, scale and bias), and
    against autodiff of the plain formula in float32."""
    from jax.test_util import check_grads

    x = np.random.default_rng(1).normal(1.0, 2.0, (2, 4, 3, 3))
    p = {"scale": np.asarray([1.0, -2.0, 0.5]), "bias": np.asarray([0.5, -1.0, 3.0])}
    w = np.random.default_rng(2).normal(size=x.shape)
    with jax.enable_x64():

        def f(p, x):  # a non-linear read-out, so every part of the gradient counts
            return jnp.sum(jnp.sin(tr.instance_norm(p, x)) * w)

        check_grads(f, (p, x), order=1, modes=("rev",), atol=1e-7, rtol=1e-7)

    def plain(p, x):
        mean = x.mean(axis=(1, 2), keepdims=True)
        var = jnp.square(x - mean).mean(axis=(1, 2), keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + 1e-5) * p["scale"] + p["bias"]
        return jnp.sum(jnp.sin(y) * w)

    def ours(p, x):
        return jnp.sum(jnp.sin(tr.instance_norm(p, x)) * w)

    p32, x32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), (p, x))
    for got, want in zip(jax.grad(ours, (0, 1))(p32, x32), jax.grad(plain, (0, 1))(p32, x32)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_unet_shapes_range_and_bad_sizes(unet_params):
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1), minval=-1, maxval=1)
    y = unet(unet_params, x)
    assert y.shape == (2, 8, 8, 1)
    assert float(jnp.abs(y).max()) <= 1.0
    # channels: the innermost decoder reads the bottleneck alone, the others input + skip
    dec_in = [p["conv"]["w"].shape[2] for p in unet_params["dec"]]
    assert dec_in == [8, 16, 8]
    assert unet_params["dec"][-1]["conv"]["w"].shape[3] == 1
    # dropout is the noise: with a key two draws differ, without one the output is fixed
    k1, k2 = jax.random.split(jax.random.key(2))
    assert not np.allclose(unet(unet_params, x, key=k1), unet(unet_params, x, key=k2))
    np.testing.assert_array_equal(unet(unet_params, x), y)
    with pytest.raises(ValueError, match="divisible by 8"):
        unet(unet_params, jnp.zeros((1, 12, 12, 1)))


def test_unet_skips_carry_the_input(unet_params):
    """With every encoder layer below the first zeroed, the only path from the input to the
    output is the outermost skip (e_0 into the last decoder layer): the output must still
    depend on the input, and on nothing else but it."""
    p = jax.tree.map(lambda a: a, unet_params)
    for layer in p["enc"][1:]:
        layer["conv"] = jax.tree.map(jnp.zeros_like, layer["conv"])
    x1 = jax.random.uniform(jax.random.key(3), (1, 8, 8, 1), minval=-1, maxval=1)
    x2 = jax.random.uniform(jax.random.key(4), (1, 8, 8, 1), minval=-1, maxval=1)
    y1, y2 = unet(p, x1), unet(p, x2)
    assert float(jnp.abs(y1 - y2).max()) > 1e-3
    # and the last decoder layer's skip half is what carries it: zero those input channels
    w = p["dec"][-1]["conv"]["w"]
    p["dec"][-1]["conv"]["w"] = w.at[:, :, FEATURES[0] :, :].set(0.0)
    np.testing.assert_allclose(unet(p, x1), unet(p, x2), atol=1e-6)


@pytest.mark.parametrize("num_down,want", [(3, 70), (1, 16), (2, 34)])
def test_patchgan_receptive_field_computed_and_measured(num_down, want):
    """The formula, and the gradient of one interior logit with respect to the input: its
    support is a want x want square (instance norm taken out, since it couples every pixel)."""
    assert tr.patchgan_receptive_field(num_down) == want
    features = (3,) * (num_down + 1)
    p = tr.patchgan_init(jax.random.key(5), 2, features)
    for layer in p["layers"]:
        layer.pop("norm", None)
    size = want + 2 ** (num_down + 3)
    x = jax.random.normal(jax.random.key(6), (1, size, size, 2))
    out = jax.eval_shape(tr.patchgan, p, x)
    i = out.shape[1] // 2
    # jitted: one compile instead of one per operation of the network
    g = jax.jit(jax.grad(lambda x: patchgan(p, x)[0, i, i, 0]))(x)
    rows, cols = np.nonzero(np.abs(np.asarray(g[0])).sum(-1))
    assert rows.max() - rows.min() + 1 == want
    assert cols.max() - cols.min() + 1 == want


def test_patchgan_and_resnet_generator_shapes():
    p = tr.patchgan_init(jax.random.key(7), 2, (4, 4, 4, 4))
    assert patchgan(p, jnp.zeros((3, 32, 32, 2))).shape == (3, 2, 2, 1)
    g = tr.resnet_generator_init(jax.random.key(8), 1, 3, features=2, blocks=1)
    y = resnet_generator(g, jax.random.normal(jax.random.key(9), (2, 8, 8, 1)))
    assert y.shape == (2, 8, 8, 3) and float(jnp.abs(y).max()) <= 1.0
    with pytest.raises(ValueError, match="divisible by 4"):
        resnet_generator(g, jnp.zeros((1, 18, 18, 1)))


def test_class_conditional_patchgan_adds_each_patch_projection_on_its_label():
    """The conditional logit is the unconditional PatchGAN's plus, per patch, the last features
    convolved with the label's own 4x4 kernel: built here from two unconditional PatchGANs (the
    second's output layer is that class kernel with no bias), example by example."""
    p = tr.patchgan_init(jax.random.key(3), 1, (4, 8, 8), num_classes=5)
    assert p["classes"]["w"].shape == (4, 4, 8, 5) and "b" not in p["classes"]
    # the class kernels take a key of their own: the other layers are the unconditional init
    unconditional = tr.patchgan_init(jax.random.key(3), 1, (4, 8, 8))
    for x, y in zip(jax.tree.leaves(unconditional), jax.tree.leaves(p["layers"]), strict=True):
        np.testing.assert_array_equal(x, y)
    x = jax.random.normal(jax.random.key(4), (3, 16, 16, 1))
    labels = jnp.asarray([4, 0, 2])
    got = patchgan(p, x, labels)
    plain = {"layers": p["layers"]}
    assert got.shape == patchgan(plain, x).shape == (3, 2, 2, 1)
    for i, y in enumerate(np.asarray(labels)):
        head = {"conv": {"w": p["classes"]["w"][..., y : y + 1], "b": jnp.zeros(1)}}
        projection = {"layers": [*p["layers"][:-1], head]}
        want = patchgan(plain, x[i : i + 1]) + patchgan(projection, x[i : i + 1])
        np.testing.assert_allclose(got[i : i + 1], want, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(patchgan(p, x, labels) - patchgan(p, x, labels[::-1])).max()) > 1e-4
    with pytest.raises(ValueError, match="needs labels"):
        patchgan(p, x)
    with pytest.raises(ValueError, match="needs labels"):
        patchgan(plain, x, labels)


def test_losses_on_hand_made_values():
    assert float(tr.lsgan_d_loss(jnp.ones(4), jnp.zeros(4))) == 0.0
    # (mean((real-1)^2) + mean(fake^2)) / 2 with real = [0, 2], fake = [1, 3]: (1 + 5) / 2
    assert float(tr.lsgan_d_loss(jnp.asarray([0.0, 2.0]), jnp.asarray([1.0, 3.0]))) == 3.0
    assert float(tr.lsgan_g_loss(jnp.asarray([1.0, 3.0]))) == 2.0  # (0 + 4) / 2
    a = jnp.asarray([[0.0, 1.0], [2.0, -1.0]])
    b = jnp.asarray([[1.0, 1.0], [0.0, 1.0]])
    assert float(tr.l1_loss(a, b)) == 1.25  # (1 + 0 + 2 + 2) / 4


def test_pool_fills_then_swaps_half_the_time():
    pool = tr.pool_init(3, (1,))
    pool, out = tr.pool_query(pool, jnp.asarray([[10.0], [20.0]]), jax.random.key(0))
    np.testing.assert_array_equal(out, [[10.0], [20.0]])  # while filling: the new images
    np.testing.assert_array_equal(pool["images"][:2], [[10.0], [20.0]])
    assert int(pool["count"]) == 2
    pool, out = tr.pool_query(pool, jnp.asarray([[30.0]]), jax.random.key(1))
    assert out[0, 0] == 30.0 and int(pool["count"]) == 3  # the last free slot
    query = jax.jit(tr.pool_query)
    swaps, n = 0, 800
    for i in range(n):
        new = jnp.asarray([[100.0 + i]])
        before = np.asarray(pool["images"])[:, 0]
        pool, out = query(pool, new, jax.random.key(i + 2))
        after = np.asarray(pool["images"])[:, 0]
        if out[0, 0] == new[0, 0]:  # the new image itself: nothing stored
            np.testing.assert_array_equal(after, before)
        else:  # a stored image came back, and the new one took its slot
            swaps += 1
            slot = int(np.flatnonzero(before == out[0, 0])[0])
            want = before.copy()
            want[slot] = new[0, 0]
            np.testing.assert_array_equal(after, want)
        assert int(pool["count"]) == 3
    assert abs(swaps / n - 0.5) < 0.06  # 3.4 standard deviations at n = 800
    # the same key gives the same answer; a size-0 pool passes the images through
    a = tr.pool_query(pool, new, jax.random.key(7))
    b = tr.pool_query(pool, new, jax.random.key(7))
    np.testing.assert_array_equal(a[1], b[1])
    empty = tr.pool_init(0, (1,))
    np.testing.assert_array_equal(tr.pool_query(empty, new, jax.random.key(0))[1], new)


def test_pool_keeps_each_label_with_its_image():
    """A pool with labels draws exactly what the plain pool draws (same keys, same images) and
    returns and stores each image's label with it."""
    plain, labelled = tr.pool_init(4, (1,)), tr.pool_init(4, (1,), labels=True)
    assert labelled["labels"].shape == (4,)
    query = jax.jit(tr.pool_query)
    for i in range(60):
        images = 100.0 + 3 * i + jnp.arange(3.0)[:, None]  # unique values: label = value - 100
        labels = (images[:, 0] - 100).astype(jnp.int32)
        plain, out = query(plain, images, jax.random.key(i))
        labelled, out_l, out_y = query(labelled, images, jax.random.key(i), labels)
        np.testing.assert_array_equal(out_l, out)
        np.testing.assert_array_equal(out_y, np.asarray(out_l[:, 0]) - 100)
        np.testing.assert_array_equal(labelled["images"], plain["images"])
        stored = np.asarray(labelled["images"][: int(labelled["count"]), 0])
        np.testing.assert_array_equal(labelled["labels"][: len(stored)], stored - 100)
    with pytest.raises(ValueError, match="needs the images' labels"):
        tr.pool_query(labelled, images, jax.random.key(0))
    with pytest.raises(ValueError, match="takes none"):
        tr.pool_query(plain, images, jax.random.key(0), labels)
    empty = tr.pool_init(0, (1,), labels=True)
    _, out_l, out_y = tr.pool_query(empty, images, jax.random.key(0), labels)
    np.testing.assert_array_equal(out_y, labels)


def _pool_reference(images, labels, count, items, key):
    """CycleGAN's pool written as the reference implementation's loop, image by image, in NumPy,
    with the draws pool_query documents: key i of split(key, n), split into a coin and a slot."""
    images, labels = np.array(images), np.array(labels)
    size, out, out_y = len(images), [], []
    for k, (new, y) in zip(jax.random.split(key, len(items[0])), zip(*items)):
        k_coin, k_index = jax.random.split(k)
        if count < size:  # filling: store it, return it
            images[count], labels[count] = new, y
            out.append(new), out_y.append(y)
        elif bool(jax.random.bernoulli(k_coin, 0.5)):  # swap with a uniformly chosen slot
            slot = int(jax.random.randint(k_index, (), 0, size))
            out.append(images[slot].copy()), out_y.append(labels[slot])
            images[slot], labels[slot] = new, y
        else:
            out.append(new), out_y.append(y)
        count = min(count + 1, size)
    return images, labels, count, np.stack(out), np.asarray(out_y)


@pytest.mark.parametrize("count", [0, 1, 3])
def test_pool_batch_equals_the_image_by_image_loop(count):
    """A whole batch at once, with images of one batch landing in the same slot and a later one
    swapping out an image stored earlier in the same batch: what the loop would do."""
    size, n = 3, 12
    start = tr.pool_init(size, (2, 2, 1), labels=True)
    start["images"] = jax.random.normal(jax.random.key(0), (size, 2, 2, 1))
    start["labels"] = jnp.arange(size, dtype=jnp.int32) + 100
    start["count"] = jnp.int32(count)
    query = jax.jit(tr.pool_query)
    collisions = 0
    for t in range(6):
        new = jax.random.normal(jax.random.key(t + 1), (n, 2, 2, 1))
        y = jnp.arange(n, dtype=jnp.int32) + 1000 + 100 * t  # unique across batches
        key = jax.random.key(50 + t)
        want = _pool_reference(start["images"], start["labels"], int(start["count"]), (new, y), key)
        got_pool, got, got_y = query(start, new, key, y)
        np.testing.assert_array_equal(got, want[3])
        np.testing.assert_array_equal(got_y, want[4])
        np.testing.assert_array_equal(got_pool["images"], want[0])
        np.testing.assert_array_equal(got_pool["labels"], want[1])
        assert int(got_pool["count"]) == want[2]
        # a returned image that was one of this batch's: stored and swapped out within the batch
        collisions += int(np.isin(np.asarray(got_y), np.asarray(y)[:, None]).sum()
                          - np.sum(np.asarray(got_y) == np.asarray(y)))  # fmt: skip
        start = got_pool
    assert collisions > 0


def test_pool_resumes_bit_for_bit():
    """The pool is plain arrays: stopping after a partly filled pool, saving it through NumPy and
    going on gives what going straight on gives."""
    imgs = jax.random.normal(jax.random.key(1), (6, 2, 4, 4, 1))
    keys = jax.random.split(jax.random.key(2), 6)
    straight = tr.pool_init(5, (4, 4, 1))
    outs = []
    for t in range(6):
        straight, o = tr.pool_query(straight, imgs[t], keys[t])
        outs.append(o)
    resumed = tr.pool_init(5, (4, 4, 1))
    for t in range(2):  # 4 of 5 slots filled
        resumed, _ = tr.pool_query(resumed, imgs[t], keys[t])
    resumed = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), resumed)
    for t in range(2, 6):
        resumed, o = tr.pool_query(resumed, imgs[t], keys[t])
        np.testing.assert_array_equal(o, outs[t])
    np.testing.assert_array_equal(resumed["images"], straight["images"])


# ----------------------------------------------------------------------------- the Pix2Pix step


def _bce(logits, label):
    """Sigmoid cross-entropy written out: max(x, 0) - x * y + log(1 + exp(-|x|))."""
    return jnp.mean(jnp.maximum(logits, 0) - logits * label + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def test_pix2pix_step_against_the_losses_written_out():
    """With SGD(1) in place of Adam each network moves by minus its loss's gradient: D's on
    (a, b) against (a, G(a)) with G(a) held fixed, then G's GAN term against the *updated* D
    plus 100 x L1, the same dropout draw in both."""
    import optax

    from jaxgen.gan import pix2pix

    spec = pix2pix.Pix2Pix(g_features=(4, 8, 8), d_features=(4, 8), dropout=0.5)
    sgd = optax.sgd(1.0)
    state = pix2pix.init_state(spec, 0, sgd, sgd)
    a = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1), minval=-1, maxval=1)
    b = jax.random.uniform(jax.random.key(2), (2, 8, 8, 1), minval=-1, maxval=1)
    new, metrics = jax.jit(
        lambda s, a, b: pix2pix.train_step(s, a, b, spec=spec, tx_g=sgd, tx_d=sgd)
    )(state, a, b)

    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 0)
    g, d = state.params["g"], state.params["d"]

    def G(g):
        return unet(g, a, key=key, dropout_rate=0.5)

    def D(d, x):
        return patchgan(d, jnp.concatenate([a, x], axis=-1))

    fake = G(g)

    def d_loss(d):
        return 0.5 * (_bce(D(d, b), 1.0) + _bce(D(d, fake), 0.0))

    d_want = jax.tree.map(lambda p, q: p - q, d, jax.jit(jax.grad(d_loss))(d))

    def g_loss(g):
        f = G(g)
        return _bce(D(d_want, f), 1.0) + 100.0 * jnp.mean(jnp.abs(f - b))

    g_want = jax.tree.map(lambda p, q: p - q, g, jax.jit(jax.grad(g_loss))(g))
    for got, want in ((new.params["d"], d_want), (new.params["g"], g_want)):
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(metrics["d_loss"], d_loss(d), rtol=1e-5)
    np.testing.assert_allclose(metrics["g_l1"], jnp.mean(jnp.abs(fake - b)), rtol=1e-5)
    assert int(new.step) == 1

    # gan_weight=0, the L1-only baseline: D stays as it was, G moves by minus 100 x L1's gradient
    spec0 = spec._replace(gan_weight=0.0)
    new0, m0 = jax.jit(lambda s, a, b: pix2pix.train_step(s, a, b, spec=spec0, tx_g=sgd, tx_d=sgd))(
        state, a, b
    )
    for x, y in zip(jax.tree.leaves(new0.params["d"]), jax.tree.leaves(d)):
        np.testing.assert_array_equal(x, y)
    l1_grad = jax.jit(jax.grad(lambda g: 100.0 * jnp.mean(jnp.abs(G(g) - b))))(g)
    for x, p, q in zip(*(jax.tree.leaves(t) for t in (new0.params["g"], g, l1_grad))):
        np.testing.assert_allclose(x, p - q, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(m0["g_loss"], 100.0 * jnp.mean(jnp.abs(fake - b)), rtol=1e-5)


# ----------------------------------------------------------------------------- the CycleGAN step


@pytest.mark.parametrize("conditional", [False, True])
def test_cyclegan_step_against_the_losses_written_out(conditional):
    """SGD(1) in place of Adam: the generators move by minus the gradient of the least-squares,
    cycle (x10) and identity (x5) terms against the discriminators as they were; each
    discriminator by minus its loss's gradient on real images against what its history
    returned for the generated ones; the histories hold those images afterwards. Conditional:
    each discriminator sees every image with its label (a generated one: its source's label,
    a stored one: the label stored with it). Unconditional, with ``augment_shift=1``: every
    discriminator input in both updates is first moved by ``random_shift`` with keys from the
    step's key (the cycle and identity terms see the images as they are)."""
    import optax

    from jaxgen.gan import cyclegan

    spec = cyclegan.CycleGan(
        g_features=2, g_blocks=1, d_features=(4, 8), pool_size=3, num_classes=6 * conditional,
        augment_shift=0 if conditional else 1,
    )  # fmt: skip
    sgd = optax.sgd(1.0)
    state = cyclegan.init_state(spec, 0, (8, 8, 1), (8, 8, 1), sgd, sgd)
    full = {  # full histories, so the discriminators see stored images as well as new ones
        d: {"images": jax.random.normal(jax.random.key(i), (3, 8, 8, 1)), "count": jnp.int32(3)}
        for i, d in enumerate("ab")
    }
    if conditional:
        # stored labels 4 and 5, the batches' 0 to 3
        full["a"]["labels"], full["b"]["labels"] = jnp.asarray([4, 5, 4]), jnp.asarray([5, 4, 5])
    state = state._replace(pools=full)
    a = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1), minval=-1, maxval=1)
    b = jax.random.uniform(jax.random.key(2), (2, 8, 8, 1), minval=-1, maxval=1)
    la, lb = (jnp.asarray([1, 3]), jnp.asarray([0, 2])) if conditional else (None, None)
    step = jax.jit(
        lambda s, a, b, la, lb: cyclegan.train_step(s, a, b, la, lb, spec=spec, tx_g=sgd, tx_d=sgd)
    )
    new, metrics = step(state, a, b, la, lb)

    p = state.params
    G = tr.resnet_generator

    def D(params, x, y):
        return tr.patchgan(params, x, y if conditional else None)

    def ls(x, y):
        return jnp.mean(jnp.square(x - y))

    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 0)
    k_a, k_b = jax.random.split(key)  # the histories'
    k_g, k_d = jax.random.split(jax.random.fold_in(key, 1))  # the augmentation's
    kg, kd = jax.random.split(k_g, 2), jax.random.split(k_d, 4)

    def shift(x, k):
        return x if conditional else tr.random_shift(x, k, 1)

    def g_loss(g):
        fb, fa = G(g["g_ab"], a), G(g["g_ba"], b)
        gan = ls(D(p["d_b"], shift(fb, kg[0]), la), 1.0) + ls(
            D(p["d_a"], shift(fa, kg[1]), lb), 1.0
        )
        cyc = jnp.mean(jnp.abs(G(g["g_ba"], fb) - a)) + jnp.mean(jnp.abs(G(g["g_ab"], fa) - b))
        idt = jnp.mean(jnp.abs(G(g["g_ab"], b) - b)) + jnp.mean(jnp.abs(G(g["g_ba"], a) - a))
        return gan + 10.0 * cyc + 5.0 * idt

    gens = {k: p[k] for k in ("g_ab", "g_ba")}
    g_value, g_grad = jax.jit(jax.value_and_grad(g_loss))(gens)  # one compilation for both
    g_want = jax.tree.map(lambda x, y: x - y, gens, g_grad)
    fake_b, fake_a = jax.jit(lambda p: (G(p["g_ab"], a), G(p["g_ba"], b)))(p)
    if conditional:  # the generated images' labels: G_ab's carry a's, G_ba's carry b's
        _, old_a, old_la = tr.pool_query(state.pools["a"], fake_a, k_a, lb)
        _, old_b, old_lb = tr.pool_query(state.pools["b"], fake_b, k_b, la)
        # a stored image came back with its stored label
        assert {int(v) for v in [*old_la, *old_lb]} - {int(v) for v in [*la, *lb]}
    else:
        (_, old_a), (_, old_b) = (
            tr.pool_query(state.pools[d], f, k)
            for d, f, k in (("a", fake_a, k_a), ("b", fake_b, k_b))
        )
        old_la = old_lb = None
    swapped = [not np.allclose(o, f) for o, f in zip([*old_a, *old_b], [*fake_a, *fake_b])]
    assert any(swapped) and not all(swapped)  # some stored images came back, not only them

    seen = [shift(x, k) for x, k in zip((a, b, old_a, old_b), kd)]

    def d_loss(d):
        da = ls(D(d["d_a"], seen[0], la), 1.0) + jnp.mean(jnp.square(D(d["d_a"], seen[2], old_la)))
        db = ls(D(d["d_b"], seen[1], lb), 1.0) + jnp.mean(jnp.square(D(d["d_b"], seen[3], old_lb)))
        return 0.5 * (da + db)

    discs = {k: p[k] for k in ("d_a", "d_b")}
    d_want = jax.tree.map(lambda x, y: x - y, discs, jax.jit(jax.grad(d_loss))(discs))
    for name, want in {**g_want, **d_want}.items():
        for x, y in zip(jax.tree.leaves(new.params[name]), jax.tree.leaves(want)):
            np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5, err_msg=name)
    np.testing.assert_allclose(metrics["g_loss"], g_value, rtol=1e-5)
    want_pool = tr.pool_query(full["b"], fake_b, k_b, la)[0]
    np.testing.assert_allclose(new.pools["b"]["images"], want_pool["images"], rtol=1e-6)
    if conditional:
        np.testing.assert_array_equal(new.pools["b"]["labels"], want_pool["labels"])
        with pytest.raises(ValueError, match="need la and lb"):
            cyclegan.train_step(state, a, b, spec=spec, tx_g=sgd, tx_d=sgd)
    assert int(new.step) == 1


def test_cyclegan_semantic_term_asks_the_input_class_of_the_translation():
    """CyCADA's semantic consistency: CE of the frozen classifier on the translation against the
    class it reads in the input (float64 NumPy from the logits); with SGD(1), the generators move
    by minus ``semantic_weight`` times its gradient beyond the plain step, and the classifier
    stays as it was."""
    import optax

    from jaxgen.evaluation.classifier import classifier_apply, classifier_init
    from jaxgen.gan import cyclegan

    clf = classifier_init(jax.random.key(5), (8, 8, 1), widths=(4, 4, 4), feature_dim=8)
    x = jax.random.uniform(jax.random.key(6), (4, 8, 8, 1), minval=-1, maxval=1)
    y = jax.random.uniform(jax.random.key(7), (4, 8, 8, 1), minval=-1, maxval=1)
    lx = np.asarray(classifier_apply(clf, x)[0], np.float64)
    ly = np.asarray(classifier_apply(clf, y)[0], np.float64)
    logp = (
        ly
        - np.log(np.exp(ly - ly.max(1, keepdims=True)).sum(1, keepdims=True))
        - ly.max(1, keepdims=True)
    )
    want = -logp[np.arange(4), lx.argmax(1)].mean()
    np.testing.assert_allclose(cyclegan.semantic_loss(clf, x, y), want, rtol=1e-5)

    plain = cyclegan.CycleGan(g_features=2, g_blocks=1, d_features=(4, 8), pool_size=0)
    sem = plain._replace(semantic_weight=2.0)
    sgd = optax.sgd(1.0)
    a, b = x, y
    s0 = cyclegan.init_state(plain, 0, (8, 8, 1), (8, 8, 1), sgd, sgd)
    s1 = cyclegan.init_state(sem, 0, (8, 8, 1), (8, 8, 1), sgd, sgd, clf)
    with pytest.raises(ValueError, match="classifier is needed"):
        cyclegan.init_state(sem, 0, (8, 8, 1), (8, 8, 1), sgd, sgd)
    n0, _ = jax.jit(lambda s: cyclegan.train_step(s, a, b, spec=plain, tx_g=sgd, tx_d=sgd))(s0)
    n1, m1 = jax.jit(lambda s: cyclegan.train_step(s, a, b, spec=sem, tx_g=sgd, tx_d=sgd))(s1)
    G = tr.resnet_generator
    gens = {k: s0.params[k] for k in ("g_ab", "g_ba")}

    def sem_loss(g):
        def ce(inp, out):
            target = jnp.argmax(classifier_apply(clf, inp)[0], -1)
            lp = jax.nn.log_softmax(classifier_apply(clf, out)[0])
            return -jnp.take_along_axis(lp, target[:, None], -1).mean()

        return ce(a, G(g["g_ab"], a)) + ce(b, G(g["g_ba"], b))

    sem_value, grad = jax.jit(jax.value_and_grad(sem_loss))(gens)
    for k in gens:
        for p1, p0, g in zip(*(jax.tree.leaves(t[k]) for t in (n1.params, n0.params, grad))):
            np.testing.assert_allclose(p1, p0 - 2.0 * g, rtol=2e-4, atol=2e-5, err_msg=k)
    np.testing.assert_allclose(m1["semantic"], sem_value, rtol=1e-5)
    for p, q in zip(jax.tree.leaves(n1.params["sem"]), jax.tree.leaves(clf)):
        np.testing.assert_array_equal(p, q)


# ----------------------------------------------------------------------------- DiffAugment shift


def _find_offset(img, out, s):
    """The (dy, dx) in [-s, s]^2 that moves ``img`` to ``out`` (background -1), found by trying
    every one in NumPy; ``None`` when none does."""
    h, w = img.shape[:2]
    padded = np.pad(img, ((s, s), (s, s), (0, 0)), constant_values=-1.0)
    found = [
        (dy, dx)
        for dy in range(-s, s + 1)
        for dx in range(-s, s + 1)
        if np.array_equal(padded[s - dy : s - dy + h, s - dx : s - dx + w], out)
    ]
    return found[0] if len(found) == 1 else None


def test_random_shift_moves_each_image_by_its_own_offset_and_passes_gradients():
    x = jax.random.uniform(jax.random.key(0), (16, 6, 7, 2), minval=-1, maxval=1)
    assert tr.random_shift(x, jax.random.key(1), 0) is x
    s = 2
    out = np.asarray(jax.jit(tr.random_shift, static_argnums=2)(x, jax.random.key(1), s))
    offsets = [_find_offset(np.asarray(x[i]), out[i], s) for i in range(len(x))]
    assert None not in offsets  # every image is its input moved by one offset, border -1
    assert len(set(offsets)) > 4  # each image its own offset
    assert any(dy < 0 for dy, _ in offsets) and any(dx > 0 for _, dx in offsets)
    # linear in x: the gradient of sum(shift(x) * ct) is ct moved back, zero where cut off
    ct = jax.random.normal(jax.random.key(2), out.shape)
    g = jax.grad(lambda x: jnp.sum(tr.random_shift(x, jax.random.key(1), s) * ct))(x)
    for i, (dy, dx) in enumerate(offsets):
        want = np.zeros(x.shape[1:])
        h, w = x.shape[1:3]
        for r in range(h):
            for c in range(w):
                if 0 <= r + dy < h and 0 <= c + dx < w:
                    want[r, c] = ct[i, r + dy, c + dx]
        np.testing.assert_allclose(g[i], want, rtol=1e-6)
