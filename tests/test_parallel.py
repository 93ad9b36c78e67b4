"""Data parallel over 8 virtual CPU devices: the sharded train steps equal the single-device ones.

XLA's device count is fixed when JAX starts, so each check runs in a fresh subprocess with
``--xla_force_host_platform_device_count=8``.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import functools, jax, jax.numpy as jnp, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from jaxgen.training import parallel
    mesh = parallel.make_mesh()

    def compare(name, step, state, args, ndims, axes):
        step0 = int(state.step)
        single = jax.jit(step)
        s1, m1 = single(state, *args)
        sharded, placed = parallel.jit_data_parallel(step, mesh, state, ndims, axes)
        sargs = [
            a if ax is None else parallel.global_batch(mesh, np.asarray(a), a.shape, ax)
            for a, ax in zip(args, axes)
        ]
        assert all(len(a.sharding.device_set) == 8 for a, ax in zip(sargs, axes) if ax is not None)
        s2, m2 = sharded(placed, *sargs)
        flat1, flat2 = jax.tree.leaves(s1), jax.tree.leaves(s2)
        worst = max(
            float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
            for a, b in zip(flat1, flat2)
        )
        for k in m1:
            np.testing.assert_allclose(
                float(m1[k]), float(m2[k]), rtol=2e-4, atol=1e-5, err_msg=f"{name} {k}"
            )
        for a, b in zip(flat1, flat2):
            np.testing.assert_allclose(
                np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5, err_msg=name
            )
        # one step each, and the new state is replicated over all 8 devices
        assert int(s2.step) == int(s1.step) == step0 + 1
        assert all(
            x.sharding.is_fully_replicated and len(x.sharding.device_set) == 8
            for x in jax.tree.leaves(s2)
        )
        print(name, "ok, largest difference", worst, flush=True)

    import sys
    from jaxgen import gan
    for arch in [a for a in ("fc", "dcgan") if a in sys.argv[1:]]:
        cfg = gan.config.default_config()
        cfg.model.arch = arch
        cfg.model.features, cfg.model.image_size = (8, 16), 16  # 2 batch-norm layers a network
        m = gan.models.build(cfg.model)
        tx_g, tx_d = gan.step.make_optimizers(cfg)
        state = gan.step.init_state(m, 0, tx_g, tx_d, ema=True)
        real = jax.random.uniform(jax.random.key(1), (16, m.size, m.size, 1), minval=-1, maxval=1)
        step = functools.partial(gan.step.train_step, model=m, tx_g=tx_g, tx_d=tx_d, ema_decay=0.99)
        compare(f"gan-{arch}", step, state, (real,), (4,), (0,))

    from jaxgen import charrnn
    if "charrnn" not in sys.argv[1:]:
        print("ALL OK")
        sys.exit(0)
    cfg = charrnn.config.default_config()
    cfg.model.hidden, cfg.model.layers, cfg.model.dropout, cfg.train.batch = 32, 2, 0.1, 16
    tx = charrnn.train.make_optimizer(cfg, 10)
    state = charrnn.train.init_state(cfg, 20, tx)
    ids = jax.random.randint(jax.random.key(2), (12, 16), 0, 20)
    tgt = jax.random.randint(jax.random.key(3), (12, 16), 0, 20)
    step = functools.partial(charrnn.train.train_step, tx=tx, dropout_rate=0.1)
    compare("charrnn", step, state, (ids, tgt, jnp.asarray(True)), (2, 2, 0), (1, 1, None))
    print("ALL OK")
""")


@pytest.mark.slow
def test_sharded_steps_equal_single_device_steps():
    """The DCGAN (batch-norm statistics over the global batch) and the char-RNN (a carried state
    sharded with its batch, dropout), in one subprocess: JAX's start-up is paid once. The FC GAN's
    data-parallel step is checked across two processes below."""
    models = "dcgan charrnn"
    env = {
        **os.environ,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, *models.split()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0 and "ALL OK" in r.stdout, f"{r.stdout}\n{r.stderr[-4000:]}"
    for name in models.split():
        assert f"{'gan-' if name != 'charrnn' else ''}{name} ok" in r.stdout, r.stdout


WORKER = textwrap.dedent("""
    import sys, functools, jax, numpy as np
    port, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid
    )
    assert jax.process_count() == 2 and jax.device_count() == 2, (
        jax.process_count(),
        jax.devices(),
    )
    from jaxgen import gan
    from jaxgen.training import parallel
    cfg = gan.config.default_config()
    m = gan.models.build(cfg.model)
    tx_g, tx_d = gan.step.make_optimizers(cfg)
    state = gan.step.init_state(m, 0, tx_g, tx_d, ema=False)
    mesh = parallel.make_mesh()
    step = functools.partial(gan.step.train_step, model=m, tx_g=tx_g, tx_d=tx_d)
    fn, state = parallel.jit_data_parallel(step, mesh, state, (4,))
    # the global batches
    full = np.random.default_rng(0).uniform(-1, 1, (2, 8, 28, 28, 1)).astype(np.float32)
    rows = parallel.local_rows(8)
    for s in range(2):
        real = parallel.global_batch(mesh, full[s][rows], full[s].shape)
        state, metrics = fn(state, real)
    leaves = [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(state.params)]
    np.savez(
        f"{out}/params{pid}.npz", *leaves, d_loss=np.asarray(metrics["d_loss"].addressable_data(0))
    )
    print(
        "RESULT",
        pid,
        repr(float(sum(np.abs(l).sum() for l in leaves))),
        float(metrics["d_loss"]),
        flush=True,
    )
    jax.distributed.shutdown()
""")


@pytest.mark.slow
def test_two_processes_on_localhost_agree(tmp_path):
    """Two processes, one CPU device each, each loading only its half of every global batch, end
    with the parameters and loss of one single-process step on the full global batches (so a
    process reading the wrong rows fails)."""
    import functools
    import socket

    import jax
    import numpy as np

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # one device per process; otherwise the same XLA flags as this process, which runs the reference
    flags = [
        f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": " ".join(flags)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(port), str(i), str(tmp_path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
        outs.append([line.split() for line in out.splitlines() if line.startswith("RESULT")][0])
    assert outs[0][2:] == outs[1][2:], outs  # both processes hold the same parameters and loss
    # the same two steps in this (single-device) process on the full global batches
    from jaxgen import gan

    cfg = gan.config.default_config()
    m = gan.models.build(cfg.model)
    tx_g, tx_d = gan.step.make_optimizers(cfg)
    state = gan.step.init_state(m, 0, tx_g, tx_d, ema=False)
    step = jax.jit(functools.partial(gan.step.train_step, model=m, tx_g=tx_g, tx_d=tx_d))
    full = np.random.default_rng(0).uniform(-1, 1, (2, 8, 28, 28, 1)).astype(np.float32)
    for s in range(2):
        state, metrics = step(state, full[s])
    want = [np.asarray(x) for x in jax.tree.leaves(state.params)]
    for pid in range(2):
        got = np.load(tmp_path / f"params{pid}.npz")
        assert float(got["d_loss"]) == pytest.approx(float(metrics["d_loss"]), rel=1e-5)
        for i, w in enumerate(want):
            # atol 5% of the learning rate: Adam's step on a near-zero gradient follows its rounding
            np.testing.assert_allclose(
                got[f"arr_{i}"], w, rtol=2e-4, atol=1e-4, err_msg=f"process {pid} leaf {i}"
            )
