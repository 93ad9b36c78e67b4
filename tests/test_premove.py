"""Workdirs written before the redesign (issue 16) still sample and resume with the same numbers.

``tests/data/premove/`` holds a tiny char-RNN and a tiny DCGAN workdir written by jaxgen at commit
ed1e841, and what that code sampled and logged after resuming them (README.md there)."""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import cli, nn

DATA = Path(__file__).parent / "data" / "premove"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPECTED = json.loads((DATA / "expected.json").read_text())
CHARRNN = [
    "--config.model.hidden=8",
    "--config.model.layers=1",
    "--config.train.batch=2",
    "--config.train.seq_len=8",
    "--config.train.log_every=2",
    "--config.train.eval_every=4",
    "--config.train.checkpoint_every=2",
]
DCGAN = [
    "--config.model.features=(2,2,2)",
    "--config.train.batch=4",
    "--config.train.log_every=1",
    "--config.train.sample_every=2",
    "--config.train.checkpoint_every=2",
    "--config.train.grid=4",
]


def _rows(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out.setdefault(row["step"], {}).update(row)
    return out


@pytest.fixture
def workdir(tmp_path):
    def copy(name):
        return Path(shutil.copytree(DATA / name, tmp_path / name))

    return copy


def test_premove_charrnn_samples_the_same_text(workdir, capsys):
    w = workdir("charrnn")
    assert (
        cli.main(
            ["sample", "--workdir", str(w), "--prime", "The ", "--length", "60", "--seed", "0"]
        )
        == 0
    )
    assert capsys.readouterr().out == EXPECTED["charrnn_sample_seed0"]


def _bernoulli_dropout(key, x, rate):
    """``nn.dropout`` as ed1e841 drew it (one threefry word per element); since 2026-12-05 it
    draws four elements per word (``nn.dropout_keep``), so other masks and other losses."""
    if key is None or rate == 0.0:
        return x
    return jnp.where(jax.random.bernoulli(key, 1.0 - rate, x.shape), x / (1.0 - rate), 0.0)


def test_premove_charrnn_resumes_to_the_same_losses(workdir, monkeypatch):
    monkeypatch.setattr(nn, "dropout", _bernoulli_dropout)  # the masks expected.json saw
    w = workdir("charrnn")
    assert (
        cli.main(
            [
                "train",
                "--config",
                f"{CONFIGS / 'charrnn.py'}:smoke",
                "--workdir",
                str(w),
                "--quiet",
                "--config.train.steps=6",
                *CHARRNN,
            ]
        )
        == 0
    )
    row = _rows(w / "metrics.jsonl")[6]
    want = EXPECTED["charrnn_resumed_to_6"]
    # The suite compiles without LLVM optimisation (conftest.py), which rounds differently from
    # the CLI run that wrote expected.json: float32 rounding is the only difference allowed.
    assert row["loss"] == pytest.approx(want["loss"], rel=1e-6)
    assert row["val_loss"] == pytest.approx(want["val_loss"], rel=1e-6)


def test_premove_dcgan_samples_and_resumes(workdir, tmp_path):
    w = workdir("dcgan")
    out = tmp_path / "s.npy"
    assert (
        cli.main(["sample", "--workdir", str(w), "--num", "4", "--out", str(out), "--seed", "0"])
        == 0
    )
    np.testing.assert_allclose(
        np.load(out), np.load(DATA / "dcgan_sample_seed0.npy"), rtol=0, atol=1e-6
    )
    assert (
        cli.main(
            [
                "train",
                "--config",
                f"{CONFIGS / 'dcgan_mnist.py'}:smoke",
                "--workdir",
                str(w),
                "--quiet",
                "--config.train.steps=4",
                *DCGAN,
            ]
        )
        == 0
    )
    rows = _rows(w / "metrics.jsonl")
    for step, want in EXPECTED["dcgan_resumed_to_4"].items():
        got = rows[int(step)]
        assert (got["d_loss"], got["g_loss"]) == pytest.approx(
            (want["d_loss"], want["g_loss"]), rel=1e-6
        )
