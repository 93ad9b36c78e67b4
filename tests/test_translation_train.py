"""The Pix2Pix and CycleGAN recipes on the training core: exact resume (with a partly filled image
history), `jaxgen translate` against the library, and the refusals, which touch nothing."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from jaxgen import cli
from jaxgen.errors import UserError
from jaxgen.gan import translation as tr
from jaxgen.gan import translation_train as tt
from jaxgen.training import checkpoint

MNIST = Path(__file__).parent / "data" / "mnist"


def _files(w):
    return {p: p.read_bytes() for p in Path(w).rglob("*") if p.is_file()}


def _pix2pix_cfg(steps):
    c = tt.pix2pix_smoke_config()
    c.data.limit = 120
    c.data.holdout = 16
    c.model.g_features = (4, 4, 4, 4, 4)
    c.model.d_features = (4, 4)
    c.train.batch = 4
    c.train.steps = steps
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.train.eval_every = 2
    c.train.eval_images = 8
    c.train.sample_every = 100
    return c


def _cyclegan_cfg(steps, num_classes=0):
    c = tt.cyclegan_smoke_config()
    c.model.num_classes = num_classes
    c.data.a_source, c.data.a_path = "tfds", str(MNIST)  # MNIST (the committed slice) -> UCI
    c.data.limit = 120
    c.data.holdout = 16
    c.model.g_features = 2
    c.model.g_blocks = 1
    c.model.d_features = (4, 4)
    c.model.pool_size = 50  # 4 images a step: after 4 steps the history is still filling
    c.model.semantic_weight = 1.0  # the frozen domain-A classifier is part of the state too
    c.model.semantic_epochs = 1
    c.train.batch = 4
    c.train.steps = steps
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.train.eval_every = 2
    c.train.eval_images = 8
    c.train.sample_every = 100
    return c


def _assert_same_state(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def pix2pix_workdir(tmp_path_factory):
    w = tmp_path_factory.mktemp("p2p") / "whole"
    tt.train(_pix2pix_cfg(4), w, quiet=True)
    return w


@pytest.mark.xdist_group("translation_train")
def test_pix2pix_resumes_bit_for_bit_and_translates_as_the_library(
    pix2pix_workdir, tmp_path, capsys
):
    """Four steps straight equal two, a resume and two more, bit for bit (parameters, Adam
    moments, step). `jaxgen translate` writes what the library computes, from a .npy, a PNG or a
    folder, to a .npy or a folder of PNGs."""
    split = tmp_path / "split"
    tt.train(_pix2pix_cfg(2), split, quiet=True)
    tt.train(_pix2pix_cfg(4), split, quiet=True)
    a, b = tt.load(pix2pix_workdir, "latest"), tt.load(split, "latest")
    _assert_same_state(a.state, b.state)
    assert int(b.state.step) == 4
    rows = [json.loads(r) for r in (split / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "g_l1" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if "val_l1" in r] == [2, 4]
    assert (split / "samples" / "latest.png").exists()
    meta = json.loads((split / "jaxgen.json").read_text())
    assert meta["model"] == "pix2pix" and meta["image_shape_a"] == [28, 28, 1]
    assert meta["model_side"] == 32

    x = np.linspace(-1, 1, 3 * 28 * 28, dtype=np.float32).reshape(3, 28, 28, 1)
    np.save(tmp_path / "in.npy", x)
    out = tmp_path / "out.npy"
    grid = tmp_path / "g.png"
    w = str(pix2pix_workdir)
    argv = ["translate", "--workdir", w, "--input", str(tmp_path / "in.npy"), "--out", str(out)]
    assert cli.main([*argv, "--grid", str(grid), "--seed", "3"]) == 0
    model = tt.load(w)
    want = tt.translate(model, x, seed=3)
    # padded to 32 with the background, through the U-Net with dropout drawn from the seed, cropped
    x32 = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1.0)
    k = jax.random.fold_in(jax.random.key(3), 0)
    ref = tr.unet(model.params["g"], x32, key=k, dropout_rate=0.5)[:, 2:30, 2:30]
    np.testing.assert_allclose(want, ref, atol=1e-6)
    got = np.load(out)
    assert got.shape == (3, 28, 28, 1) and got.dtype == np.float32 and np.abs(got).max() <= 1
    np.testing.assert_array_equal(got, want)
    assert Image.open(grid).size[0] > 3 * 28
    # a folder in, a folder out: one PNG per input, named after it
    (tmp_path / "pngs").mkdir()
    for i in range(2):
        Image.fromarray(((x[i, ..., 0] + 1) * 127.5).round().astype(np.uint8)).save(
            tmp_path / "pngs" / f"d{i}.png"
        )
    assert cli.main(["translate", "--workdir", w, "--input", str(tmp_path / "pngs"),
                     "--out", str(tmp_path / "outdir")]) == 0  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "outdir").iterdir()) == ["d0.png", "d1.png"]
    assert Image.open(tmp_path / "outdir" / "d0.png").size == (28, 28)
    one = tmp_path / "one.npy"
    assert cli.main(["translate", "--workdir", w, "--input", str(tmp_path / "pngs" / "d1.png"),
                     "--out", str(one), "--seed", "3"]) == 0  # fmt: skip
    assert np.load(one).shape == (1, 28, 28, 1)


@pytest.mark.xdist_group("translation_train")
@pytest.mark.parametrize("num_classes", [0, 10])
def test_cyclegan_resumes_bit_for_bit_with_a_partly_filled_history(
    tmp_path, num_classes, monkeypatch
):
    """The image histories live in the train state: a run stopped at step 2 (8 of 50 stored) and
    resumed to 4 ends with the same histories, parameters and moments as 4 steps straight (with
    the semantic term on: its frozen classifier is in the state, restored on the resume rather
    than trained again, and unchanged). With class-conditional discriminators the histories'
    labels are the translated images' source labels, and they resume too."""
    from jaxgen.evaluation import classifier

    whole, split = tmp_path / "whole", tmp_path / "split"
    tt.train(_cyclegan_cfg(4, num_classes), whole, quiet=True)
    tt.train(_cyclegan_cfg(2, num_classes), split, quiet=True)
    mid = tt.load(split, "latest").state
    assert [int(mid.pools[d]["count"]) for d in "ab"] == [8, 8]
    assert ("labels" in mid.pools["a"]) == bool(num_classes)
    with monkeypatch.context() as m:
        m.setattr(classifier, "train_classifier", lambda *a, **k: pytest.fail("trained again"))
        tt.train(_cyclegan_cfg(4, num_classes), split, quiet=True)
    a, b = tt.load(whole, "latest"), tt.load(split, "latest")
    _assert_same_state(a.state, b.state)
    assert [int(b.state.pools[d]["count"]) for d in "ab"] == [16, 16]
    assert np.abs(np.asarray(b.state.pools["a"]["images"][:16])).max() > 0
    np.testing.assert_array_equal(b.state.pools["a"]["images"][16:], 0)  # not yet written
    if num_classes:  # history A holds G_ba's images of B's first 16 batch rows, with B's labels
        uci_labels = tt.load_domains(_cyclegan_cfg(4, num_classes))[1].labels[: 120 - 16]
        rows = tt.ImageBatches(np.zeros((120 - 16, 1)), 4, 1, labels=uci_labels)
        want = np.concatenate([rows.pair_for_step(s)[1] for s in range(4)])
        np.testing.assert_array_equal(b.state.pools["a"]["labels"][:16], want)
        assert b.state.params["d_a"]["classes"]["w"].shape[-1] == 10
    rows = [json.loads(r) for r in (split / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "cycle" in r] == [1, 2, 3, 4]
    assert all(r["semantic"] > 0 for r in rows if "cycle" in r)
    for x, y in zip(jax.tree.leaves(mid.params["sem"]), jax.tree.leaves(b.state.params["sem"])):
        np.testing.assert_array_equal(x, y)
    assert [r["step"] for r in rows if "val_cycle" in r] == [2, 4]
    if num_classes:  # the discriminators' labels do not reach the generators: one CLI check will do
        return
    # both directions through the CLI, as the library computes them
    x = np.linspace(-1, 1, 2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28, 1)
    np.save(tmp_path / "in.npy", x)
    model = tt.load(whole)
    for direction, g in (("a2b", "g_ab"), ("b2a", "g_ba")):  # 28x28: no padding
        np.testing.assert_allclose(
            tt.translate(model, x, direction), tr.resnet_generator(model.params[g], x), atol=1e-6
        )
    for direction in ("a2b", "b2a"):
        out = tmp_path / f"{direction}.npy"
        assert cli.main(["translate", "--workdir", str(whole), "--input", str(tmp_path / "in.npy"),
                         "--out", str(out), "--direction", direction]) == 0  # fmt: skip
        np.testing.assert_array_equal(np.load(out), tt.translate(model, x, direction))
    assert np.abs(np.load(tmp_path / "a2b.npy") - np.load(tmp_path / "b2a.npy")).max() > 1e-4
    # a workdir written before the field existed reads as unconditional
    meta = json.loads((split / checkpoint.META).read_text())
    del meta["config"]["model"]["num_classes"]
    checkpoint.write_json_atomic(split / checkpoint.META, meta)
    before = _files(split)
    with pytest.raises(UserError, match="config.model.num_classes=0, but the config says 10"):
        tt.train(_cyclegan_cfg(6, 10), split, quiet=True)
    assert _files(split) == before
    del meta["config"]["model"]["augment_shift"]  # likewise: written without augmentation
    checkpoint.write_json_atomic(split / checkpoint.META, meta)
    before = _files(split)
    shifted = _cyclegan_cfg(6)
    shifted.model.augment_shift = 2
    with pytest.raises(UserError, match="config.model.augment_shift=0, but the config says 2"):
        tt.train(shifted, split, quiet=True)
    assert _files(split) == before
    tt.load(split)  # and still loads as what it is


@pytest.mark.xdist_group("translation_train")
def test_bad_input_is_refused_and_touches_nothing(pix2pix_workdir, tmp_path, capsys):
    """Each refusal is one clear error; no workdir file changes and no output is written."""
    w = str(pix2pix_workdir)
    before = _files(pix2pix_workdir)
    x = np.zeros((2, 28, 28, 1), np.float32)
    np.save(tmp_path / "grey.npy", x)
    np.save(tmp_path / "small.npy", x[:, :20, :20])
    Image.new("RGB", (28, 28)).save(tmp_path / "rgb.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "gan").mkdir()
    checkpoint.write_json_atomic(tmp_path / "gan" / "jaxgen.json", {"model": "gan", "config": {}})
    gan_before = _files(tmp_path / "gan")
    out = tmp_path / "out.npy"
    cases = [
        ([w, "rgb.png"], "translates 28x28 grey images (1 channel(s)) of domain A, got 28x28x3"),
        ([w, "small.npy"], "translates 28x28 grey images"),
        ([w, "empty"], "holds no images"),
        ([w, "missing.png"], "does not exist"),
        ([w, "grey.npy", "--direction", "b2a"], "translates one way only"),
        ([w, "grey.npy", "--direction", "sideways"], "--direction must be a2b or b2a"),
        ([str(tmp_path / "gan"), "grey.npy"], "needs a pix2pix or cyclegan workdir"),
        ([str(tmp_path / "nowhere"), "grey.npy"], "holds no trained model"),
    ]
    for (workdir, inp, *more), match in cases:
        argv = ["translate", "--workdir", workdir, "--input", str(tmp_path / inp), "--out",
                str(out), *more]  # fmt: skip
        assert cli.main(argv) == 2, argv
        assert match in capsys.readouterr().err, argv
    assert not out.exists()
    # resuming with other networks or losses is refused before anything is written
    changed = _pix2pix_cfg(6)
    changed.model.l1_weight = 10.0
    with pytest.raises(UserError, match="config.model.l1_weight=100.0"):
        tt.train(changed, pix2pix_workdir, quiet=True)
    with pytest.raises(UserError, match="holds a 'gan' model|gan"):
        tt.train(_pix2pix_cfg(2), tmp_path / "gan", quiet=True)
    bad = _pix2pix_cfg(6)
    bad.data.task = "colour"
    with pytest.raises(UserError, match="config.data.task must be 'edges' or 'lowres'"):
        tt.train(bad, pix2pix_workdir, quiet=True)
    assert _files(pix2pix_workdir) == before
    assert _files(tmp_path / "gan") == gan_before


@pytest.mark.xdist_group("translation_train")
def test_a_folder_of_pairs_trains_and_wants_its_own_channels(tmp_path, capsys):
    """`data.pairs`: A/ and B/ with the same names (RGB to grey here) train as they are; a
    mismatched folder is refused before a workdir exists; translating grey images with this
    RGB-input model names the channels."""
    rng = np.random.default_rng(0)
    for d in ("A", "B"):
        (tmp_path / "pairs" / d).mkdir(parents=True)
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(
            tmp_path / "pairs" / "A" / f"{i:02d}.png"
        )
        Image.fromarray(rng.integers(0, 255, (32, 32), np.uint8)).save(
            tmp_path / "pairs" / "B" / f"{i:02d}.png"
        )
    cfg = _pix2pix_cfg(1)
    cfg.data.pairs = str(tmp_path / "pairs")
    cfg.data.holdout = 4
    w = tmp_path / "w"
    tt.train(cfg, w, quiet=True)
    model = tt.load(w)
    assert model.shape_a == (32, 32, 3) and model.shape_b == (32, 32, 1) and model.side == 32
    y = tt.translate(model, np.zeros((2, 32, 32, 3), np.float32))
    assert y.shape == (2, 32, 32, 1)
    np.save(tmp_path / "grey.npy", np.zeros((1, 32, 32, 1), np.float32))
    assert cli.main(["translate", "--workdir", str(w), "--input", str(tmp_path / "grey.npy"),
                     "--out", str(tmp_path / "o.npy")]) == 2  # fmt: skip
    assert "translates 32x32 RGB images (3 channel(s))" in capsys.readouterr().err
    (tmp_path / "pairs" / "B" / "00.png").rename(tmp_path / "pairs" / "B" / "zz.png")
    with pytest.raises(UserError, match="only in A/: 00.png; only in B/: zz.png"):
        tt.train(cfg, tmp_path / "w2", quiet=True)
    assert not (tmp_path / "w2").exists()


def test_builtin_digits_framed_as_mnist_frames_its_own():
    """``builtin_digits(28, box=20)``: the 20x20 upsampling centred on a background of -1."""
    from jaxgen.data.images import builtin_digits

    framed, inner = builtin_digits(28, 20), builtin_digits(20)
    assert framed.images.shape == (1797, 28, 28, 1)
    np.testing.assert_array_equal(framed.images[:, 4:24, 4:24], inner.images)
    np.testing.assert_array_equal(framed.labels, inner.labels)
    ring = np.ones((28, 28), bool)
    ring[4:24, 4:24] = False
    assert (framed.images[:, ring] == -1).all()
    with pytest.raises(UserError, match="config.data.builtin_box must be an integer in 8 ... 28"):
        c = tt.cyclegan_smoke_config()
        c.data.builtin_box = 40
        tt.validate_config(c)


def test_class_conditional_cyclegan_refuses_unlabelled_or_out_of_range_domains(tmp_path):
    """Class-conditional discriminators need both domains' labels, inside ``num_classes``; each
    refusal names the field and the fix, before anything is written."""
    w = tmp_path / "w"
    np.save(tmp_path / "b.npy", np.zeros((40, 28, 28, 1), np.float32))  # a .npy has no labels
    unlabelled = _cyclegan_cfg(2, 10)
    unlabelled.data.b_path = str(tmp_path / "b.npy")
    cases = [
        (_cyclegan_cfg(2, 5), r"labels in \[0, 9\], outside 0..4; set config.model.num_classes=10"),
        (unlabelled, "needs both domains' labels, and domain B"),
    ]
    negative = _cyclegan_cfg(2)
    negative.model.num_classes = -1  # (a float or a bool: ml_collections refuses the type)
    cases.append((negative, "config.model.num_classes must be an integer >= 0"))
    bad_shift = _cyclegan_cfg(2)
    bad_shift.model.augment_shift = -1
    cases.append((bad_shift, "config.model.augment_shift must be an integer >= 0"))
    for cfg, match in cases:
        with pytest.raises(UserError, match=match):
            tt.train(cfg, w, quiet=True)
        assert not w.exists()


def test_cyclegan_holds_out_a_count_per_domain(tmp_path):
    """``data.holdout_a`` / ``data.holdout_b`` hold out each domain's own last images (more MNIST
    digits to measure on than the 1,797 UCI scans allow); 0 (and a workdir written before the
    fields) falls back to ``data.holdout``; a negative count or one that leaves no training
    images is refused, naming the field, before anything is written."""
    w = tmp_path / "w"
    c = _cyclegan_cfg(2)
    c.data.holdout_a, c.data.holdout_b = 24, 8
    described = tt.cyclegan_recipe(c, w).describe
    assert "(96 images)" in described and "(112)" in described  # 120 of each minus its own
    assert "24 of A and 8 of B held out" in described
    c.data.holdout_b = 0
    assert tt.cyclegan_holdout(c, "a") == (24, "holdout_a")
    assert tt.cyclegan_holdout(c, "b") == (16, "holdout")
    legacy = tt.cyclegan_smoke_config()
    del legacy.data["holdout_a"], legacy.data["holdout_b"]
    assert tt.cyclegan_holdout(legacy, "a") == (legacy.data.holdout, "holdout")
    negative, too_many = _cyclegan_cfg(2), _cyclegan_cfg(2)
    negative.data.holdout_b = -1
    too_many.data.holdout_a = 120
    cases = [
        (negative, "config.data.holdout_b must be an integer >= 0"),
        (too_many, "has 120 images, not more than config.data.holdout_a=120"),
    ]
    for cfg, match in cases:
        with pytest.raises(UserError, match=match):
            tt.train(cfg, w, quiet=True)
        assert not w.exists()
