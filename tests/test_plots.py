"""jaxgen.plots and jaxgen.benchmarking.write_results: the files they write, written atomically."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxgen import benchmarking, plots

pytestmark = pytest.mark.plots  # the real drawings (tests/conftest.py stubs them elsewhere)


def _digits(n=6, size=5):
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (n, size, size, 1)).astype(np.float32)


@pytest.mark.parametrize("suffix, fmt", [(".png", "PNG"), (".jpg", "JPEG")])
def test_save_grid_writes_the_format_its_suffix_names(tmp_path, suffix, fmt):
    path = tmp_path / f"grid{suffix}"
    plots.save_grid(_digits(), path, ncol=3, scale=2)
    with Image.open(path) as img:
        assert img.format == fmt
        grid = plots.grid_array(_digits(), ncol=3)
        assert img.size == (2 * grid.shape[1], 2 * grid.shape[0])
        if fmt == "PNG":  # lossless: the pixels themselves
            np.testing.assert_array_equal(np.asarray(img)[::2, ::2], grid[..., 0])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_failed_save_keeps_the_old_file_whole(tmp_path, monkeypatch):
    """A crash half-way through writing a grid leaves the previous grid, not half a PNG."""
    path = tmp_path / "latest.png"
    plots.save_grid(_digits(), path)
    before = path.read_bytes()

    def half_then_crash(self, fp, format=None, **kw):
        fp.write(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        plots.save_grid(_digits() * 0.5, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest.png"]


def test_save_loss_curves_writes_a_png(tmp_path):
    rows = [{"step": s, "d_loss": 1.0 / s, "g_loss": 2.0 / s} for s in range(1, 6)]
    rows.append({"step": 5, "fid": 3.0})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    plots.save_loss_curves(tmp_path / "metrics.jsonl", tmp_path / "losses.png")
    with Image.open(tmp_path / "losses.png") as img:
        assert img.format == "PNG" and img.size == (1000, 350)  # two panels at 100 dpi
    assert sorted(p.name for p in tmp_path.iterdir()) == ["losses.png", "metrics.jsonl"]


def test_write_results_json_and_markdown(tmp_path, monkeypatch):
    env = {"date": "2026-01-02", "backend": "cpu", "device": "cpu", "cpu_count": 2, "jax": "0.1",
           "flax": "0.2"}  # fmt: skip
    monkeypatch.setattr(benchmarking, "environment", lambda: env)
    path = benchmarking.write_results("demo", {"ratio": np.float32(1.5)}, "| a |\n\n", tmp_path)
    assert path == tmp_path / "demo.json"
    assert path.read_text() == json.dumps({"environment": env, "ratio": 1.5}, indent=2)
    assert (tmp_path / "demo.md").read_text() == (
        "_Measured 2026-01-02 on cpu (cpu, 2 cores), jax 0.1, flax 0.2._\n\n| a |\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "demo.md"]
    # rewriting the markdown later keeps the environment the numbers were measured in
    monkeypatch.setattr(benchmarking, "environment", lambda: {**env, "date": "2030-01-01"})
    benchmarking.rewrite_markdown(path, lambda p: f"| ratio {p['ratio']} |")
    assert json.loads(path.read_text()) == {"environment": env, "ratio": 1.5}
    assert (tmp_path / "demo.md").read_text() == (
        "_Measured 2026-01-02 on cpu (cpu, 2 cores), jax 0.1, flax 0.2._\n\n| ratio 1.5 |\n"
    )


def test_a_figure_is_saved_in_the_format_its_suffix_names(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    plots.save_image_file(fig, tmp_path / "curve.svg")
    plots.save_image_file(fig, tmp_path / "curve.png", dpi=50)
    plt.close(fig)
    assert (tmp_path / "curve.svg").read_text().lstrip().startswith("<?xml")
    with Image.open(tmp_path / "curve.png") as img:
        assert img.format == "PNG" and img.size == (100, 100)
