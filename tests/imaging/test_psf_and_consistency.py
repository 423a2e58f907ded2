"""The PSF from spots and the consistency check through the engine, the CLI and the widget."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from conftest import tiny_model
from napari_dan import cli
from napari_dan.engine import spot_psf, super_resolve
from napari_dan.errors import InputError
from napari_dan.imaging.camera import Camera, bin_pixels, expose
from napari_dan.imaging.consistency import reproject
from napari_dan.imaging.degradations import blur
from napari_dan.imaging.psf import gaussian_psf
from napari_dan.imaging.specimens import beads
from napari_dan.model.kernels import kernel_stats


def _beads(fwhm=4.71, shape=(256, 256), seed=0, planes=1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(planes):
        lr = bin_pixels(blur(beads(shape, 1 / 2000, rng), gaussian_psf(41, fwhm)), 2)
        out.append(expose(lr / lr.max(), Camera(photons=5000, offset=100), rng))
    return out[0] if planes == 1 else np.stack(out)


def test_spots_kernel_through_the_engine():
    m = tiny_model(in_nc=1, scale=2)
    img = _beads()
    r = super_resolve(img, m, kernel="spots", tile_size=64)
    sp = r.metadata["spots"]
    assert r.metadata["mode"] == "user kernel" and r.metadata["kernel_source"] == "spots"
    assert sp["n_spots"] >= 5 and sp["output_grid"]["fwhm_px"] == pytest.approx(4.71, rel=0.06)
    k, info = spot_psf(img, m)
    assert info["n_spots"] == sp["n_spots"] and k.shape == (21, 21)
    with pytest.raises(InputError, match="spots"):
        super_resolve(img, m, kernel="beads")
    with pytest.raises(InputError, match="spot"):
        spot_psf(np.random.default_rng(1).normal(100, 2, (64, 64)).astype(np.float32), m)


def test_spots_use_the_brightest_plane_of_a_stack():
    m = tiny_model(in_nc=1, scale=2)
    st = _beads(planes=3).astype(np.float32)
    st[0] = np.random.default_rng(2).normal(100, 1, st[0].shape)  # an empty plane
    st[2] *= 0.5
    _, info = spot_psf(st, m)
    assert info["plane"] == [1]


@pytest.mark.parametrize("mode", ["global", "per-plane", "per-tile"])
def test_consistency_reported_for_every_plane(mode):
    m = tiny_model(in_nc=1, scale=2)
    st = _beads(shape=(96, 96), planes=2)
    r = super_resolve(st, m, kernel_mode=mode, tile_size=48)
    c = r.metadata["consistency"]
    assert len(c["per_plane"]) == 2 and c["sampling"] == "bicubic"
    assert np.isfinite(c["relative_residual"]) and c["relative_residual"] > 0


def test_residual_map_is_input_minus_the_reprojected_result():
    m = tiny_model(in_nc=1, scale=2)
    img = _beads(shape=(64, 64)).astype(np.float32)
    r = super_resolve(img, m, residual=True, tile_size=64, precision="fp32")
    assert r.residual.shape == img.shape and r.residual.dtype == np.float32
    want = img - reproject(r.image[None].astype(np.float64), r.kernel, 2, "bicubic")[0]
    assert np.allclose(r.residual, want, atol=1e-3 * float(img.max() - img.min()))
    # without residual=True no map is kept
    assert super_resolve(img, m, tile_size=64).residual is None


def test_residual_map_rgb_and_channels():
    m = tiny_model(in_nc=3, scale=2)
    rgb = np.random.default_rng(3).integers(0, 255, (24, 28, 3), dtype=np.uint8)
    r = super_resolve(rgb, m, residual=True)
    assert r.residual.shape == rgb.shape
    g = tiny_model(in_nc=1, scale=2)
    ch = np.random.default_rng(4).random((2, 24, 28)).astype(np.float32)
    r = super_resolve(ch, g, channel_axis=0, residual=True)
    assert r.residual.shape == ch.shape and len(r.metadata["consistency"]["per_plane"]) == 1


def test_microscopy_models_check_with_binning(tmp_path):
    m = tiny_model(in_nc=1, scale=2)
    m.info["provenance"] = {"config": {"data_kind": "microscopy"}}
    assert m.sampling == "bin"
    r = super_resolve(_beads(shape=(64, 64)), m)
    assert r.metadata["consistency"]["sampling"] == "bin"


def test_cli_psf_spots(tmp_path, capsys):
    ckpt = tmp_path / "tiny.pt"
    tiny_model(in_nc=1, scale=2).save(ckpt)
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "beads.tif", _beads(planes=2), imagej=True,
                     resolution=(10.0, 10.0), metadata={"unit": "um", "axes": "ZYX"})
    rc = cli.main(["super-resolve", str(d), "-o", str(tmp_path / "o"), "-m", str(ckpt),
                   "--psf", "spots"])
    out = capsys.readouterr().out
    assert rc == 0 and "spots" in out and "consistency residual" in out
    with tifffile.TiffFile(tmp_path / "o" / "beads_x2_kernel.tif") as t:
        info = json.loads(t.pages[0].description)
    assert info["spots"]["n_spots"] >= 5 and info["consistency"]["per_plane"]
    assert info["produced_by"]["options"]["psf"] == "spots"
    assert kernel_stats(t_kernel := tifffile.imread(tmp_path / "o" / "beads_x2_kernel.tif")
                        ).fwhm == pytest.approx(4.71, rel=0.1), t_kernel.shape
    # an image without spots fails that file with one line
    tifffile.imwrite(d / "flat.tif", np.full((64, 64), 100, np.uint16))
    rc = cli.main(["super-resolve", str(d / "flat.tif"), "-o", str(tmp_path / "o2"), "-m",
                   str(ckpt), "--psf", "spots"])
    captured = capsys.readouterr()
    assert rc == 1 and "spot" in (captured.out + captured.err)
    assert not (tmp_path / "o2" / "flat_x2.tif").exists()
