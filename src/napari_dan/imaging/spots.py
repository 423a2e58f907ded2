"""The PSF measured from isolated spots (beads, puncta), the classic way to check a microscope.

:func:`measure_psf` finds bright local maxima, rejects spots that are crowded (another spot
within ``isolation`` pixels), touch the border, are saturated or too faint, fits each kept spot
with a 2D Gaussian for its sub-pixel centre, shifts it there (spline interpolation), normalises
and averages them, and fits the average with a 2D Gaussian: FWHM along its major and minor axes
and the major axis' angle, on the grid of the image it was measured on.

The image's pixels integrate light over their area, which widens a spot by a box of one pixel
(variance 1/12 px^2 per axis); :meth:`SpotPSF.kernel` removes that and returns the optical PSF as
a Gaussian on a grid ``scale`` times finer (the output grid of a super-resolution), which is what
the engine uses as a known kernel (``psf="spots"``) and what DAN's blind estimate is compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import InputError
from ..model.kernels import GaussianFit, _principal, fit_gaussian_2d, gaussian_kernel

__all__ = ["SpotPSF", "measure_psf"]


@dataclass
class SpotPSF:
    """A PSF averaged from isolated spots.

    Attributes
    ----------
    average : (w, w) float32, the aligned mean of the kept spots (sums to 1), input grid
    fit : GaussianFit of ``average`` (input-grid pixels); its widths and angle are the median of
        the kept spots' own fitted covariances
    n_spots : spots averaged
    n_candidates : local maxima above the threshold
    rejected : why the others were left out (crowded, border, saturated, poor fit)
    positions : (n, 2) sub-pixel (y, x) of the kept spots, input pixels
    """

    average: np.ndarray
    fit: GaussianFit
    n_spots: int
    n_candidates: int
    rejected: dict = field(default_factory=dict)
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    @property
    def fwhm_major(self) -> float:
        return self.fit.fwhm_major

    @property
    def fwhm_minor(self) -> float:
        return self.fit.fwhm_minor

    @property
    def fwhm(self) -> float:
        return self.fit.fwhm

    @property
    def angle(self) -> float:
        return self.fit.angle

    def optical_sigmas(self) -> tuple[float, float]:
        """(major, minor) sigmas of the optics alone, input pixels: the fit less one pixel's box."""
        box = 1.0 / 12.0
        return (math.sqrt(max(self.fit.sigma_major**2 - box, 1e-4)),
                math.sqrt(max(self.fit.sigma_minor**2 - box, 1e-4)))

    def kernel(self, scale: int = 1, size: int = 21) -> np.ndarray:
        """The optical PSF as a Gaussian on a grid ``scale`` times finer, ``size`` x ``size``."""
        smaj, smin = self.optical_sigmas()
        return gaussian_kernel(size, smaj * scale, smin * scale, math.radians(self.fit.angle))

    def summary(self, pixel_size: float | None = None, unit: str | None = None) -> str:
        s = (f"PSF from {self.n_spots} isolated spots (of {self.n_candidates} found): FWHM "
             f"{self.fwhm_major:.2f} x {self.fwhm_minor:.2f} px, angle {self.angle:.0f} deg")
        if pixel_size:
            s += (f" = {self.fwhm_major * pixel_size:.4g} x {self.fwhm_minor * pixel_size:.4g} "
                  f"{unit or ''}").rstrip()
        return s

    def to_dict(self) -> dict:
        return {"n_spots": self.n_spots, "n_candidates": self.n_candidates,
                "rejected": dict(self.rejected), "fwhm_major_px": self.fwhm_major,
                "fwhm_minor_px": self.fwhm_minor, "fwhm_px": self.fwhm, "angle_deg": self.angle,
                "fit_rel_residual": self.fit.rel_residual}


def _covariance(f: GaussianFit) -> tuple[float, float, float]:
    """(cov_xx, cov_yy, cov_xy) of a fit."""
    t = math.radians(f.angle)
    c, s = math.cos(t), math.sin(t)
    a, b = f.sigma_major**2, f.sigma_minor**2
    return (a * c * c + b * s * s, a * s * s + b * c * c, (a - b) * c * s)


def _noise_sigma(img: np.ndarray) -> float:
    # robust: median absolute deviation of the difference of neighbours (ignores smooth signal);
    # quantised data (8-bit) can have a MAD of 0, so the spread of the central half is the floor
    d = np.diff(img, axis=1).ravel()
    mad = 1.4826 * np.median(np.abs(d - np.median(d)))
    q1, q3 = np.percentile(d, [25, 75])
    return float(max(mad, (q3 - q1) / 1.349, 0.5 / math.sqrt(3)) / math.sqrt(2))


def measure_psf(image, window: int | None = None, isolation: float | None = None,
                threshold: float = 8.0, max_spots: int = 500,
                saturation: float | None = None) -> SpotPSF:
    """Measure the PSF of a 2D image from its isolated spots.

    Parameters
    ----------
    image : 2D array (one plane; for a stack pass a plane or a max projection)
    window : odd side (px) of the crop around each spot (default: from a first width estimate,
        about 3 FWHM, at least 9)
    isolation : a spot with another candidate closer than this (px) is crowded (default: 0.8
        of the window's side, about 2.5 FWHM)
    threshold : candidates must rise this many noise sigmas above the local background
    max_spots : at most this many (the brightest isolated ones) are averaged
    saturation : spots with a pixel at or above this are left out (default: the dtype's maximum
        for integer images)

    Raises
    ------
    InputError : not 2D, or fewer than 3 usable spots
    """
    from scipy import ndimage as ndi

    a = np.asarray(image)
    if a.ndim != 2:
        raise InputError(f"the PSF is measured on one 2D plane, got an array of shape {a.shape}")
    if saturation is None and np.issubdtype(a.dtype, np.integer):
        saturation = float(np.iinfo(a.dtype).max)
    img = a.astype(np.float64)
    if not np.all(np.isfinite(img)):
        img = np.nan_to_num(img, nan=float(np.nanmedian(img)))
    bg = ndi.median_filter(img, size=15) if min(img.shape) >= 30 else np.full_like(img, np.median(img))
    sig = img - bg
    noise = _noise_sigma(img)
    def detect(width: float):
        # smoothing and peak neighbourhood follow the spot size, so a broad spot's noisy top
        # gives one candidate, not several that would reject each other as crowded
        smooth = ndi.gaussian_filter(sig, max(1.0, width / 4))
        size = max(5, int(round(width)) | 1)
        pk = (smooth == ndi.maximum_filter(smooth, size=size)) & (sig > threshold * noise)
        yy, xx = np.nonzero(pk)
        o = np.argsort(-sig[yy, xx])
        return yy[o], xx[o]

    ys, xs = detect(2.0)
    fine = np.stack([ys, xs], 1).astype(np.float64)  # every peak, for the crowding test
    fine_level = sig[ys, xs]
    if len(ys) < 3:
        raise InputError(f"found {len(ys)} spot(s) above {threshold} noise sigmas; measuring a PSF "
                         "needs at least 3 isolated spots (beads or puncta)")
    # a first width from the brightest few candidates
    widths = []
    for y, x in zip(ys[:20], xs[:20], strict=False):
        c = sig[max(y - 10, 0):y + 11, max(x - 10, 0):x + 11]
        f = fit_gaussian_2d(c, offset=True)
        if f is not None and f.sigma_major < 8:
            widths.append(f.fwhm)
    w0 = float(np.median(widths)) if widths else 3.0
    ys, xs = detect(w0)
    if window is None:
        window = max(9, int(round(3 * w0)) | 1)
    window = int(window) | 1
    half = window // 2
    iso = float(0.8 * window if isolation is None else isolation)
    pts = np.stack([ys, xs], 1).astype(np.float64)
    rejected = {"crowded": 0, "border": 0, "saturated": 0, "poor fit": 0}
    crops, positions, covs = [], [], []
    for i, (y, x) in enumerate(zip(ys, xs, strict=True)):
        if len(positions) >= max_spots:
            break
        d = np.hypot(pts[:, 0] - y, pts[:, 1] - x)
        d[i] = np.inf
        # also any fine-scale peak at least a fifth as bright beyond the spot's own core
        df = np.hypot(fine[:, 0] - y, fine[:, 1] - x)
        near = (df >= 0.75 * w0) & (df < iso) & (fine_level >= 0.2 * sig[y, x])
        if d.min() < iso or near.any():
            rejected["crowded"] += 1
            continue
        if y - half < 0 or x - half < 0 or y + half >= img.shape[0] or x + half >= img.shape[1]:
            rejected["border"] += 1
            continue
        raw = a[y - half:y + half + 1, x - half:x + half + 1]
        if saturation is not None and float(raw.max()) >= saturation:
            rejected["saturated"] += 1
            continue
        crop = sig[y - half:y + half + 1, x - half:x + half + 1]
        f = fit_gaussian_2d(crop, offset=True)
        # a lone spot leaves only noise behind its fit; neighbours inside the window leave more
        if f is not None:
            from_noise = noise * window / max(float(np.linalg.norm(crop - f.offset)), 1e-12)
        if (f is None or abs(f.cy - half) > 1.5 or abs(f.cx - half) > 1.5
                or f.rel_residual > 0.3 + 1.5 * from_noise or f.sigma_major > window / 3):
            rejected["poor fit"] += 1
            continue
        # centre it: shift by the sub-pixel offset, remove the fitted background, unit sum
        c = ndi.shift(crop - f.offset, (half - f.cy, half - f.cx), order=3, mode="nearest")
        total = c.sum()
        if total <= 0:
            rejected["poor fit"] += 1
            continue
        crops.append(c / total)
        positions.append((y + f.cy - half, x + f.cx - half))
        covs.append(_covariance(f))
    n_cand = len(ys)
    if len(crops) < 3:
        raise InputError(f"only {len(crops)} of {n_cand} spots are usable "
                         f"({', '.join(f'{v} {k}' for k, v in rejected.items() if v)}); measuring "
                         "a PSF needs at least 3 isolated, unsaturated spots")
    avg = np.mean(crops, axis=0)
    fit = fit_gaussian_2d(avg, offset=True)
    if fit is None:
        raise InputError("the averaged spot could not be fitted with a Gaussian")
    # the widths: the median of the spots' own fitted covariances (interpolating undersampled
    # spots to align them widens the average a little; the individual fits are not shifted)
    cov = np.median(np.array(covs), axis=0)
    smaj, smin, angle = _principal(cov[0], cov[1], cov[2])
    fit = replace(fit, sigma_major=smaj, sigma_minor=smin, angle=angle)
    avg = np.clip(avg - fit.offset, 0, None)
    avg = (avg / max(avg.sum(), 1e-12)).astype(np.float32)
    return SpotPSF(average=avg, fit=fit, n_spots=len(crops), n_candidates=n_cand,
                   rejected=rejected, positions=np.array(positions))

