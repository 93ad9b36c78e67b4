"""The command line before any work starts: bad inputs give one line and exit 2 and touch nothing,
help that lists the config fields, sampling flags checked before the model loads,
``python -m jaxgen``, and the progress line's time left under a time budget."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jaxgen import cli
from jaxgen.config import (
    describe_fields,
    field_comments,
    load_config,
    split_config_spec,
    suggest_field,
)
from jaxgen.errors import UserError
from jaxgen.training.metrics import RunLog, format_eta

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "charrnn.py") + ":smoke"
GAN_SMOKE = str(ROOT / "configs" / "gan_mnist.py") + ":smoke"
README = ROOT / "README.md"


def tree_hash(*roots: Path) -> str:
    """A digest of every path, file's bytes and mode under ``roots`` (what "touch nothing"
    means)."""
    h = hashlib.sha256()
    for root in roots:
        paths = [root] + (sorted(root.rglob("*")) if root.is_dir() else [])
        for p in paths:
            h.update(str(p).encode() + oct(p.lstat().st_mode).encode())
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


def one_line_error(capsys, argv) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("jaxgen: error: ") and err.count("\n") == 1 and "Traceback" not in err, (
        err
    )
    return err


@pytest.fixture
def no_work(monkeypatch):
    """Loading data or a model fails the test: the checks under test must come first."""
    from jaxgen import charrnn, gan
    from jaxgen.gan import evaluate

    def boom(*a, **k):
        raise AssertionError("work started before the inputs were checked")

    for mod, name in (
        (charrnn.train, "prepare_data"),
        (gan.train, "prepare_data"),
        (charrnn.sample, "load_for_sampling"),
        (gan.sampling, "load_generator"),
        (evaluate, "run_eval"),
    ):
        monkeypatch.setattr(mod, name, boom)


# ----------------------------------------------------------------------------- time left


def test_format_eta_names_what_ends_the_run():
    assert format_eta(None, None) == "left ?"
    assert format_eta(90.0, None) == "left 1m30s"
    assert (
        format_eta(1889.0, 130.0) == "left 2m10s (time budget)"
    )  # the 31m29s on a short budget
    assert format_eta(40.0, 130.0) == "left 0m40s (steps)"
    assert (
        format_eta(None, 130.0) == "left <=2m10s (time budget)"
    )  # speed unknown: the budget bounds it
    assert format_eta(100.0, -3.0) == "left 0m00s (time budget)"  # past the budget: never negative
    assert format_eta(7300.0, None) == "left 2h01m"


def test_progress_line_uses_the_budget(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(
        sys.modules, "tensorboardX", None
    )  # no event files: a slow import, not under test
    log = RunLog(tmp_path, 10, quiet=False, time_budget_s=120.0)
    try:
        log.progress(10, 1.0, 100.0, 1889.0, elapsed_s=100.0)  # step == total: always drawn
    finally:
        log.close()
    assert "left 0m20s (time budget)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- train: bad inputs


def _write(p: Path, text: str) -> str:
    p.write_text(text)
    return str(p)


PLAIN = "from jaxgen.charrnn.config import default_config\nget_config = default_config\n"


@pytest.mark.parametrize(
    "case",
    [
        "config_readme",
        "config_missing",
        "config_dir",
        "config_no_get_config",
        "config_raises",
        "workdir_file",
        "workdir_under_file",
        "workdir_readonly",
        "steps_negative",
        "gan_epochs_negative",
        "nothing_to_train",
        "budget_negative",
        "field_typo",
        "option_typo",
        "variant_unknown",
        "variant_of_a_plain_file",
    ],
)
def test_train_refuses_before_any_work(tmp_path, capsys, monkeypatch, no_work, case):
    a = tmp_path / "a.txt"
    a.write_text("a file\n")
    w = str(tmp_path / "w")
    argv, match = {
        "config_readme": (["--config", str(README), "--workdir", w], "not a Python config file"),
        "config_missing": (
            ["--config", str(tmp_path / "nope.py"), "--workdir", w],
            "does not exist",
        ),
        "config_dir": (["--config", str(tmp_path), "--workdir", w], "is a directory"),
        "config_no_get_config": (
            ["--config", _write(tmp_path / "c.py", "x = 1\n"), "--workdir", w],
            r"has no get_config\(\)",
        ),
        "config_raises": (
            [
                "--config",
                _write(tmp_path / "r.py", "def get_config():\n    return 1 / 0\n"),
                "--workdir",
                w,
            ],
            r"get_config\(\) in .* failed: ZeroDivisionError",
        ),
        "workdir_file": (
            ["--config", SMOKE, "--workdir", str(a)],
            "a.txt' is a file, not a directory; pass",
        ),
        "workdir_under_file": (
            ["--config", SMOKE, "--workdir", str(a / "run")],
            "cannot be created: .*a.txt' is a file",
        ),
        "workdir_readonly": (["--config", SMOKE, "--workdir", w], "is not writable"),
        "steps_negative": (
            ["--config", SMOKE, "--workdir", w, "--config.train.steps=-5"],
            r"error: --config\.train\.steps must be an integer >= 0 "
            r"\(train.steps=0: train for train.epochs",
        ),
        "gan_epochs_negative": (
            [
                "--config",
                GAN_SMOKE,
                "--workdir",
                w,
                "--config.train.steps=0",
                "--config.train.epochs=-1",
            ],
            "train.epochs must be an integer >= 0",
        ),
        "nothing_to_train": (
            [
                "--config",
                SMOKE,
                "--workdir",
                w,
                "--config.train.steps=0",
                "--config.train.epochs=0",
            ],
            "nothing to train",
        ),
        "budget_negative": (
            ["--config", SMOKE, "--workdir", w, "--config.train.time_budget_s=-1"],
            r"error: --config\.train\.time_budget_s must be a number of "
            r"seconds >= 0",
        ),
        "field_typo": (
            ["--config", SMOKE, "--workdir", w, "--config.train.stesp=5"],
            "unknown config field 'train.stesp'; did you mean --config.train.steps",
        ),
        "option_typo": (["--config", SMOKE, "--workdr", w], "did you mean --workdir"),
        "variant_unknown": (
            ["--config", SMOKE.replace(":smoke", ":smok"), "--workdir", w],
            r"charrnn.py' has no variant 'smok'; valid variants: default, cpu, "
            "smoke",
        ),
        "variant_of_a_plain_file": (
            ["--config", _write(tmp_path / "p.py", PLAIN) + ":smoke", "--workdir", w],
            r"p.py' has no variants .*without ':smoke'",
        ),
    }[case]
    if case == "workdir_readonly":  # root may write anywhere, so make the permission check say no
        monkeypatch.setattr(cli.os, "access", lambda *a, **k: False)
    before = tree_hash(tmp_path)
    err = one_line_error(capsys, ["train", *argv])
    assert re.search(match, err), err
    assert tree_hash(tmp_path) == before


@pytest.mark.parametrize(
    "argv,match",
    [
        (["train", "--config", "README.md", "--workdir", "{tmp}/w"], "is not a Python config file"),
        (
            ["train", "--config", "configs/charrnn.py:smoke", "--workdir", "README.md"],
            "--workdir 'README.md' is a file",
        ),
    ],
)
def test_python_m_jaxgen_refuses_in_one_line_touching_nothing(tmp_path, argv, match):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    before = tree_hash(tmp_path, README)
    r = subprocess.run(
        [sys.executable, "-m", "jaxgen", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert r.returncode == 2, r.stderr
    assert (
        r.stderr.startswith("jaxgen: error: ") and r.stderr.count("\n") == 1 and match in r.stderr
    ), r.stderr
    assert r.stdout == ""
    assert tree_hash(tmp_path, README) == before
    assert not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------- config variants


@pytest.mark.parametrize(
    "spec,want",
    [
        (
            "charrnn.py",
            {"model.hidden": 512, "train.batch": 128, "train.steps": 0, "train.lr": 1e-3},
        ),
        ("charrnn.py:default", {"model.hidden": 512, "train.batch": 128, "model.dropout": 0.5}),
        (
            "charrnn.py:cpu",
            {"model.hidden": 256, "train.seq_len": 64, "train.time_budget_s": 900.0},
        ),
        ("charrnn.py:smoke", {"model.hidden": 32, "train.steps": 40, "train.lr": 1e-2}),
        ("gan_mnist.py", {"train.lr_g": 1e-3, "train.lr_d": 2e-4, "data.source": "tfds"}),
        (
            "gan_mnist.py:classic",
            {"train.lr_g": 2e-3, "model.latent_dist": "uniform", "train.epochs": 100},
        ),
        ("gan_mnist.py:smoke", {"data.source": "builtin", "train.steps": 60, "train.batch": 32}),
        (
            "dcgan_mnist.py",
            {"model.arch": "dcgan", "train.steps": 8500, "train.lr_decay_start": 3500},
        ),
        (
            "dcgan_mnist.py:smoke",
            {"model.features": (8, 16, 32), "data.source": "builtin", "train.steps": 20},
        ),
        (
            "dcgan_svhn.py",
            {"model.channels": 3, "train.epochs": 20, "data.tfds_name": "svhn_cropped"},
        ),
        ("dcgan_svhn.py:smoke", {"model.channels": 3, "data.limit": 512, "train.steps": 20}),
        (
            "stackgan_mnist.py",
            {"model.text_encoder": "bilstm", "model.aux_weight": 1.0, "train.steps": 6000},
        ),
        (
            "stackgan_mnist.py:plain",
            {"model.text_encoder": "lstm", "model.aux_weight": 0.0, "text.pretrain_steps": 1500},
        ),
        (
            "cyclegan_mnist_uci.py",
            {"model.num_classes": 10, "model.semantic_weight": 0.0, "data.builtin_box": 20},
        ),
        (
            "charrnn_mingru.py",  # the README's equal-time recipe
            {
                "model.cell": "mingru",
                "model.conv": 4,
                "model.mlp_ratio": 2,
                "model.dropout": 0.1,
                "train.weight_decay": 0.2,
            },
        ),
        (
            "cyclegan_mnist_uci.py:unconditional",
            {"model.num_classes": 0, "model.semantic_weight": 1.0, "data.builtin_box": 20},
        ),
    ],
)
def test_config_variants_set_their_own_fields(spec, want):
    """``FILE:VARIANT`` reaches get_config(VARIANT); the numbers are those of the twin files the
    variants replaced (configs/charrnn_smoke.py and the like, before issue 16)."""
    cfg = load_config(ROOT / "configs" / spec)
    got = {name: cfg[name.split(".")[0]][name.split(".")[1]] for name in want}
    assert got == want


def test_split_config_spec(tmp_path):
    assert split_config_spec("configs/a.py:smoke") == (Path("configs/a.py"), "smoke")
    assert split_config_spec("c:/x/a.py:cpu") == (Path("c:/x/a.py"), "cpu")  # the last ':' counts
    assert split_config_spec(Path("configs/a.py")) == (Path("configs/a.py"), None)
    odd = tmp_path / "run:2.py"  # a file whose name holds a ':' is taken as it is
    odd.write_text("")
    assert split_config_spec(str(odd)) == (odd, None)
    with pytest.raises(UserError, match="no variant ''; valid variants: default, classic, smoke"):
        load_config(str(ROOT / "configs" / "gan_mnist.py") + ":")


@pytest.mark.parametrize(
    "library,shown",
    [
        ("config.train.lr must be positive, got 0", "--config.train.lr must be positive, got 0"),
        (
            "did you mean config.train.steps or config.train.epochs?",
            "did you mean --config.train.steps or --config.train.epochs?",
        ),
        (
            (
                "set config.model.image_size=28 (or resize the data "
                "(config.data.image_size=32 for tfds)"
            ),
            (
                "set --config.model.image_size=28 (or resize the data "
                "(--config.data.image_size=32 for tfds)"
            ),
        ),
        (
            "--config.train.batch=60 (the global batch)",
            "--config.train.batch=60 (the global batch)",
        ),
        (
            "'myconfig.py' failed; see jaxgen.config and /tmp/config.py, config.py, 'config.v2'",
            "'myconfig.py' failed; see jaxgen.config and /tmp/config.py, config.py, 'config.v2'",
        ),
        ("unknown config field 'train.stesp'", "unknown config field 'train.stesp'"),
    ],
)
def test_cli_names_config_fields_as_flags(library, shown):
    assert cli.as_flags(library) == shown


# ----------------------------------------------------------------------------- help


def test_train_help_explains_config_fields(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--config.FIELD=VALUE" in out and "--config configs/charrnn.py:cpu --help" in out
    assert "train.steps=0 means train.epochs passes" in out
    assert cli.main(["train", "--config", SMOKE, "--help", "--config.train.steps=7"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("--config.train.steps="))
    assert (
        "--config.train.steps=7" in line and "0: train.epochs passes" in line
    )  # value and the field's comment
    assert "--config.model.hidden=32" in out and "LSTM hidden size per layer" in out


@pytest.mark.parametrize("cmd,shown", [("sample", "(default: 0.8)"), ("eval", "(default: 10000)")])
def test_sample_and_eval_help_show_defaults(capsys, cmd, shown):
    with pytest.raises(SystemExit) as e:
        cli.main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert shown in out and "(default: None)" not in out and "(default: )" not in out


def test_field_comments_and_listing():
    src = (
        "def d():\n"
        "    c.train.steps = 0  # total steps; 0: epochs\n"
        "    c.train.lr = 0.1\n"
        '    x = "# c.no = 1"\n'
    )
    comments = field_comments(
        src, "c.train.lr = 1  # from the file\nc.train.steps = 3  # not this one\n"
    )
    assert comments == {"train.steps": "total steps; 0: epochs", "train.lr": "from the file"}
    cfg = load_config(SMOKE)
    text = describe_fields(cfg, comments)
    assert "  --config.train.steps=40" in text and text.count("\n") + 1 == len(list(_leaves(cfg)))
    assert "--config.data.path=''" in text


def _leaves(cfg, prefix=""):
    for k, v in cfg.items():
        yield from (_leaves(v, f"{prefix}{k}.") if hasattr(v, "items") else [prefix + k])


def test_suggest_field():
    fields = ["train.steps", "train.epochs", "train.lr_g", "train.lr_d", "model.hidden"]
    assert suggest_field("train.stesp", fields).startswith("did you mean config.train.steps")
    assert suggest_field("stesp", fields) == "did you mean config.train.steps?"  # by the last part
    assert "config.train.lr_g" in suggest_field("train.lr", fields)
    assert suggest_field("zzz", fields) == "valid fields: " + ", ".join(fields)


# ----------------------------------------------------------------------------- sample / eval flags


def _fake_workdir(tmp_path: Path, kind: str) -> str:
    w = tmp_path / kind
    w.mkdir()
    meta = {"model": kind, "config": {}}
    if kind == "charrnn":
        meta["vocab"] = json.dumps({"chars": "\n abc"})
    (w / "jaxgen.json").write_text(json.dumps(meta))
    return str(w)


@pytest.mark.parametrize(
    "kind,flags,match",
    [
        ("charrnn", ["--temperature", "-0.5"], "--temperature must be >= 0"),
        ("charrnn", ["--temperature", "nan"], "--temperature must be >= 0"),
        ("charrnn", ["--temperature", "inf"], "--temperature must be >= 0"),
        ("charrnn", ["--top_k", "-1"], "--top_k must be >= 0"),
        ("charrnn", ["--top_k", "6"], "between 0 (off) and the vocabulary size 5"),
        ("charrnn", ["--top_p", "0"], r"--top_p must be in (0, 1]"),
        ("charrnn", ["--top_p", "1.5"], r"--top_p must be in (0, 1]"),
        ("charrnn", ["--length", "0"], "--length must be a positive"),
        ("charrnn", ["--prime", "xyz"], "not in the model's vocabulary"),
        ("gan", ["--num", "0", "--grid", "g.png"], "--num must be a positive integer"),
        ("gan", ["--out", "{tmp}/missing/s.npy"], "does not exist; create it first"),
        ("gan", ["--grid", "{tmp}/grid.txt"], "needs an image suffix"),
    ],
)
def test_sample_flags_checked_before_the_model_loads(tmp_path, capsys, no_work, kind, flags, match):
    w = _fake_workdir(tmp_path, kind)
    before = tree_hash(tmp_path)
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    assert match in one_line_error(capsys, ["sample", "--workdir", w, *flags])
    assert tree_hash(tmp_path) == before


def test_temperature_zero_reaches_sample_text(tmp_path, capsys, monkeypatch):
    from jaxgen import charrnn
    from jaxgen.charrnn import sample
    from jaxgen.charrnn.data import Vocab

    w = _fake_workdir(tmp_path, "charrnn")
    seen = {}
    monkeypatch.setattr(
        charrnn.sample, "load_for_sampling", lambda *a, **k: ({}, Vocab(tuple("\n abc")), None)
    )
    monkeypatch.setattr(sample, "sample_text", lambda params, vocab, **k: seen.update(k) or "abc")
    assert cli.main(["sample", "--workdir", w, "--temperature", "0", "--length", "3"]) == 0
    assert seen["temperature"] == 0.0 and seen["length"] == 3
    assert capsys.readouterr().out == "abc\n"


@pytest.mark.parametrize(
    "flags,match",
    [
        (["--num", "0"], "--num must be a positive integer"),
        (["--out", "{tmp}/no/such/dir/r.json"], "does not exist; create it first"),
    ],
)
def test_eval_flags_checked_before_work(tmp_path, capsys, no_work, flags, match):
    w = _fake_workdir(tmp_path, "gan")
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    assert match in one_line_error(capsys, ["eval", "--workdir", w, *flags])


def test_analyze_flags_are_checked_and_reach_the_study(monkeypatch, capsys):
    """`jaxgen analyze`: the memory-span options are refused for gradient-decay and out of range,
    and reach run_memory_span when valid."""
    from jaxgen import analysis

    got = []
    monkeypatch.setattr(analysis, "run_memory_span", lambda out, **kw: got.append(kw))
    monkeypatch.setattr(analysis, "run_gradient_decay", lambda *a, **kw: got.append("decay"))
    for argv, match in (
        (["gradient-decay", "--lr", "0.1"], "--name are options of memory-span only"),
        (["gradient-decay", "--name", "x"], "--name are options of memory-span only"),
        (["memory-span", "--name", "../x"], "--name is a file stem"),
        (["memory-span", "--lr", "-1"], "--lr must be a positive learning rate"),
        (["memory-span", "--lags", "5,x"], "--lags expects comma-separated integers"),
        (["memory-span", "--cells", "lstm,lstm-b7"], "--cells: unknown lstm-b7"),
    ):
        assert cli.main(["analyze", *argv]) == 2 and match in capsys.readouterr().err
    assert got == []
    assert cli.main(["analyze", "memory-span", "--lr", "0.02", "--cells", "lstm-chrono"]) == 0
    assert got[0]["learning_rate"] == 0.02 and got[0]["cells"] == ("lstm-chrono",)
    assert "stem" not in got[0]
    assert cli.main(["analyze", "memory-span", "--cells", "mingru,lru", "--name", "ms_new"]) == 0
    assert got[1]["cells"] == ("mingru", "lru") and got[1]["stem"] == "ms_new"
