"""Image-quality and kernel-error metrics of the DAN papers' tables.

Conventions (docs/quality.md, ../shared/docs/dan-facts.md):

* Images are float arrays in [0, 1], ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` (RGB order).
* PSNR and SSIM are measured on the luma channel in 8-bit units: for RGB, BT.601
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (not rounded, so Y lies in [16, 235]); for a gray
  image the gray value times 255. The two are *not* interchangeable: the same error in [0, 1]
  gray units reads 20 log10(255/219) = 1.32 dB lower on gray*255 than on Y, because Y only spans
  219 of the 255 steps. Gray results are therefore never compared with RGB results.
* A border of ``border`` pixels (the scale factor, in the papers) is cropped from every side.
* PSNR uses a peak of 255; SSIM is Wang et al.'s: an 11 x 11 Gaussian window with sigma 1.5,
  C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, averaged over the *valid* region only (window centres
  at least 5 pixels inside the cropped image), as MATLAB's reference ``ssim_index`` does.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

from ..model.kernels import fit_kernel_size, kernel_stats

__all__ = ["to_y", "crop_border", "psnr", "ssim", "y_psnr", "y_ssim", "kernel_errors",
           "gaussian_window", "BT601_Y"]

#: BT.601 luma weights for RGB in [0, 1] giving Y in [16, 235] (offset 16).
BT601_Y = (65.481, 128.553, 24.966)

_PEAK = 255.0
_C1 = (0.01 * _PEAK) ** 2
_C2 = (0.03 * _PEAK) ** 2


def to_y(img: np.ndarray) -> np.ndarray:
    """The luma channel in 8-bit units (float64, not rounded).

    Parameters
    ----------
    img : ndarray
        Float image in [0, 1]: ``(H, W)`` or ``(H, W, 1)`` gray, or ``(H, W, 3)`` RGB.

    Returns
    -------
    ndarray
        ``(H, W)``: BT.601 ``16 + 65.481 R + 128.553 G + 24.966 B`` for RGB, ``255 * gray`` for gray.
    """
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        return a * _PEAK
    if a.ndim == 3 and a.shape[-1] == 3:
        r, g, b = BT601_Y
        return 16.0 + r * a[..., 0] + g * a[..., 1] + b * a[..., 2]
    raise ValueError(f"expected a (H, W) gray or (H, W, 3) RGB image, got shape {a.shape}")


def crop_border(img: np.ndarray, border: int) -> np.ndarray:
    """Drop ``border`` pixels from each side of the first two (spatial) axes."""
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border == 0:
        return img
    if min(img.shape[:2]) <= 2 * border:
        raise ValueError(f"image of shape {img.shape[:2]} is too small to crop a {border}-pixel border")
    return img[border:-border, border:-border]


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, peak: float = _PEAK) -> float:
    """Peak signal-to-noise ratio ``10 log10(peak^2 / MSE)`` in dB; ``inf`` for identical images."""
    a, b = _check_pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 1-D Gaussian whose outer product is MATLAB's ``fspecial('gaussian', size, sigma)``."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r * r) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    # separable correlation, then keep only the positions where the window lies inside the image
    # (MATLAB filter2(..., 'valid')); the boundary mode is irrelevant after the crop
    r = len(g) // 2
    y = correlate1d(correlate1d(x, g, axis=0, mode="constant"), g, axis=1, mode="constant")
    return y[r:x.shape[0] - r, r:x.shape[1] - r]


def ssim(a: np.ndarray, b: np.ndarray, *, window: int = 11, sigma: float = 1.5,
         peak: float = _PEAK) -> float:
    """Mean structural similarity of two single-channel images over the valid region.

    Parameters
    ----------
    a, b : ndarray
        ``(H, W)`` images in units where ``peak`` is the dynamic range (255 for 8-bit Y).
    window, sigma : int, float
        Gaussian window side and standard deviation (11 and 1.5 in the papers).
    peak : float
        Dynamic range L for C1 = (0.01 L)^2 and C2 = (0.03 L)^2.
    """
    a, b = _check_pair(a, b)
    if a.ndim != 2:
        raise ValueError(f"ssim expects single-channel (H, W) images, got shape {a.shape}")
    if min(a.shape) < window:
        raise ValueError(f"image of shape {a.shape} is smaller than the {window}x{window} SSIM window")
    g = gaussian_window(window, sigma)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a * mu_a
    var_b = _filter_valid(b * b, g) - mu_b * mu_b
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def y_psnr(sr: np.ndarray, hr: np.ndarray, border: int = 0) -> float:
    """PSNR on the luma channel (see :func:`to_y`) after cropping ``border`` pixels; peak 255."""
    return psnr(crop_border(to_y(sr), border), crop_border(to_y(hr), border))


def y_ssim(sr: np.ndarray, hr: np.ndarray, border: int = 0) -> float:
    """SSIM on the luma channel (see :func:`to_y`) after cropping ``border`` pixels."""
    return ssim(crop_border(to_y(sr), border), crop_border(to_y(hr), border))


def kernel_errors(estimated: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """How far an estimated kernel is from the true one.

    Both kernels are normalised to sum 1 (the estimate is brought to the true kernel's size by
    centre crop / zero pad first). The width of each is its round-equivalent sigma
    ``sqrt(sigma_major * sigma_minor)`` from :func:`~napari_dan.model.kernels.kernel_stats`
    (a 2D Gaussian fit since session 7; second moments before, which is why Gaussian8 tables
    of 2026-11-26 give other sigma errors for the same kernels: compare their L1 column).

    Returns
    -------
    dict
        ``sigma_true``, ``sigma_est`` (pixels of the HR grid), ``sigma_error`` (est - true),
        ``abs_sigma_error``, ``l1`` (sum of absolute differences; 0 = identical, 2 = disjoint).
    """
    t = np.asarray(true, dtype=np.float64)
    if t.ndim != 2:
        raise ValueError(f"the true kernel must be 2D, got shape {t.shape}")
    t = np.clip(t, 0, None)
    t = t / t.sum()
    if t.shape[0] != t.shape[1]:
        raise ValueError(f"the true kernel must be square, got shape {t.shape}")
    e, _ = fit_kernel_size(np.asarray(estimated, dtype=np.float64), t.shape[0])
    e = e.astype(np.float64)
    se, st = kernel_stats(e), kernel_stats(t)
    s_est = math.sqrt(se.sigma_major * se.sigma_minor)
    s_true = math.sqrt(st.sigma_major * st.sigma_minor)
    return {"sigma_true": s_true, "sigma_est": s_est, "sigma_error": s_est - s_true,
            "abs_sigma_error": abs(s_est - s_true), "l1": float(np.abs(e - t).sum())}
