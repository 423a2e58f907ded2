"""Y-PSNR / SSIM / kernel errors against their definitions and an independent implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_dan.imaging.metrics import crop_border, gaussian_window, kernel_errors, psnr, ssim, to_y, y_psnr, y_ssim
from napari_dan.model.kernels import gaussian_kernel


def test_y_is_bt601_with_offset():
    # pure colours and the extremes: Y = 16 + 65.481 R + 128.553 G + 24.966 B, not rounded
    img = np.array([[[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.25, 0.75]]])
    y = to_y(img)[0]
    expected = [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966,
                16 + 65.481 * 0.5 + 128.553 * 0.25 + 24.966 * 0.75]
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-9)


def test_y_of_gray_is_gray_times_255(rng):
    g = rng.random((7, 9))
    np.testing.assert_allclose(to_y(g), g * 255)
    np.testing.assert_allclose(to_y(g[..., None]), g * 255)
    with pytest.raises(ValueError, match="shape"):
        to_y(rng.random((4, 4, 2)))


def test_psnr_identical_is_inf_and_known_mse_matches_formula(rng):
    a = rng.random((16, 16)) * 255
    assert psnr(a, a) == math.inf
    b = a + np.where(rng.random(a.shape) < 0.5, -3.0, 3.0)  # MSE exactly 9
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 9), abs=1e-12)
    assert psnr(a, b, peak=1.0) == pytest.approx(10 * math.log10(1 / 9), abs=1e-12)
    with pytest.raises(ValueError, match="shape"):
        psnr(a, a[:-1])


def test_border_crop_ignores_errors_in_the_border(rng):
    hr = rng.random((20, 24, 3))
    sr = hr.copy()
    sr[:2] = 0.0  # damage only the top two rows
    sr[:, -2:] = 1.0  # and the two right columns
    assert y_psnr(sr, hr, border=2) == math.inf
    assert y_ssim(sr, hr, border=2) == pytest.approx(1.0)
    assert np.isfinite(y_psnr(sr, hr, border=1))
    assert crop_border(hr, 3).shape == (14, 18, 3)
    with pytest.raises(ValueError, match="too small"):
        crop_border(hr, 10)


def test_y_psnr_known_error_on_y():
    # an error of +d in every RGB channel moves Y by d * 219 (the weights sum to 219)
    hr = np.full((12, 12, 3), 0.4)
    d = 2.0 / 255
    got = y_psnr(hr + d, hr, border=0)
    assert got == pytest.approx(10 * math.log10(255**2 / (2 * 219 / 255) ** 2), abs=1e-9)


def test_ssim_of_identical_is_one_and_drops_with_noise(rng):
    a = rng.random((40, 40)) * 255
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    s20 = ssim(a, a + rng.normal(0, 20, a.shape))
    s60 = ssim(a, a + rng.normal(0, 60, a.shape))
    assert s60 < s20 < 0.999


def test_ssim_of_flat_images_is_the_luminance_term():
    # no variance, no covariance: SSIM = (2 p q + C1) / (p^2 + q^2 + C1) everywhere
    p, q = 100.0, 130.0
    c1 = (0.01 * 255) ** 2
    got = ssim(np.full((20, 20), p), np.full((20, 20), q))
    assert got == pytest.approx((2 * p * q + c1) / (p * p + q * q + c1), abs=1e-12)
    with pytest.raises(ValueError, match="window"):
        ssim(np.ones((8, 8)), np.ones((8, 8)))


def test_gaussian_window_is_fspecial():
    g = gaussian_window(11, 1.5)
    r = np.arange(11) - 5
    ref = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(np.outer(g, g), ref / ref.sum(), atol=1e-15)


def test_ssim_matches_skimage_on_the_valid_region(rng):
    """skimage filters the whole image (reflect padding) and averages after cropping (win-1)/2 =
    5 pixels, which is exactly the valid region: the two must agree to rounding error."""
    metrics = pytest.importorskip("skimage.metrics")
    hr = rng.random((48, 53, 3))
    # a structured image, not only noise: smooth ramps plus noise
    yy, xx = np.mgrid[0:48, 0:53]
    hr = 0.5 * hr + 0.25 * (1 + np.sin(xx / 5.0) * np.cos(yy / 7.0))[..., None]
    sr = np.clip(hr + rng.normal(0, 0.05, hr.shape), 0, 1)
    border = 3
    a, b = crop_border(to_y(sr), border), crop_border(to_y(hr), border)
    ref = metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=255)
    ours = y_ssim(sr, hr, border)
    assert ours == pytest.approx(ref, abs=1e-9)
    assert 0.2 < ours < 0.99  # a non-trivial value, so the agreement means something


def test_kernel_errors_sigma_and_l1():
    t = gaussian_kernel(21, 2.0)
    same = kernel_errors(t, t)
    assert same["l1"] == pytest.approx(0.0, abs=1e-6)
    assert same["sigma_error"] == pytest.approx(0.0, abs=1e-6)
    wider = kernel_errors(gaussian_kernel(21, 2.5), t)
    assert 0.4 < wider["sigma_error"] < 0.55  # truncation to 21x21 shrinks both a little
    assert wider["abs_sigma_error"] == pytest.approx(wider["sigma_error"])
    assert 0 < wider["l1"] < 2
    narrower = kernel_errors(gaussian_kernel(21, 1.0), t)
    assert narrower["sigma_error"] < -0.9
    # a smaller estimated kernel is zero-padded to the true kernel's size, not rejected
    small = kernel_errors(gaussian_kernel(11, 1.0), t)
    assert small["sigma_est"] == pytest.approx(narrower["sigma_est"], abs=1e-3)
    # disjoint kernels: L1 = 2
    a, b = np.zeros((5, 5)), np.zeros((5, 5))
    a[0, 0] = b[4, 4] = 1
    assert kernel_errors(a, b)["l1"] == pytest.approx(2.0)
