"""regrid_kernel: a PSF moved onto a grid of other pixels keeps its physical width and centre."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dan.model.kernels import FWHM_PER_SIGMA, gaussian_kernel, kernel_stats, regrid_kernel


@pytest.mark.parametrize("fwhm,ratio,size", [(10.0, 0.5, 41), (6.0, 2.0, 21), (16.0, 0.25, 61)])
def test_width_scales_with_the_ratio_and_stays_centred(fwhm, ratio, size):
    k = gaussian_kernel(size, fwhm / FWHM_PER_SIGMA)
    out = regrid_kernel(k, ratio)
    n = int(round(size * ratio))
    assert out.shape[0] % 2 == 1 and abs(out.shape[0] - n) <= 1 and out.shape[0] == out.shape[1]
    assert out.dtype == np.float32 and out.sum() == pytest.approx(1.0, abs=1e-5)
    st = kernel_stats(out)
    assert st.fwhm == pytest.approx(fwhm * ratio, rel=0.03)
    c = out.shape[0] // 2
    assert st.centroid_y == pytest.approx(c, abs=1e-3) and st.centroid_x == pytest.approx(c, abs=1e-3)


def test_small_results_keep_three_pixels_and_bad_input_is_refused():
    assert regrid_kernel(gaussian_kernel(5, 0.8), 0.1).shape == (3, 3)
    with pytest.raises(ValueError, match="odd"):
        regrid_kernel(np.ones((4, 4)), 0.5)
    with pytest.raises(ValueError, match="positive"):
        regrid_kernel(gaussian_kernel(5, 1.0), 0.0)
