"""Time loops as compiled C++ kernels for XLA's CPU backend: the LSTM's (``rnn.lstm(...,
mode="native")``) and the linear recurrence of the parallel-in-time cells
(``rnn.mingru(..., mode="native")``, ``linear_rnn.linear_scan``).

Inside ``lax.scan`` XLA's CPU backend runs each LSTM step as a dozen small thunks around a
``[B, H] x [H, 4H]`` product, and at the char-RNN's shapes that loop overhead and its small
products cost more than the arithmetic (``benchmarks/results/charrnn_step.md``). ``lstm.cc``
runs the forward loop and the backward loop of the hand-written BPTT
(:func:`jaxgen.recurrence.lstm_scan`) as two XLA FFI handlers. Per step: one product with the
recurrent weight, packed once per call into panels the AVX-512 code reads with its accumulators
in registers (OpenBLAS, the library numpy ships, on CPUs without AVX-512 and for runs shorter
than 32 rows of products), and one vectorised pass over the gates. The batch rows are
independent, so they are split over XLA's intra-op threads, each chunk running to the end of the
sequence without synchronising. The input projection and the weight gradient stay large XLA
products outside, as in the scan path. A single step (``T = 1``, generation) runs the scan path.

``linear_scan.cc`` runs ``h_t = a_t * h_{t-1} + b_t`` over time in one vectorised pass (columns
split over the threads); its backward is the same recurrence run the other way
(:func:`linear_sequence`).

The sources are compiled on first use with the system's C++ compiler (``$CXX``, else ``g++``)
into ``$JAXGEN_CACHE`` (default ``~/.cache/jaxgen``), keyed by the source, compiler, jaxlib and
CPU, and loaded from there afterwards (about 2 s the first time). Where that cannot be done (no
compiler, no OpenBLAS in numpy, another platform) ``mode="native"`` runs the scan path with one
warning naming the reason: results are the same either way.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import recurrence

HERE = Path(__file__).parent
SOURCES = (HERE / "lstm.cc", HERE / "linear_scan.cc")
HEADERS = (HERE / "threads.h",)
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-w")
TARGETS = {
    "jaxgen_lstm_fwd": "JaxgenLstmFwd",
    "jaxgen_lstm_bwd": "JaxgenLstmBwd",
    "jaxgen_linear_scan": "JaxgenLinearScan",
}
_WARNED: set[str] = set()


# jaxgen.kernels.common.warn_once does the same, but importing it imports Pallas.
def _warn_once(reason: str, message: str) -> None:
    if reason not in _WARNED:
        _WARNED.add(reason)
        warnings.warn(message, UserWarning, stacklevel=4)


def _address(fn):
    return None if fn is None else ctypes.cast(fn, ctypes.c_void_p).value


def _openblas_sgemm():
    """``(library, sgemm, set_threads_local)``: the addresses of ``cblas_sgemm`` (64-bit
    integers) and ``openblas_set_num_threads_local`` (``None`` if absent) in numpy's bundled
    OpenBLAS."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("libscipy_openblas64_*.so*")):
        lib = ctypes.CDLL(str(path))
        fn = getattr(lib, "scipy_cblas_sgemm64_", None)
        if fn is not None:
            local = getattr(lib, "openblas_set_num_threads_local", None)
            return lib, _address(fn), _address(local)
    raise RuntimeError(
        f"numpy's bundled OpenBLAS (scipy_cblas_sgemm64_) was not found in {libs}; "
        "a pip-installed numpy wheel ships it"
    )


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def _build() -> Path:
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise RuntimeError("no C++ compiler found (install g++ or set $CXX)")
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=False
    ).stdout
    key = hashlib.sha256(
        b"\0".join(
            [
                *(f.read_bytes() for f in (*SOURCES, *HEADERS)),
                version.encode(),
                " ".join(FLAGS).encode(),
                jax.__version__.encode(),
                _cpu_id().encode(),
            ]
        )
    ).hexdigest()[:16]
    cache = Path(os.environ.get("JAXGEN_CACHE", Path.home() / ".cache" / "jaxgen")) / "native"
    target = cache / f"kernels-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
    cmd = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", *map(str, SOURCES), "-o", tmp]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        os.unlink(tmp)
        names = ", ".join(f.name for f in SOURCES)
        raise RuntimeError(f"compiling {names} failed: {done.stderr.strip()[-2000:]}")
    os.replace(tmp, target)  # atomic: concurrent builders each write their own file
    return target


@functools.cache
def load() -> str | None:
    """Build (once) and register the kernel; ``None`` when it is ready, else the reason it is
    not."""
    try:
        blas, sgemm, set_threads_local = _openblas_sgemm()
        lib = ctypes.CDLL(str(_build()))
        lib.jaxgen_set_sgemm(ctypes.c_void_p(sgemm), ctypes.c_void_p(set_threads_local))
        for name, symbol in TARGETS.items():
            jax.ffi.register_ffi_target(
                name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu"
            )
        load.libraries = (blas, lib)  # keep both loaded for the life of the process
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return str(e)
    return None


def available() -> bool:
    """Whether ``mode="native"`` runs the kernels here (builds them on the first call)."""
    return load() is None


# --------------------------------------------------------------------------- the LSTM


def _fwd_call(w_hh, zx, h0, c0, reverse):
    T, B, G = zx.shape
    out = jax.ShapeDtypeStruct
    return jax.ffi.ffi_call(
        "jaxgen_lstm_fwd",
        (out((T, B, G // 4), zx.dtype), out((T, B, G), zx.dtype), out((T, B, G // 4), zx.dtype)),
        vmap_method="sequential",
    )(zx, w_hh, h0, c0, reverse=np.int32(reverse))


def _finals(ys, cs, reverse):
    last = 0 if reverse else -1
    return ys[last], cs[last]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _lstm(w_hh, zx, h0, c0, reverse):
    ys, _, cs = _fwd_call(w_hh, zx, h0, c0, reverse)
    return (*_finals(ys, cs, reverse), ys)


def _lstm_fwd(w_hh, zx, h0, c0, reverse):
    ys, acts, cs = _fwd_call(w_hh, zx, h0, c0, reverse)
    return (*_finals(ys, cs, reverse), ys), (w_hh, acts, cs, ys, h0, c0)


def _lstm_bwd(reverse, residuals, cotangents):
    w_hh, acts, cs, ys, h0, c0 = residuals
    dh_T, dc_T, dys = cotangents
    T, B, G = acts.shape
    out = jax.ShapeDtypeStruct
    dzs, dh0, dc0 = jax.ffi.ffi_call(
        "jaxgen_lstm_bwd",
        (out((T, B, G), acts.dtype), out((B, G // 4), acts.dtype), out((B, G // 4), acts.dtype)),
        vmap_method="sequential",
    )(dys, dh_T, dc_T, acts, cs, c0, w_hh.T, reverse=np.int32(reverse))
    # One [H, T*B] x [T*B, 4H] product for the recurrent weight gradient, as in the scan path.
    h_prev = recurrence._shift_prev(ys, h0, reverse)
    dw_hh = h_prev.reshape(-1, G // 4).T @ dzs.reshape(-1, G)
    return dw_hh, dzs, dh0, dc0


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


def _native(params, zx, carry, reverse):
    h0, c0 = carry
    batch = zx.shape[1:-1]  # [T, 4H] (one sequence) or [T, B..., 4H]
    flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    h, c, ys = _lstm(
        params["w_hh"], zx.reshape(zx.shape[0], -1, zx.shape[-1]), flat(h0), flat(c0), reverse
    )
    hidden = h.shape[-1]
    return (h.reshape(*batch, hidden), c.reshape(*batch, hidden)), ys.reshape(
        zx.shape[0], *batch, hidden
    )


def lstm_sequence(params, zx, carry, *, reverse=False, lengths=None, unroll=1, warn=True):
    """``((h_T, c_T), ys)`` over the projected ``zx`` ``[T, B, 4H]``, as
    :func:`jaxgen.recurrence.lstm_scan`: the kernel when lowering for CPU, the scan path on
    other platforms, with ``lengths``, or for other dtypes than float32 (and, with a warning
    unless ``warn=False``, where the kernel cannot be built here)."""
    h0, c0 = (jnp.asarray(a) for a in carry)
    scan = functools.partial(recurrence.lstm_scan, reverse=reverse, lengths=lengths, unroll=unroll)
    if lengths is not None or zx.shape[0] <= 1:  # one step: no loop to speed up (generation)
        return scan(params, zx, (h0, c0))
    if not all(a.dtype == jnp.float32 for a in (zx, params["w_hh"], h0, c0)):
        return scan(params, zx, (h0, c0))
    reason = load()
    if reason is not None:
        if warn:
            _warn_once(
                "unavailable",
                f"rnn.lstm(mode='native'): the CPU kernel is not available here ({reason}); "
                "running mode='scan' (same results; warned once)",
            )
        return scan(params, zx, (h0, c0))
    native = functools.partial(_native, reverse=reverse)
    return jax.lax.platform_dependent(
        {"w_hh": params["w_hh"]}, zx, (h0, c0), cpu=native, default=lambda p, z, c: scan(p, z, c)
    )


# --------------------------------------------------------------------------- linear recurrences


def _scan_call(a, b, h0, reverse):
    return jax.ffi.ffi_call(
        "jaxgen_linear_scan", jax.ShapeDtypeStruct(b.shape, b.dtype), vmap_method="sequential"
    )(a, b, h0, reverse=np.int32(reverse))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _linear(a, b, h0, reverse):
    return _scan_call(a, b, h0, reverse)


def _linear_fwd(a, b, h0, reverse):
    hs = _scan_call(a, b, h0, reverse)
    return hs, (a, hs, h0)


def _linear_bwd(reverse, residuals, dhs):
    # With g_t the gradient reaching h_t (from its output and from the next step),
    # g_t = dhs_t + a_next * g_next: the same recurrence in the other direction, with each step's
    # coefficient taken from the step after it. Then da_t = g_t h_{t-1}, db_t = g_t.
    a, hs, h0 = residuals
    zero = jnp.zeros_like(a[:1])
    a_next = jnp.concatenate([zero, a[:-1]]) if reverse else jnp.concatenate([a[1:], zero])
    g = _scan_call(a_next, dhs, jnp.zeros_like(h0), not reverse)
    first = -1 if reverse else 0  # the step that reads h0
    return g * recurrence._shift_prev(hs, h0, reverse), g, a[first] * g[first]


_linear.defvjp(_linear_fwd, _linear_bwd)


def _linear_native(a, b, h0, reverse):
    steps = b.shape[0]
    hs = _linear(a.reshape(steps, -1), b.reshape(steps, -1), h0.reshape(-1), reverse)
    return hs.reshape(b.shape)


def linear_sequence(a, b, h0, *, reverse=False, scan, warn=True):
    """Every state of ``h_t = a_t * h_{t-1} + b_t`` over axis 0 (``a``, ``b`` ``[T, ...]`` of the
    same shape, ``h0`` the state's shape): the kernel when lowering for CPU, else ``scan(a, b,
    h0)``; also ``scan`` for one step, for dtypes other than float32 (complex: the LRU) and, with
    a warning unless ``warn=False``, where the kernel cannot be built here."""
    if b.shape[0] <= 1 or not all(x.dtype == jnp.float32 for x in (a, b, h0)):
        return scan(a, b, h0)
    reason = load()
    if reason is not None:
        if warn:
            _warn_once(
                "unavailable",
                f"mode='native': the CPU kernel is not available here ({reason}); running "
                "mode='scan' (same results; warned once)",
            )
        return scan(a, b, h0)
    native = functools.partial(_linear_native, reverse=reverse)
    return jax.lax.platform_dependent(a, b, h0, cpu=native, default=scan)
