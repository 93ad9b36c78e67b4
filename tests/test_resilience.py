"""Runs that are stopped from outside: SIGTERM (preemption) saves and exits cleanly; SIGKILL loses
only the steps since the last checkpoint, and the restarted run ends where an unbroken one does."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxgen import gan

ROOT = Path(__file__).resolve().parents[1]


def _start(workdir, *overrides):
    return subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-m",
            "jaxgen.cli",
            "train",
            "--config",
            "configs/gan_mnist.py:smoke",
            "--workdir",
            str(workdir),
            "--quiet",
            *overrides,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_step(workdir, at_least, proc, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        p = Path(workdir) / "metrics.jsonl"
        if p.exists():
            steps = [json.loads(x)["step"] for x in p.read_text().splitlines() if x.strip()]
            if steps and max(steps) >= at_least:
                return max(steps)
        if proc.poll() is not None:
            raise AssertionError(f"training ended early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("training did not reach the step in time")


@pytest.mark.slow
def test_sigkill_then_restart_equals_an_unbroken_run(tmp_path):
    """A run killed with SIGKILL after its first checkpoint, then restarted, logs the same losses
    and ends with the same parameters as a run never stopped: resume is exact, bit for bit."""
    steps = 30  # the kill comes after step 7, or a few steps later on a busy machine
    common = [
        f"--config.train.steps={steps}",
        "--config.train.checkpoint_every=5",
        "--config.train.log_every=1",
        "--config.train.sample_every=1000",
    ]
    from tests.test_gan import _cli  # in this process: only the killed run needs a subprocess

    _cli(
        "train",
        "--config",
        "configs/gan_mnist.py:smoke",
        "--workdir",
        str(tmp_path / "ref"),
        "--quiet",
        *common,
    )
    w = tmp_path / "killed"
    proc = _start(w, *common)
    _wait_for_step(w, 7, proc)  # past the first checkpoint
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended ({proc.returncode}) before the kill"
    r = _cli(
        "train", "--config", "configs/gan_mnist.py:smoke", "--workdir", str(w), "--quiet", *common
    )
    resumed = int(re.search(r"resumed from step (\d+)", r.stdout).group(1))
    assert resumed % 5 == 0 and 5 <= resumed < steps, r.stdout
    # every loss logged, before the kill and after the restart, is the unbroken run's loss at that
    # step (bit for bit: the same batches, keys and optimiser state), and the final parameters match
    rows = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    ref = {row["step"]: row for row in rows(tmp_path / "ref") if "g_loss" in row}
    got = [row for row in rows(w) if "g_loss" in row]
    assert sorted(ref) == list(range(1, steps + 1)) and {row["step"] for row in got} == set(ref)
    assert [row["step"] for row in got][-(steps - resumed) :] == list(range(resumed + 1, steps + 1))
    for row in got:
        for k in ("g_loss", "d_loss", "d_grad_norm", "g_grad_norm"):
            assert row[k] == ref[row["step"]][k], (row["step"], k)
    _, pa, _, _ = gan.sampling.load_generator(tmp_path / "ref", which="latest")
    _, pb, _, _ = gan.sampling.load_generator(w, which="latest")
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), pa, pb)


def _all_finite(tree):
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


@pytest.mark.slow
def test_nonfinite_skip_mode_keeps_the_parameters_finite(tmp_path):
    from tests.test_gan import _smoke_cfg

    cfg = _smoke_cfg(8)
    cfg.train.lr_g = cfg.train.lr_d = 1e38  # parameters overflow within a few steps
    cfg.train.on_nonfinite = "skip"
    cfg.train.log_every = 1
    summary = gan.train.train(cfg, tmp_path / "gan", quiet=True)
    assert summary["steps"] == 8
    rows = [json.loads(x) for x in (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("skipped", 0) for r in rows) >= 1
    _, gp, _, _ = gan.sampling.load_generator(tmp_path / "gan", which="latest")
    assert _all_finite(gp)

    from jaxgen import charrnn
    from jaxgen.config import load_config

    c = load_config(ROOT / "configs" / "charrnn.py:smoke")
    c.train.steps, c.train.lr, c.train.clip, c.train.on_nonfinite = 6, 1e38, 1e38, "skip"
    charrnn.train.train(c, tmp_path / "rnn", quiet=True)
    params, _, _ = charrnn.sample.load_for_sampling(tmp_path / "rnn", which="latest")
    assert _all_finite(params)
    c.train.on_nonfinite = "sometimes"
    with pytest.raises(Exception, match="on_nonfinite"):
        charrnn.train.train(c, tmp_path / "rnn2", quiet=True)


@pytest.mark.slow
def test_corrupt_latest_checkpoint_and_leftover_temporary_folder(tmp_path, capfd):
    from tests.test_gan import _smoke_cfg

    cfg = _smoke_cfg(12)  # checkpoints at 6 and 12
    gan.train.train(cfg, tmp_path, quiet=True)
    ck = tmp_path / "checkpoints"
    assert sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit()) == [6, 12]
    _, before, _, _ = gan.sampling.load_generator(tmp_path, which="latest")
    # an interrupted save leaves a temporary folder behind: it is not a checkpoint
    (ck / "18.orbax-checkpoint-tmp-1234567").mkdir()
    (ck / "18.orbax-checkpoint-tmp-1234567" / "junk").write_text("half written")
    # the latest checkpoint is corrupt: every file in it truncated
    for f in (ck / "12").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    summary = gan.train.train(cfg, tmp_path, quiet=True)  # the same 12 steps again
    err = capfd.readouterr()
    assert summary["start"] == 6, "should resume from the previous, intact checkpoint"
    assert "could not be restored" in err.err and "trying the previous one" in err.err
    assert summary["steps"] == 12
    assert not (ck / "18.orbax-checkpoint-tmp-1234567").exists() or 18 not in [
        int(p.name) for p in ck.iterdir() if p.name.isdigit()
    ]
    # the corrupt step-12 checkpoint was replaced: it now restores, with no warning, to the
    # re-trained state
    _, gp, _, _ = gan.sampling.load_generator(tmp_path, which="latest")
    err = capfd.readouterr()
    assert "could not be restored" not in err.err
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), gp, before
    )


def test_sample_and_eval_on_an_empty_workdir(tmp_path):
    from tests.test_gan import _cli  # in this process: an escaped exception would fail the test

    args = ["sample", "--workdir", str(tmp_path), "--num", "4", "--out", str(tmp_path / "x.npy")]
    r = _cli(*args, check=False)
    assert r.returncode == 2 and "holds no trained model" in r.stderr
    r = _cli(
        "eval", "--samples", str(tmp_path / "none.npy"), "--data_source", "builtin", check=False
    )
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_global_batch_must_divide_over_devices():
    from types import SimpleNamespace

    from jaxgen.errors import UserError
    from jaxgen.training import parallel

    parallel.check_batch(64, SimpleNamespace(devices=np.zeros(8)))
    with pytest.raises(UserError, match="multiple of 8"):
        parallel.check_batch(60, SimpleNamespace(devices=np.zeros(8)))


def test_resume_with_another_state_shape_is_refused_and_changes_nothing(tmp_path):
    """Another batch size (carried LSTM state) or learning-rate schedule (optimiser state) changes
    the saved tree: the resume is refused with the differing fields named, before any file is
    touched (it used to be read as corruption: the run restarted at step 0 and pruned the old
    checkpoints)."""
    from jaxgen import charrnn
    from jaxgen.config import load_config
    from jaxgen.errors import UserError

    cfg = load_config(ROOT / "configs" / "charrnn.py:smoke")
    cfg.data.source, cfg.data.path = (
        "file",
        str(ROOT / "tests" / "data" / "tinyshakespeare_head.txt"),
    )
    cfg.model.hidden, cfg.train.batch, cfg.train.seq_len, cfg.train.steps = 8, 2, 8, 2
    w = tmp_path / "run"
    charrnn.train.train(cfg, w, quiet=True)
    from tests.test_cli import tree_hash

    before = tree_hash(w)
    for field, value, what in (
        ("batch", 4, "train.batch 2 -> 4"),
        ("lr_schedule", "cosine", "train.lr_schedule 'constant' -> 'cosine'"),
    ):
        changed = cfg.copy_and_resolve_references()
        changed.train[field] = value
        with pytest.raises(UserError, match="cannot resume") as e:
            charrnn.train.train(changed, w, quiet=True)
        assert what in str(e.value) and "different train state" in str(e.value)
        assert tree_hash(w) == before
    # a compatible change (more steps) still resumes
    cfg.train.steps = 3
    assert charrnn.train.train(cfg, w, quiet=True)["start"] == 2


class _StopAt:
    """A stand-in for StopOnSignal whose signal 'arrives' after step ``at``."""

    def __init__(self, at, reason):
        self.at, self.requested, self.reason = at, False, reason

    def should_stop(self, step, manager=None):
        self.requested = self.requested or step >= self.at
        return self.requested

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_signal_saves_the_current_step_before_any_sampling(tmp_path, monkeypatch):
    """On SIGTERM or Ctrl-C `jaxgen train` (here the GAN) saves the step it stopped at, draws no
    grid (a preemption grace period is short; drawing re-measures batch-norm statistics first),
    says so, and exits 0 after SIGTERM, 130 after Ctrl-C. The real signals reach the char-RNN in
    test_ctrl_c_during_compilation_then_sigterm_mid_run below; the loop is the same."""
    from jaxgen.training import preemption
    from tests.test_gan import _cli, _smoke_cfg

    drawn = []
    monkeypatch.setattr(
        gan.train.plots, "save_grid", lambda grid, path: drawn.append(Path(path).name)
    )
    for reason, code, said in (
        ("preempted", 0, "stopping at step 3: SIGTERM received (preemption); checkpoint 3 saved"),
        ("interrupted", 130, "stopping at step 3: interrupted (Ctrl-C); checkpoint 3 saved"),
    ):
        w = tmp_path / reason
        monkeypatch.setattr(preemption, "StopOnSignal", lambda reason=reason: _StopAt(3, reason))
        r = _cli(
            "train",
            "--config",
            "configs/gan_mnist.py:smoke",
            "--workdir",
            str(w),
            "--quiet",
            "--config.train.steps=12",
            "--config.train.checkpoint_every=6",
            "--config.train.sample_every=6",
            check=False,
        )
        assert r.returncode == code and said in r.stdout, (r.returncode, r.stdout, r.stderr)
        assert sorted(int(p.name) for p in (w / "checkpoints").iterdir() if p.name.isdigit()) == [3]
        assert drawn == []
    # a stop requested before the first step compiles nothing and writes no checkpoint
    early = _StopAt(0, "interrupted")
    early.requested = True
    summary = gan.train.train(_smoke_cfg(12), tmp_path / "early", quiet=True, stop=early)
    assert summary["stopped"] == "interrupted" and summary["steps"] == 0
    assert not any(p.name.isdigit() for p in (tmp_path / "early" / "checkpoints").iterdir())


def _train_cmd(workdir, *overrides):
    return [
        sys.executable,
        "-u",
        "-m",
        "jaxgen",
        "train",
        "--config",
        "configs/charrnn.py:smoke",
        "--workdir",
        str(workdir),
        "--quiet",
        "--config.data.path=tests/data/tinyshakespeare_head.txt",
        "--config.train.steps=100000",
        "--config.train.eval_every=100000",
        "--config.train.checkpoint_every=100000",
        "--config.train.log_every=1",
        *overrides,
    ]


def _stop_and_wait(proc, w, sig, after_step=None):
    """Send ``sig`` to a `jaxgen train` subprocess while it compiles its first step (``after_step``
    None) or once it has logged ``after_step``; returns its stdout (with the line read before the
    signal) and stderr. A process that does not stop within a minute has its signal state and
    every thread's stack (faulthandler, on SIGABRT) put in the failure. It is killed whatever
    happens: one that missed the signal would train on (100,000 steps) and slow every later test."""
    first = ""
    try:
        if after_step is None:  # the trainer's first line comes just before the first step compiles
            first = proc.stdout.readline()
            assert first.startswith("char-rnn:"), first
            time.sleep(0.3)
            assert not (w / "metrics.jsonl").read_text()
        else:
            _wait_for_step(w, after_step, proc)
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            status = Path(f"/proc/{proc.pid}/status")
            state = [x for x in status.read_text().splitlines() if x.startswith("Sig")]
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate(timeout=60)
            raise AssertionError(
                f"signal {sig!r} did not stop the run within 60 s; {state}\n"
                f"stdout: {(first + out)[-3000:]}\nstderr: {err[-12000:]}"
            ) from None
    finally:
        proc.kill()
    return first + out, err


SIGINT_DEFAULT_THEN_JAXGEN = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "runpy.run_module('jaxgen', run_name='__main__', alter_sys=True)"
)


def _saved(w):
    return [int(p.name) for p in (w / "checkpoints").iterdir() if p.name.isdigit()]


@pytest.mark.slow
def test_ctrl_c_during_compilation_then_sigterm_mid_run(tmp_path, monkeypatch):
    """Ctrl-C while XLA compiles the first step used to crash the process (a KeyboardInterrupt
    raised inside a callback from XLA); now it saves the step reached and exits with 130 and no
    traceback. The rerun resumes from that step; SIGTERM (a preemption) in the middle of it saves
    the step it stopped at (not a checkpoint_every multiple) and exits 0; the next run resumes
    from there."""
    from jaxgen import charrnn
    from jaxgen.config import load_config

    w = tmp_path / "run"
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}  # stacks on SIGABRT, should it hang
    popen = dict(cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Ctrl-C as in a terminal: a suite started in the background (`pytest ... &` without job
    # control, nohup) passes SIGINT on ignored, and `jaxgen train` then keeps ignoring it on
    # purpose (test_ctrl_c_ignored_at_start_stays_ignored); so the child restores the default
    # before it runs `python -m jaxgen` (in the child itself: a preexec_fn would fork this
    # process, whose JAX threads make fork unsafe)
    cmd = _train_cmd(w)
    assert cmd[2:4] == ["-m", "jaxgen"]
    cmd[2:4] = ["-c", SIGINT_DEFAULT_THEN_JAXGEN]
    # the first run compiles for real: a step read from a warm persistent cache (a second run of
    # the suite) would finish before the signal arrives
    proc = subprocess.Popen(cmd, **{**popen, "env": {**env, "JAX_COMPILATION_CACHE_DIR": ""}})
    out, err = _stop_and_wait(proc, w, signal.SIGINT)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and "Fatal Python error" not in err, err
    m = re.search(r"stopping at step (\d+): interrupted \(Ctrl-C\); checkpoint \1 saved", out)
    assert m, (out, err)
    first = int(m.group(1))
    assert first >= 1 and _saved(w) == [first]

    # the resumed run gets a real SIGTERM (as a preemption sends it) once step first + 3 is
    # logged; in this process, since a second interpreter start-up would add nothing the first
    # run did not show
    from jaxgen.training.metrics import RunLog
    from tests.test_gan import _cli

    write = RunLog.write

    def write_then_sigterm(self, step, metrics):
        write(self, step, metrics)
        if step == first + 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(RunLog, "write", write_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    r = _cli(*_train_cmd(w)[4:], check=False)
    monkeypatch.undo()
    assert r.returncode == 0, r.stderr
    assert signal.getsignal(signal.SIGTERM) == before  # the run's handler is gone again
    out = r.stdout
    assert f"(resumed from step {first})" in out, out
    m = re.search(
        r"stopping at step (\d+): SIGTERM received \(preemption\); checkpoint \1 saved", out
    )
    assert m, (out, r.stderr)
    second = int(m.group(1))
    assert second == first + 4 and sorted(_saved(w))[-1] == second

    cfg = load_config(ROOT / "configs" / "charrnn.py:smoke")
    cfg.data.path = str(ROOT / "tests" / "data" / "tinyshakespeare_head.txt")
    cfg.train.steps, cfg.train.eval_every, cfg.train.checkpoint_every = second + 1, 100000, 100000
    assert charrnn.train.train(cfg, w, quiet=True)["start"] == second


def test_restore_refuses_another_state_instead_of_skipping_it(tmp_path):
    """`Checkpoints.restore` (also used by the sample and eval loaders) raises on a checkpoint that
    reads but holds another tree, rather than treating it as corrupt and falling back."""
    import jax.numpy as jnp

    from jaxgen.errors import UserError
    from jaxgen.training import checkpoint as ckpt

    state = {"w": jnp.ones((4, 3)), "step": jnp.zeros((), jnp.int32)}
    c = ckpt.Checkpoints(tmp_path)
    c.save(1, state)
    c.save(2, state)
    with pytest.raises(
        UserError,
        match=r"checkpoint .*2 holds a different train state \(w: shape \(4, 3\) -> \(8, 3\)",
    ):
        c.restore(ckpt.abstract({"w": jnp.ones((8, 3)), "step": jnp.zeros((), jnp.int32)}))
    step, got = c.restore(ckpt.abstract(state))
    assert step == 2 and np.array_equal(np.asarray(got["w"]), np.ones((4, 3)))
    c.close()


def test_ctrl_c_ignored_at_start_stays_ignored():
    """A run started with SIGINT ignored (nohup, `jaxgen train ... &` without job control) keeps
    ignoring Ctrl-C meant for the shell; SIGTERM still stops it. The handlers are restored after."""
    from jaxgen.training.preemption import StopOnSignal

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        term = signal.getsignal(signal.SIGTERM)
        with StopOnSignal() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) == stop._handler
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert not stop.requested
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert stop.requested and stop.reason == "preempted"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == term
    finally:
        signal.signal(signal.SIGINT, before)
