"""Kernel utilities: Gaussians, PCA, projection, statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_dan.model.kernels import (
    FWHM_PER_SIGMA,
    decode_code,
    fit_kernel_size,
    gaussian_kernel,
    kernel_stats,
    pca_basis,
    project_kernel,
    random_gaussian_kernels,
)


@pytest.mark.parametrize("sx,sy,theta", [(1.0, 1.0, 0.0), (2.5, 1.2, 0.0), (3.0, 1.0, math.pi / 4),
                                         (2.0, 1.0, -math.pi / 3)])
def test_stats_recover_gaussian_parameters(sx, sy, theta):
    k = gaussian_kernel(31, sx, sy, theta)
    assert k.shape == (31, 31) and abs(k.sum() - 1) < 1e-5
    st = kernel_stats(k)
    assert st.centroid_x == pytest.approx(15, abs=1e-6) and st.centroid_y == pytest.approx(15, abs=1e-6)
    assert st.sigma_major == pytest.approx(max(sx, sy), rel=2e-3)
    assert st.sigma_minor == pytest.approx(min(sx, sy), rel=2e-3)
    assert st.fwhm_major == pytest.approx(FWHM_PER_SIGMA * max(sx, sy), rel=2e-3)
    if sx != sy:
        # the angle is an axis: compare modulo 180 degrees
        d = (st.angle - math.degrees(theta) + 90) % 180 - 90
        assert abs(d) < 0.5
        assert st.anisotropy == pytest.approx(sx / sy, rel=5e-3)


def test_physical_units():
    st = kernel_stats(gaussian_kernel(21, 2.0), pixel_size=0.05, unit="um")
    assert st.fwhm_physical == pytest.approx(st.fwhm * 0.05)
    assert "um" in st.summary() and "FWHM" in st.summary()


def test_pca_projection_small_for_training_distribution():
    ks, _ = random_gaussian_kernels(3000, 21, setting=1, rng=np.random.default_rng(0))
    basis, mean = pca_basis(ks, 10)
    assert basis.shape == (441, 10)
    np.testing.assert_allclose(basis.T @ basis, np.eye(10), atol=1e-4)
    for s in (0.6, 1.5, 3.0):
        code, rec, err = project_kernel(gaussian_kernel(21, s), basis, mean)
        assert err < 0.02, (s, err)
        assert kernel_stats(rec).sigma_major == pytest.approx(s, rel=0.03)
        np.testing.assert_allclose(decode_code(code, basis, mean), rec, atol=1e-6)
    # an anisotropic kernel is far outside an isotropic basis: the error says so
    _, _, err = project_kernel(gaussian_kernel(21, 3.5, 0.7, 0.5), basis, mean)
    assert err > 0.2


def test_fit_kernel_size_crops_and_pads():
    big = gaussian_kernel(41, 6.0)
    k, lost = fit_kernel_size(big, 21)
    assert k.shape == (21, 21) and lost > 0.05 and abs(k.sum() - 1) < 1e-5
    small, lost = fit_kernel_size(gaussian_kernel(7, 0.8), 21)
    assert lost == pytest.approx(0, abs=1e-7) and small[10, 10] == small.max()
    with pytest.raises(ValueError, match="odd"):
        fit_kernel_size(np.ones((4, 4)), 21)
    with pytest.raises(ValueError, match="NaN"):
        fit_kernel_size(np.full((3, 3), np.nan), 21)


def test_setting2_is_anisotropic():
    ks, params = random_gaussian_kernels(50, 31, setting=2, rng=np.random.default_rng(1))
    assert ks.shape == (50, 31, 31)
    np.testing.assert_allclose(ks.sum((1, 2)), 1, atol=1e-5)
    aniso = [kernel_stats(k).anisotropy for k in ks]
    assert max(aniso) > 2
