"""Sample data: known kernel, consistent grids, nothing downloaded, no napari in the core."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from napari_dan.errors import InputError
from napari_dan.model.kernels import FWHM_PER_SIGMA, kernel_stats
from napari_dan.samples import make_sample


@pytest.mark.parametrize("kind,scale", [("photo", 4), ("microscopy", 2), ("microscopy", 4)])
def test_sample_grids_and_kernel(kind, scale):
    s = make_sample(kind, scale)
    lr, hr, k = s["lr"], s["hr"], s["kernel"]
    assert lr.dtype == np.uint8 and hr.dtype == np.uint8
    assert hr.shape[0] == scale * lr.shape[0] and hr.shape[1] == scale * lr.shape[1]
    assert (lr.ndim == 3) == s["rgb"] == (kind == "photo")
    assert k.dtype == np.float32 and k.shape == (21, 21)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    # the true kernel is the Gaussian the docstring promises: its width comes back from the moments
    st = kernel_stats(k)
    assert st.fwhm == pytest.approx(FWHM_PER_SIGMA * s["sigma"], rel=0.03)
    assert st.anisotropy == pytest.approx(1.0, abs=0.01)
    assert s["scale"] == scale and s["name"]


def test_microscopy_pixel_size_follows_scale():
    s2, s4 = make_sample("microscopy", 2), make_sample("microscopy", 4)
    assert s2["unit"] == s4["unit"] == "µm"
    assert s2["hr_pixel_size"] == s4["hr_pixel_size"] == pytest.approx(0.107)
    assert s4["pixel_size"] == pytest.approx(2 * s2["pixel_size"])
    assert make_sample("photo", 2)["pixel_size"] is None


def test_lr_is_the_blurred_downsampled_original():
    """Independent check with scipy: LR matches blur + area-averaging of HR far better than an
    unblurred downsample does (so the kernel really was applied, and the grids line up)."""
    s = make_sample("microscopy", 4)
    hr = s["hr"].astype(np.float64) / 255
    lr = s["lr"].astype(np.float64) / 255
    sc = s["scale"]

    def area(x):
        return x.reshape(x.shape[0] // sc, sc, x.shape[1] // sc, sc).mean(axis=(1, 3))

    blurred = area(ndimage.convolve(hr, s["kernel"].astype(np.float64), mode="reflect"))
    sharp = area(hr)
    inner = (slice(3, -3), slice(3, -3))
    err_blurred = np.abs(lr - blurred)[inner].mean()
    err_sharp = np.abs(lr - sharp)[inner].mean()
    assert err_blurred < 0.01
    assert err_blurred < 0.5 * err_sharp


def test_stack_has_one_kernel_per_plane_growing():
    s = make_sample("microscopy-stack", 2)
    n = s["lr"].shape[0]
    assert s["kernel"].shape == (n, 21, 21) and len(s["sigma"]) == n
    fwhm = [kernel_stats(k).fwhm for k in s["kernel"]]
    assert np.all(np.diff(fwhm) > 0)
    # the planes really differ in sharpness: gradient energy falls as the blur grows
    energy = [np.abs(np.diff(p.astype(float), axis=1)).mean() for p in s["lr"]]
    assert energy[0] > energy[-1]


def test_fluorescence_focus_series_widens_away_from_focus():
    s = make_sample("fluorescence-stack", 2)
    lr, hr, k = s["lr"], s["hr"], s["kernel"]
    n = len(s["defocus_um"])
    assert lr.shape == (n, 128, 128) and hr.shape == (n, 256, 256) and lr.dtype == np.uint16
    assert k.shape == (n, 21, 21) and np.allclose(k.sum(axis=(1, 2)), 1, atol=1e-5)
    fwhm = np.array([kernel_stats(kk).fwhm for kk in k])
    focus = int(np.argmin(np.abs(s["defocus_um"])))
    # narrowest in focus, wider on both sides, symmetric, inside the x2 fluorescence range
    assert fwhm.argmin() == focus and np.all(np.diff(fwhm[focus:]) > 0)
    np.testing.assert_allclose(fwhm, fwhm[::-1], rtol=0.02)
    assert 4 < fwhm.min() and fwhm.max() < 10
    # the defocused planes are blurrier: less gradient energy than the focus (same specimen)
    energy = [np.abs(np.diff(p.astype(float), axis=1)).mean() for p in lr]
    assert energy[focus] > 1.2 * energy[0] and energy[focus] > 1.2 * energy[-1]


def test_bad_arguments_are_explained():
    with pytest.raises(InputError, match="choose one of"):
        make_sample("movie")
    with pytest.raises(InputError, match="scale"):
        make_sample("photo", 8)


@pytest.mark.slow
def test_samples_import_neither_napari_nor_qt():
    code = ("import sys, napari_dan.samples as s; s.make_sample('microscopy', 4); "
            "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("scale", [2, 4])
def test_fluorescence_sample_is_a_microscope_recording(scale):
    """16-bit counts on an offset of 100, camera pixels twice/four times the HR grid's 40 nm, the
    PSF of a 1.4-NA objective at 520 nm; the LR is the blurred original integrated over pixels."""
    from napari_dan.imaging.camera import bin_pixels
    from napari_dan.imaging.psf import airy_fwhm

    s = make_sample("fluorescence", scale)
    lr, hr, k = s["lr"], s["hr"], s["kernel"]
    assert lr.dtype == hr.dtype == np.uint16 and not s["rgb"]
    assert hr.shape == (512, 512) and lr.shape == (512 // scale, 512 // scale)
    assert s["hr_pixel_size"] == 0.04 and s["pixel_size"] == pytest.approx(0.04 * scale)
    assert 95 <= np.median(lr) <= 140  # a dark field on the camera's offset
    assert kernel_stats(k).fwhm * 0.04 == pytest.approx(airy_fwhm(1.4, 0.52), rel=0.1)
    # noise aside, the LR is the original (target blur undone is not needed: compare the PSF's
    # blur of the clean original with the target's) integrated over camera pixels
    clean = ndimage.convolve(hr.astype(np.float64) - 100, k.astype(np.float64), mode="reflect")
    err = np.abs(bin_pixels(clean, scale) - (lr.astype(np.float64) - 100))[4:-4, 4:-4]
    assert np.median(err) < 6 * np.sqrt(np.median(lr - 100.0) + 1.5 ** 2) + 3
    assert make_sample("fluorescence", scale, seed=1)["lr"].tolist() != lr.tolist()


def test_model_for_sample_matches_scale_and_degradation():
    from napari_dan.samples import SAMPLE_KINDS, model_for_sample

    assert model_for_sample("photo", 4) == "dan-x4-rgb"
    assert model_for_sample("microscopy", 4) == "dan-x4-gray"
    assert model_for_sample("microscopy-stack", 2) == "dan-x2-gray"
    assert model_for_sample("fluorescence", 2) == "dan-x2-fluo"
    assert model_for_sample("fluorescence-stack", 2) == "dan-x2-fluo"
    assert all(model_for_sample(k, 2) for k in SAMPLE_KINDS)
    assert model_for_sample("nuclei", 2) is None and model_for_sample("photo", None) is None
