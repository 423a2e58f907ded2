"""The Gaussian8 evaluation: protocol wiring, baselines, kernel errors, CLI and JSON."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_model
from napari_dan.imaging.degradations import degrade, imresize, imresize_torch, quantize
from napari_dan.imaging.metrics import y_psnr, y_ssim
from napari_dan.model.kernels import gaussian_kernel
from napari_dan.training.evaluate import (
    add_evaluate_arguments,
    evaluate_gaussian8,
    format_table,
    gaussian8_sigmas,
    match_channels,
    mod_crop,
    read_benchmark_image,
    run_evaluate,
)


def _scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A small natural-ish RGB image: smooth shapes, edges, a little texture."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.5 + 0.4 * np.sin(6 * xx + c) * np.cos(5 * yy - c) for c in (0, 1, 2)], -1)
    base[h // 4:h // 2, w // 3:2 * w // 3] = [0.9, 0.2, 0.1]
    return np.clip(base + 0.03 * r.standard_normal((h, w, 3)), 0, 1)


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "set"
    d.mkdir()
    # odd sizes so that the mod-crop matters; one RGB and one gray (Set14 has a gray image too)
    Image.fromarray((_scene(37, 42) * 255).round().astype(np.uint8)).save(d / "a.png")
    Image.fromarray((_scene(34, 35, 1)[..., 1] * 255).round().astype(np.uint8)).save(d / "b.png")
    (d / "notes.txt").write_text("not an image")
    return d


def test_sigmas_are_the_papers():
    np.testing.assert_allclose(gaussian8_sigmas(2), np.linspace(0.8, 1.6, 8))
    np.testing.assert_allclose(gaussian8_sigmas(3)[[0, -1]], [1.35, 2.40])
    np.testing.assert_allclose(gaussian8_sigmas(4)[[0, -1]], [1.80, 3.20])
    with pytest.raises(ValueError, match="scales 2, 3 and 4"):
        gaussian8_sigmas(8)


def test_read_crop_and_channels(image_dir):
    a, b = read_benchmark_image(image_dir / "a.png"), read_benchmark_image(image_dir / "b.png")
    assert a.shape == (37, 42, 3) and b.shape == (34, 35) and a.max() <= 1
    assert mod_crop(a, 4).shape == (36, 40, 3)
    rgb = match_channels(b, 3)
    assert rgb.shape == (34, 35, 3) and np.array_equal(rgb[..., 2], b)
    luma = match_channels(a, 1)
    np.testing.assert_allclose(luma, 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2],
                               atol=1e-12)


def test_bicubic_only_follows_the_protocol(image_dir):
    res = evaluate_gaussian8(None, image_dir, scale=2)
    assert res["methods"] == ["bicubic"] and res["model"] is None
    assert [r["image"] for r in res["per_image"]] == ["a", "b"]
    assert len(res["records"]) == 16
    # recompute one record by hand: mod-crop, the 4th kernel, degrade, bicubic up, uint8, border 2
    hr = mod_crop(read_benchmark_image(image_dir / "a.png"), 2)
    sigma = np.linspace(0.8, 1.6, 8)[3]
    lr = degrade(hr, gaussian_kernel(21, sigma), 2)
    sr = quantize(imresize(lr, 2))
    rec = [r for r in res["records"] if r["image"] == "a"][3]
    assert rec["sigma"] == pytest.approx(sigma, abs=1e-4)
    assert rec["psnr"]["bicubic"] == pytest.approx(y_psnr(sr, hr, 2), abs=1e-9)
    assert rec["ssim"]["bicubic"] == pytest.approx(y_ssim(sr, hr, 2), abs=1e-9)
    # wider kernels lose more: the per-sigma means fall monotonically
    per_sigma = [r["psnr"]["bicubic"] for r in res["per_sigma"]]
    assert all(x > y for x, y in zip(per_sigma, per_sigma[1:], strict=False))
    # the set mean is the mean over all image-kernel pairs
    assert res["mean"]["psnr"]["bicubic"] == pytest.approx(
        np.mean([r["psnr"]["bicubic"] for r in res["records"]]))
    with pytest.raises(ValueError, match="needs a scale"):
        evaluate_gaussian8(None, image_dir)


class _BicubicNet(torch.nn.Module):
    """Stands in for a network: bicubic upscaling and a fixed sigma-2.0 kernel estimate, so that
    every number the evaluation reports is known in advance."""

    def __init__(self, scale: int, in_nc: int):
        super().__init__()
        self.scale, self.in_nc, self.loop, self.kernel_size, self.code_len = scale, in_nc, 1, 21, 441
        self.calls = {"forward": 0, "restore": 0}
        self.codes: list[torch.Tensor] = []

    def forward(self, lr):
        self.calls["forward"] += 1
        k = torch.from_numpy(gaussian_kernel(21, 2.0))[None]
        return imresize_torch(lr.double(), self.scale).float(), k

    def encode(self, kernel):
        return kernel.reshape(kernel.shape[0], -1)

    def restore(self, lr, code):
        self.calls["restore"] += 1
        self.codes.append(code)
        return imresize_torch(lr.double(), self.scale).float() + 1.0 / 255  # one grey level off


def test_model_wiring_with_a_known_network(image_dir, tiny_rgb):
    net = _BicubicNet(2, 3)
    tiny_rgb.network = net
    res = evaluate_gaussian8(tiny_rgb, image_dir, whole_image=True)
    assert res["inference"] == "whole-image" and res["methods"] == ["dan", "non_blind", "bicubic"]
    assert net.calls == {"forward": 16, "restore": 16}
    for r in res["records"]:
        # float32 inside the network moves a few pixels across a uint8 rounding boundary
        assert r["psnr"]["dan"] == pytest.approx(r["psnr"]["bicubic"], abs=0.01)
        assert r["psnr"]["non_blind"] < r["psnr"]["bicubic"]
        # the estimate is always sigma 2.0: too wide for every Gaussian8 x2 kernel
        assert r["kernel"]["sigma_error"] > 0.3
    errs = [r["kernel"]["sigma_error"] for r in res["per_sigma"]]
    assert all(x > y for x, y in zip(errs, errs[1:], strict=False))
    # the non-blind path encodes the true kernel of each record
    first = net.codes[0].reshape(21, 21).numpy()
    np.testing.assert_allclose(first, gaussian_kernel(21, 0.8), atol=1e-6)
    table = format_table(res)
    assert "true kernel" in table and "sigma 0.80" in table and "mean set" in table


def test_tiny_model_through_engine_and_whole_image(image_dir, tiny_gray):
    whole = evaluate_gaussian8(tiny_gray, image_dir, max_images=1, whole_image=True)
    assert whole["protocol"]["channels"] == 1 and len(whole["records"]) == 8
    rec = whole["records"][0]
    assert set(rec["psnr"]) == {"dan", "non_blind", "bicubic"}
    assert 0 <= rec["kernel"]["l1"] <= 2 and np.isfinite(rec["kernel"]["sigma_est"])
    pytest.importorskip("napari_dan.engine")
    eng = evaluate_gaussian8(tiny_gray, image_dir, max_images=1)
    assert eng["inference"] == "engine"
    # bicubic does not depend on the path; the model's result is at least computed on the same pair
    assert eng["mean"]["psnr"]["bicubic"] == pytest.approx(whole["mean"]["psnr"]["bicubic"])
    assert np.isfinite(eng["mean"]["psnr"]["dan"])


def test_scale_mismatch_is_an_actionable_error(image_dir, tiny_rgb):
    with pytest.raises(ValueError, match="x2 model"):
        evaluate_gaussian8(tiny_rgb, image_dir, scale=4)


def _parse(argv):
    p = argparse.ArgumentParser()
    add_evaluate_arguments(p)
    return p.parse_args(argv)


def test_cli_json_and_checkpoint_path(image_dir, tmp_path, capsys):
    ckpt = tiny_model(in_nc=3, scale=2).save(tmp_path / "tiny.pt")
    out = tmp_path / "res.json"
    rc = run_evaluate(_parse(["--model", str(ckpt), "bicubic", "--scale", "2", "--data",
                              str(image_dir), "--max-images", "1", "--whole-image",
                              "--json", str(out), "--quiet"]))
    assert rc == 0
    data = json.loads(out.read_text())
    assert [d["model"]["name"] if d["model"] else None for d in data] == ["tiny", None]
    assert data[0]["mean"]["n"] == 8 and data[1]["methods"] == ["bicubic"]
    printed = capsys.readouterr().out
    assert "mean set" in printed and "bicubic only" in printed


def test_cli_errors_return_2(tmp_path, image_dir, capsys):
    assert run_evaluate(_parse(["--model", "bicubic", "--scale", "2", "--data",
                                str(tmp_path / "missing"), "--quiet"])) == 2
    assert "not a folder" in capsys.readouterr().err
    assert run_evaluate(_parse(["--model", "no-such-model", "--data", str(image_dir),
                                "--quiet"])) == 2
    assert "unknown model" in capsys.readouterr().err


def _benchmark(name: str):
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(bench))  # microscopy.py imports its helpers from quality.py
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", bench / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_benchmark_scripts_run_quick_on_a_checkpoint(image_dir, tmp_path, capsys):
    ckpt = tiny_model(in_nc=1, scale=2).save(tmp_path / "tiny-gray.pt")
    doc = tmp_path / "quality.md"
    quality = _benchmark("quality")
    assert quality.main(["--quick", "--model", str(ckpt), "--data", str(image_dir),
                         "--output", str(doc)]) == 0
    micro = _benchmark("microscopy")
    assert micro.main(["--quick", "--model", str(ckpt), "--output", str(doc),
                       "--json", str(tmp_path / "micro.json")]) == 0
    import json

    records = json.loads((tmp_path / "micro.json").read_text())["results"][0]
    # a checkpoint file is labelled by its name and path, so two versions of a model stay apart
    assert records["model"] == f"tiny-gray ({ckpt})" and len(records["rows"]) == 4  # 2 x 2 noises
    row = records["rows"][0]
    assert {"image", "fwhm", "noise", "bicubic", "rl", "dan_blind", "dan_true",
            "fwhm_error", "consistency"} <= set(row)
    assert row["bicubic"] > 10 and np.isfinite(row["dan_blind"])
    # the side-by-side summary reads the same JSON
    summ = _benchmark("compare_microscopy").summary(records)
    assert summ["fields_1db"].endswith("/4") and np.isfinite(summ["dan_blind"])
    assert summ["fwhm_all"] == pytest.approx(np.median([r["fwhm_error"] for r in records["rows"]]))
    text = doc.read_text()
    # both sections, each once, under the shared conventions
    assert text.startswith("# Quality") and text.count("## Gaussian8 benchmark") == 1
    assert text.count("## Fluorescence microscopy") == 1 and f"**tiny-gray ({ckpt})** (x2" in text
    # re-running replaces the section instead of appending a second one
    assert quality.main(["--quick", "--model", str(ckpt), "--data", str(image_dir),
                         "--output", str(doc)]) == 0
    assert doc.read_text().count("## Gaussian8 benchmark") == 1


@pytest.mark.slow
def test_speed_benchmark_runs_quick_on_a_checkpoint(tmp_path, capsys):
    ckpt = tiny_model(in_nc=1, scale=2).save(tmp_path / "tiny-gray.pt")
    speed = _benchmark("speed")
    speed.main(["--models", str(ckpt), "--sizes", "48", "--no-quality"])
    out = capsys.readouterr().out
    for method in ("restorer", "global", "per-tile", "convs"):
        assert f"| tiny-gray | 48x48 | {method} |" in out
    assert "super_resolve / Restorer pass" in out and "convolutions alone / Restorer pass" in out


def test_psf_oracle_recovers_a_width_between_its_candidates():
    """The oracle fits only the PSF width with everything else known: off the candidate grid,
    clean it lands within 1%, and the fit follows the truth rather than a fixed candidate."""
    oracle = _benchmark("psf_oracle")
    micro = _benchmark("microscopy")
    from napari_dan.imaging.camera import bin_pixels
    from napari_dan.imaging.degradations import blur
    from napari_dan.imaging.specimens import beads

    spec = beads((96, 96), 1 / 150, np.random.default_rng(3))
    spec = spec / spec.max() + 0.02
    models = np.stack([bin_pixels(blur(spec, micro.psf_for(float(c))), 2)
                       for c in oracle.CANDIDATES]) * 10000.0 + micro.OFFSET
    fits = []
    for true in (3.3, 6.1):
        lr, _ = micro.observe(spec, micro.psf_for(true), 2, None, np.random.default_rng(0))
        fits.append(oracle.fit_width(lr, models, noisy=False))
        assert fits[-1] == pytest.approx(true, rel=0.01)
        lr, _ = micro.observe(spec, micro.psf_for(true), 2, 1000.0, np.random.default_rng(0))
        noisy_models = models / 10.0 + 0.9 * micro.OFFSET  # 1,000 photons: a tenth of the signal
        assert oracle.fit_width(lr, noisy_models, noisy=True) == pytest.approx(true, rel=0.1)
