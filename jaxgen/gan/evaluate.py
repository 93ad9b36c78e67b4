"""``jaxgen eval``: how good are a GAN's samples? (Frechet distance, classifier score, classes
covered)

The numbers come from a small CNN that jaxgen trains on the real images' labels (cached per dataset;
see :mod:`jaxgen.evaluation`), and are printed beside the same numbers for real images
(real-vs-real, the best a generator can do at this sample size) and for uniform noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxgen.errors import UserError


def _real_images(data_path: str, data_source: str, meta_cfg: dict | None):
    from jaxgen.data.images import load_images

    if data_path:
        return load_images(path=data_path)
    if data_source:
        if data_source == "builtin":
            return load_images("builtin")
        if data_source.startswith("tfds:"):
            return load_images("tfds", tfds_name=data_source[5:])
        raise UserError(f"--data_source must be 'builtin' or 'tfds:NAME', got {data_source!r}")
    if meta_cfg is not None:
        d = meta_cfg["data"]
        return load_images(
            d["source"], d["path"], d["tfds_name"], image_size=d.get("image_size", 0)
        )
    raise UserError(
        "say which real images to compare the samples with: --data_path DIR (MNIST IDX files) or "
        "--data_source builtin|tfds:NAME"
    )


def run_eval(
    *,
    workdir: str | None = None,
    samples: str | None = None,
    data_path: str = "",
    data_source: str = "",
    num: int = 10000,
    cache_dir: str = "~/.cache/jaxgen/classifiers",
    out: str = "",
    seed: int = 0,
    checkpoint: str = "best",
    quiet: bool = False,
) -> dict:
    """Evaluate a GAN workdir (``num`` fresh samples) or a ``.npy`` of samples; returns the result
    dict."""
    import jax

    from jaxgen import evaluation
    from jaxgen.training.checkpoint import read_meta
    from jaxgen.training.io import write_json_atomic

    meta_cfg, asked = None, None
    if workdir:
        from jaxgen.gan import sampling

        if num < evaluation.MIN_SAMPLES:
            raise UserError(
                f"--num must be at least {evaluation.MIN_SAMPLES} for the statistics to "
                f"mean anything, got {num}"
            )
        meta = read_meta(workdir)
        if meta is not None:
            meta_cfg = meta.get("config")
        model, gp, gs, cfg = sampling.load_generator(workdir, which=checkpoint)
        asked = sampling.balanced_labels(model, num)  # None for an unconditional GAN
        x = sampling.generate(
            model, gp, gs, jax.random.key(seed + 1), num, dist=cfg.model.latent_dist, labels=asked
        )
        what = f"{num} samples from {workdir} ({checkpoint} checkpoint)"
    else:
        p = Path(samples)
        if not p.is_file():
            raise UserError(
                f"samples file {str(p)!r} does not exist; "
                "write one with `jaxgen sample --workdir W "
                "--num 10000 --out samples.npy`"
            )
        try:
            x = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {str(p)!r} as a .npy array ({e})") from None
        what = f"{len(x)} samples from {p}"
    real = _real_images(data_path, data_source, meta_cfg)
    if real.labels is None:
        raise UserError(
            f"the real dataset {real.name} has no labels, "
            "which the evaluation classifier needs; use "
            "a labelled dataset (MNIST IDX files with their labels files, builtin, or tfds)"
        )
    cache = Path(cache_dir).expanduser()
    params, info = evaluation.get_classifier(real, cache, seed=0, quiet=quiet)
    result = evaluation.evaluate_samples(x, real, params, seed=seed, classifier_info=info)
    result["what"] = what
    if asked is not None:  # a conditional GAN: is each image the class it was asked for?
        from jaxgen.evaluation.classifier import features_and_probs
        from jaxgen.evaluation.during_training import label_agreement

        result["conditional"] = label_agreement(features_and_probs(params, x)[1], asked)
    if not quiet:
        print(f"evaluating {what} against {real.name}")
        print(evaluation.format_report(result))
        if asked is not None:
            c = result["conditional"]
            per = " ".join(f"{k}:{a:.3f}" for k, a in enumerate(c["per_class_accuracy"]))
            print(
                f"asked class read back: {c['label_accuracy']:.4f} of {num} samples "
                f"(worst class {c['worst_class_accuracy']:.3f}; {per})"
            )
    targets = [Path(out)] if out else []
    if workdir:
        (Path(workdir) / "eval").mkdir(exist_ok=True)
        targets.append(Path(workdir) / "eval" / f"report_{checkpoint}.json")
    for t in targets:
        write_json_atomic(t, result)
        if not quiet:
            print(f"wrote {t}")
    return result
