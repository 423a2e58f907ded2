"""The PSF of an objective as a known kernel (napari_dan.Optics): physics, validation, engine."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import napari_dan
from conftest import tiny_model
from napari_dan import InputError, Optics, super_resolve
from napari_dan.imaging import psf as psf_module
from napari_dan.imaging.psf import airy_fwhm
from napari_dan.io import micrometres
from napari_dan.model.kernels import kernel_stats


def _image(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((24, 24)) * 1000 + 100).astype(np.uint16)


@pytest.mark.parametrize("psfmodels", [True, False])
def test_kernel_width_follows_the_optics(monkeypatch, psfmodels):
    if psfmodels and not psf_module.have_psfmodels():
        pytest.skip("psfmodels not installed")
    monkeypatch.setattr(psf_module, "have_psfmodels", lambda: psfmodels)
    o = Optics(na=1.4, wavelength=0.52, pixel_size=0.1)
    k, info = o.kernel(scale=2, size=21)
    assert k.shape == (21, 21) and k.dtype == np.float32
    assert k.sum() == pytest.approx(1, abs=1e-5) and k[10, 10] == k.max()
    # the in-focus FWHM is about 0.51 lambda / NA, on the output grid of 0.05 µm pixels
    assert info["fwhm_um"] == pytest.approx(airy_fwhm(1.4, 0.52), rel=0.08)
    assert info["fwhm_px"] == pytest.approx(info["fwhm_um"] / 0.05)
    assert info["output_pixel_size_um"] == 0.05 and info["modality"] == "widefield"
    assert info["psf_model"].startswith("Gibson-Lanni" if psfmodels else "Gaussian")
    # twice the scale, twice the width in output pixels; a lower NA, a wider PSF
    assert o.kernel(4, 41)[1]["fwhm_px"] == pytest.approx(2 * info["fwhm_px"], rel=0.02)
    assert Optics(0.7, 0.52, 0.1).kernel(2, 21)[1]["fwhm_um"] > 1.8 * info["fwhm_um"]
    # confocal (pinhole closed) is narrower than widefield, about 1/sqrt(2) at equal wavelengths
    conf = Optics(1.4, 0.52, 0.1, excitation=0.52).kernel(2, 21)[1]
    assert conf["modality"] == "confocal"
    assert conf["fwhm_um"] == pytest.approx(info["fwhm_um"] / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize("kw, words", [
    (dict(na=1.6, wavelength=0.52), "below the immersion"),
    (dict(na=1.2, wavelength=0.52, ni=1.0), "below the immersion"),
    (dict(na=0, wavelength=0.52), "numerical aperture"),
    (dict(na=1.4, wavelength=520), "0.52 for 520 nm"),
    (dict(na=1.4, wavelength=0.52, excitation=488), "excitation"),
    (dict(na=1.4, wavelength=0.52, pixel_size=-0.1), "pixel size"),
    (dict(na=float("nan"), wavelength=0.52), "numerical aperture"),
    (dict(na="high", wavelength=0.52), "must be a number"),
])
def test_bad_optics_are_refused_with_what_is_wrong(kw, words):
    with pytest.raises(InputError, match=words):
        Optics(**kw)


def test_engine_restores_with_the_optics_psf():
    model = tiny_model(in_nc=1, scale=2)
    img = _image()
    optics = Optics(na=1.0, wavelength=0.6, pixel_size=0.16)
    r = super_resolve(img, model, kernel=optics)
    md = r.metadata
    assert md["mode"] == "user kernel" and md["kernel_source"] == "optics"
    assert md["optics"]["na"] == 1.0 and md["optics"]["fwhm_px"] > 0
    # exactly what passing that PSF as an array gives
    k, _ = optics.kernel(model.scale, model.kernel_size)
    same = super_resolve(img, model, kernel=k)
    np.testing.assert_array_equal(r.image, same.image)
    assert kernel_stats(r.kernel).fwhm == pytest.approx(kernel_stats(same.kernel).fwhm)
    assert napari_dan.SRResult is type(r)


def test_optics_without_pixel_size_or_out_of_range_says_so():
    model = napari_dan.load_model("dan-x2-fluo")
    with pytest.raises(InputError, match="pixel size"):
        super_resolve(_image(), model, kernel=Optics(1.4, 0.52))
    # 20 nm camera pixels: the PSF is 18 output pixels wide, beyond what the model knows
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        r = super_resolve(_image(), model, kernel=Optics(1.4, 0.52, pixel_size=0.02))
    assert any("wider than any PSF" in str(w.message) for w in got)
    assert "wider than any PSF" in r.metadata["optics"]["note"]


def test_micrometres():
    assert micrometres(65, "nm") == pytest.approx(0.065)
    assert micrometres(0.1, "µm") == 0.1 and micrometres(0.1, "um") == 0.1
    assert micrometres(0.1, "micron") == 0.1 and micrometres(2, "pixel") is None
    assert micrometres(0.1, "inch") is None and micrometres(None, "µm") is None


def test_every_known_kernel_is_checked_against_the_trained_range():
    from napari_dan.model.kernels import gaussian_kernel

    model = napari_dan.load_model("dan-x2-fluo")
    for kernel, expect in ((gaussian_kernel(41, 6.0), "wider"),
                           (gaussian_kernel(21, 0.4), "narrower"), (gaussian_kernel(21, 2.0), None)):
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            super_resolve(_image(), model, kernel=kernel)
        msgs = [str(w.message) for w in got]
        if expect is None:
            assert not any("trained on" in m for m in msgs), msgs
        else:
            assert any(m.startswith("the PSF given (") and f"is {expect} than any PSF" in m
                       for m in msgs), msgs
            assert len(msgs) == 1, msgs  # one warning, not two
            assert "far from what the model knows" not in msgs[0]


def test_python_m_napari_dan():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "napari_dan", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("napari-dan ")


def test_a_kernel_without_width_gets_its_error_not_a_range_note():
    model = napari_dan.load_model("dan-x2-fluo")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        with pytest.raises(InputError, match="no positive values"):
            super_resolve(_image(), model, kernel=np.zeros((21, 21)))
    assert not any("trained on" in str(w.message) for w in got)
