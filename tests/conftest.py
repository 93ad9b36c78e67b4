"""Shared test set-up.

JAX's persistent compilation cache is switched on for the whole run (the two xdist workers and every
`jaxgen` subprocess the tests start share one folder under .pytest_cache): many tests compile the
same smoke-sized train steps, in-process and in subprocesses, and a cache hit replaces a compile.
Set JAX_COMPILATION_CACHE_DIR yourself to move it, or to '' to switch it off.

XLA's CPU backend also compiles without LLVM optimisation (``--xla_backend_optimization_level=0``),
with its older loop emitters instead of the new fusion emitters
(``--xla_cpu_use_fusion_emitters=false``) and as one LLVM module instead of several compiled on
threads (``--xla_cpu_parallel_codegen_split_count=1``), unless XLA_FLAGS already sets them: test
shapes are tiny, so compiling dominates. The first flag takes about 40% off the suite, the second a
further 40% of what is left, the third a fifth of the CPU time of what is left (splitting a tiny
module costs more than it saves, and two test workers already fill two cores); results agree with
the references to the same tolerances.
"""

import os
from pathlib import Path

import numpy as np
import pytest

_CACHE = Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax-compilation-cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))  # before any test imports jax
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
# CPU compile-time flags (JAXGEN_TEST_CPU_FLAGS=0 leaves them out: an XLA that does not know one
# aborts at start, which benchmarks/gpu_check.sh avoids on a GPU machine with a newer jax)
for _flag in (
    ()
    if os.environ.get("JAXGEN_TEST_CPU_FLAGS") == "0"
    else (
        "--xla_backend_optimization_level=0",
        "--xla_cpu_use_fusion_emitters=false",
        "--xla_cpu_parallel_codegen_split_count=1",
    )
):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _no_matplotlib_in_gan_runs(request, monkeypatch):
    """A GAN run draws its loss curves and progress strip with matplotlib when it closes, ~0.4 s a
    run and ~25 runs in the suite: stubbed here, except in tests marked ``plots`` (the GAN CLI test
    checks the run draws them; tests/test_plots.py checks the drawings)."""
    if request.node.get_closest_marker("plots") is None:
        from jaxgen import plots

        monkeypatch.setattr(plots, "save_loss_curves", lambda *a, **k: None)
        monkeypatch.setattr(plots, "save_progress", lambda *a, **k: None)


@pytest.fixture
def test_data():
    """The small real data committed with the tests (tests/data: 500 MNIST digits, 4 KB of text)."""
    return TEST_DATA


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    rng = np.random.default_rng(0)
    words = ["the ", "cat ", "sat ", "on ", "a ", "mat. ", "and ", "dog\n"]
    p.write_text("".join(rng.choice(words, size=1500)))
    return p


@pytest.fixture(scope="session")
def digits_classifier():
    """The evaluation classifier after a short training on the built-in digits (1,797 images, three
    epochs, a quarter of the recipe's widths: ~3 s on 2 cores, 94% held out), trained once per test
    worker.
    Tests that take it are marked ``xdist_group("digits")`` so that ``--dist loadgroup`` runs them
    all on one worker."""
    from jaxgen import evaluation
    from jaxgen.data.images import load_images
    from jaxgen.evaluation import classifier

    data = load_images()
    params, info = evaluation.train_classifier(data, epochs=3, batch=64, seed=0, widths=(8, 16, 32))
    _, hold = classifier._holdout_split(len(data), 0.2, 0)
    return data, params, info, hold


# The longest tests (seconds under `--durations` on the 2-core CI machine), started first so that
# no xdist worker is left running one of them alone at the end of the suite (longest-first
# scheduling). Only the order depends on these numbers: a stale entry costs time, never a result.
_LONGEST_FIRST = {
    # the translation_train group (about 50 s together) and the other GAN-use steps
    "test_cyclegan_resumes_bit_for_bit_with_a_partly_filled_history": 26,
    "test_pix2pix_resumes_bit_for_bit_and_translates_as_the_library": 16,
    "test_cyclegan_semantic_term_asks_the_input_class_of_the_translation": 18,
    "test_cyclegan_step_against_the_losses_written_out": 17,
    "test_smoke_training_resumes_bit_for_bit_and_refuses_bad_input": 15,
    "test_train_step_applies_the_gradients_of_its_losses": 12,
    "test_pix2pix_step_against_the_losses_written_out": 7,
    "test_patchgan_and_resnet_generator_shapes": 7,
    "test_cdcgan_cli_train_resume_sample_a_class_and_eval": 10,
    "test_sigkill_then_restart_equals_an_unbroken_run": 9,
    "test_sharded_steps_equal_single_device_steps": 8,
    "test_ctrl_c_during_compilation_then_sigterm_mid_run": 6,
    "test_two_processes_on_localhost_agree": 6,
    "test_train_step_equals_reference_updates": 5,
    "test_budgeted_run_fits_the_cosine_schedule_to_the_steps_that_fit": 4,
    "test_memory_span_study_end_to_end": 4,
    "test_premove_dcgan_samples_and_resumes": 4,
    "test_cli_train_then_sample_smoke": 3,
    "test_nonfinite_skip_mode_keeps_the_parameters_finite": 3,
    "test_resume_gives_the_same_run": 3,
    "test_train_step_gives_the_real_labels_to_the_real_images": 3,
    "test_encoder_guess_beats_random_starts_and_interpolation_ends_at_both": 3,
    "test_fc_gan_cli_train_resume_sample": 3,
}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -_LONGEST_FIRST.get(item.originalname, 0))  # stable for the rest
