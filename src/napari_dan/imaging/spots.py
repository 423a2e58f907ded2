"""The PSF measured from isolated spots (beads, puncta), the classic way to check a microscope.

:func:`measure_psf` finds local maxima (a pixel 8 noise sigmas up, or 5 sigmas once smoothed to
the spot size: a matched filter that gathers a faint spot's photons), rejects spots that are
crowded (another candidate within ``isolation`` pixels), touch the border, are saturated,
extend to the edge of their window (a filament or blob through them) or are poorly fitted, and
fits the kept spots *together*: one 2D Gaussian covariance shared by all,
each spot its own amplitude, sub-pixel centre and background, the model integrated over each
camera pixel. That gives the FWHM along the major and minor axes, the major axis' angle and the
width's standard error, on the grid of the image it was measured on; many faint spots add up to
one width where none could be measured alone. Spots too faint to place (their median
signal-to-noise below ``min_snr``) are refused, because their free centres settle on their noise
and the shared width then reads narrow. The spots, aligned at their fitted centres and averaged,
are kept for display.

The image's pixels integrate light over their area, which widens a spot by a box of one pixel
(variance 1/12 px^2 per axis); the fit's covariance is reported as recorded (optics plus box)
and :meth:`SpotPSF.kernel` removes the box and returns the optical PSF as a Gaussian on a grid
``scale`` times finer (the output grid of a super-resolution), which is what the engine uses as
a known kernel (``psf="spots"``) and what DAN's blind estimate is compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import InputError
from ..model.kernels import FWHM_PER_SIGMA, GaussianFit, _principal, fit_gaussian_2d, gaussian_kernel

__all__ = ["SpotPSF", "measure_psf"]

SUB = 5  # points per pixel side at which the joint fit's model is averaged (pixel integration)
MIN_SPOT_SNR = 8.0  # median signal-to-noise of the spots below which no width is reported
FEW_SPOTS = 10  # with fewer spots than this, twice MIN_SPOT_SNR is needed
MODEL_ERROR = 0.03  # of a spot's amplitude: how far a spot may differ from a Gaussian (the joint fit)
EXTENDED = 0.2  # of a spot's peak: brighter than this at its window's edge, it is no point source


@dataclass
class SpotPSF:
    """A PSF averaged from isolated spots.

    Attributes
    ----------
    average : (w, w) float32, the aligned mean of the kept spots (sums to 1), input grid
    fit : GaussianFit of ``average`` (input-grid pixels); its widths and angle are those of the
        spots' joint fit (optics plus the pixel's box)
    n_spots : spots averaged
    n_candidates : local maxima above the threshold
    rejected : why the others were left out (crowded, border, saturated, extended, poor fit)
    positions : (n, 2) sub-pixel (y, x) of the kept spots, input pixels
    fwhm_rel_error : relative standard error of the optical FWHM, from the joint fit's
        curvature (how much the spots' noise leaves the width uncertain)
    spot_snr : the kept spots' median signal-to-noise (flux through a matched filter)
    """

    average: np.ndarray
    fit: GaussianFit
    n_spots: int
    n_candidates: int
    rejected: dict = field(default_factory=dict)
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    fwhm_rel_error: float = 0.0
    spot_snr: float = math.inf

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
             f"{self.fwhm_major:.2f} x {self.fwhm_minor:.2f} px (+-{100 * self.fwhm_rel_error:.1f}%), "
             f"angle {self.angle:.0f} deg")
        if pixel_size:
            s += (f" = {self.fwhm_major * pixel_size:.4g} x {self.fwhm_minor * pixel_size:.4g} "
                  f"{unit or ''}").rstrip()
        return s

    def to_dict(self) -> dict:
        return {"n_spots": self.n_spots, "n_candidates": self.n_candidates,
                "rejected": dict(self.rejected), "fwhm_major_px": self.fwhm_major,
                "fwhm_minor_px": self.fwhm_minor, "fwhm_px": self.fwhm, "angle_deg": self.angle,
                "fit_rel_residual": self.fit.rel_residual, "fwhm_rel_error": self.fwhm_rel_error,
                "spot_snr": self.spot_snr}


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
                saturation: float | None = None, matched_threshold: float = 5.0,
                max_rel_error: float = 0.2, min_snr: float = MIN_SPOT_SNR) -> SpotPSF:
    """Measure the PSF of a 2D image from its isolated spots.

    Parameters
    ----------
    image : 2D array (one plane; for a stack pass a plane or a max projection)
    window : odd side (px) of the crop around each spot (default: from a first width estimate,
        about 3 FWHM, at least 9)
    isolation : a spot with another candidate closer than this (px) is crowded (default: 0.8
        of the window's side, about 2.5 FWHM)
    threshold : candidates must rise this many noise sigmas above the local background...
    matched_threshold : ...or, smoothed by a Gaussian of about their size (which gathers a
        faint spot's photons), this many sigmas of the smoothed noise
    max_rel_error : refuse (InputError) when the spots leave the FWHM more uncertain than this
        (relative standard error of the joint fit)
    min_snr : refuse when the spots' median signal-to-noise (flux through a matched filter) is
        below this (twice this with fewer than 10 spots): fainter spots read narrow
    max_spots : at most this many (the brightest isolated ones) are averaged
    saturation : spots with a pixel at or above this are left out (default: the dtype's maximum
        for integer images)

    Raises
    ------
    InputError : not 2D, fewer than 3 usable spots, spots too faint to place (``min_snr``) or
        a width more uncertain than ``max_rel_error``
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
        # gives one candidate, not several that would reject each other as crowded. A spot is a
        # candidate when its brightest pixel rises `threshold` noise sigmas, or when the image
        # smoothed by a Gaussian of about the spot's size (a matched filter: it gathers a faint
        # spot's photons) rises `matched_threshold` sigmas of the smoothed noise
        s = max(1.0, width / 4)
        smooth = ndi.gaussian_filter(sig, s)
        s_match = max(1.0, width / 2.3548)
        matched = smooth if s_match == s else ndi.gaussian_filter(sig, s_match)
        size = max(5, int(round(width)) | 1)
        strong = sig > threshold * noise
        faint = matched > matched_threshold * noise / (2 * math.sqrt(math.pi) * s_match)
        pk = (smooth == ndi.maximum_filter(smooth, size=size)) & (strong | faint)
        yy, xx = np.nonzero(pk)
        o = np.lexsort((-matched[yy, xx], ~strong[yy, xx]))  # bright ones first, then faint
        return yy[o], xx[o], strong[yy, xx][o], matched[yy, xx][o]

    ys, xs, _, _ = detect(2.0)
    fine = np.stack([ys, xs], 1).astype(np.float64)  # every peak, for the crowding test
    fine_level = sig[ys, xs]
    if len(ys) < 3:
        raise InputError(f"found {len(ys)} spot(s) above {threshold:g} noise sigmas (or "
                         f"{matched_threshold:g} once smoothed to the spot size); measuring a PSF "
                         "needs at least 3 isolated spots (beads or puncta)")
    # a first width from the brightest few candidates
    widths = []
    for y, x in zip(ys[:20], xs[:20], strict=False):
        c = sig[max(y - 10, 0):y + 11, max(x - 10, 0):x + 11]
        f = fit_gaussian_2d(c, offset=True)
        # not from a piece of a line (a filament through the spot fits as an elongated blob)
        if f is not None and f.sigma_major < 8 and f.sigma_major < 1.5 * f.sigma_minor:
            widths.append(f.fwhm)
    w0 = float(np.median(widths)) if widths else 3.0
    args = (a, sig, noise, fine, fine_level, saturation, max_spots)
    got = _collect(detect, w0, window, isolation, *args)
    # the joint fit's width is the better first guess: faint spots fit one by one read narrow,
    # and a window or isolation distance from a wrong guess crops or crowds the spots
    w1 = FWHM_PER_SIGMA * math.sqrt(got[0][0] * got[0][1])
    if window is None and abs(w1 / w0 - 1) > 0.25:
        got = _collect(detect, w1, window, isolation, *args)
    (smaj, smin, angle), avg, positions, n_cand, rejected, rel_err, snr = got
    # a few spots must be brighter: among few faint ones, those kept are the ones noise made
    # peaky (benchmarks/spots_noise.py: 3 spots at x4, 38% off)
    need = min_snr * (1 if len(positions) >= FEW_SPOTS else 2)
    if not snr >= need:
        raise InputError(f"the {len(positions)} isolated spots found (of {n_cand}) are too faint "
                         f"(median signal-to-noise {snr:.1f}, at least {need:g} needed"
                         f"{'' if len(positions) >= FEW_SPOTS else f' with fewer than {FEW_SPOTS} spots'}"
                         "): a width measured from them would read wrong")
    if not rel_err <= max_rel_error:
        raise InputError(f"the {len(positions)} isolated spots found (of {n_cand}) are too faint "
                         f"or too few: their PSF's width would be uncertain by "
                         f"{'more than 100' if not rel_err < 1 else f'{100 * rel_err:.0f}'}% "
                         f"(at most {100 * max_rel_error:.0f}% accepted)")
    fit = fit_gaussian_2d(avg, offset=True)
    if fit is None:
        raise InputError("the averaged spot could not be fitted with a Gaussian")
    fit = replace(fit, sigma_major=smaj, sigma_minor=smin, angle=angle)
    avg = np.clip(avg - fit.offset, 0, None)
    avg = (avg / max(avg.sum(), 1e-12)).astype(np.float32)
    return SpotPSF(average=avg, fit=fit, n_spots=len(positions), n_candidates=n_cand,
                   rejected=rejected, positions=np.array(positions), fwhm_rel_error=rel_err,
                   spot_snr=snr)


def _collect(detect, w0, window, isolation, a, sig, noise, fine, fine_level, saturation,
             max_spots):
    """Detect at width ``w0``, keep the isolated usable spots, fit them jointly. Returns
    ((sigma_major, sigma_minor, angle) of the joint fit, the aligned average, positions,
    candidates, rejected counts, the FWHM's relative standard error, the spots' median
    signal-to-noise)."""
    from scipy import ndimage as ndi

    ys, xs, strong, level = detect(w0)
    if window is None:
        window = max(9, int(round(3 * w0)) | 1)
    window = int(window) | 1
    half = window // 2
    iso = float(0.8 * window if isolation is None else isolation)
    pts = np.stack([ys, xs], 1).astype(np.float64)
    rejected = {"crowded": 0, "border": 0, "saturated": 0, "extended": 0, "poor fit": 0}
    ring = np.ones((window, window), bool)
    ring[1:-1, 1:-1] = False
    ring_noise = 3 * noise / (2 * math.sqrt(math.pi))  # 3 sigmas of the noise smoothed by 1 px
    raw_crops, starts, corners = [], [], []
    for i, (y, x) in enumerate(zip(ys, xs, strict=True)):
        if len(starts) >= max_spots:
            break
        d = np.hypot(pts[:, 0] - y, pts[:, 1] - x)
        d[i] = np.inf
        # a faint candidate crowds only a spot it is at least a fifth as bright as (a bright
        # spot's own faint ring or tail is not a neighbour)
        d[~strong & (level < 0.2 * level[i])] = np.inf
        # also any fine-scale peak at least a fifth as bright beyond the spot's own core
        df = np.hypot(fine[:, 0] - y, fine[:, 1] - x)
        near = (df >= 0.75 * w0) & (df < iso) & (fine_level >= 0.2 * sig[y, x])
        if d.min() < iso or near.any():
            rejected["crowded"] += 1
            continue
        if y - half < 0 or x - half < 0 or y + half >= sig.shape[0] or x + half >= sig.shape[1]:
            rejected["border"] += 1
            continue
        raw = a[y - half:y + half + 1, x - half:x + half + 1]
        if saturation is not None and float(raw.max()) >= saturation:
            rejected["saturated"] += 1
            continue
        crop = sig[y - half:y + half + 1, x - half:x + half + 1]
        # a point's image has faded at the window's edge (about 1.5 FWHM out); a filament, a
        # membrane or a blob through the spot still shines there: no peak crowds it, but it is
        # not a spot (on filaments and beads together, a quarter of the "spots" were
        # filament pieces, and the PSF read 38% wide)
        sm = ndi.gaussian_filter(crop, 1.0)
        top = float(sm[half - 1:half + 2, half - 1:half + 2].max())
        if float(sm[ring].max()) > EXTENDED * top + ring_noise:
            rejected["extended"] += 1
            continue
        f = fit_gaussian_2d(crop, offset=True)
        # a lone spot leaves only noise behind its fit; neighbours inside the window leave more
        if f is not None:
            from_noise = noise * window / max(float(np.linalg.norm(crop - f.offset)), 1e-12)
        bad = (f is None or abs(f.cy - half) > 1.5 or abs(f.cx - half) > 1.5
               or f.sigma_major > window / 3)
        if (f is not None and f.rel_residual > 0.3 + 1.5 * from_noise) or (bad and strong[i]):
            rejected["poor fit"] += 1
            continue
        # a faint spot (found by the matched filter only) whose own fit failed is started at
        # its detected peak: the joint fit below, with the width shared, places it
        start = (f.amplitude, f.cy, f.cx, f.offset) if not bad else (
            float(ndi.gaussian_filter(crop, 1.0)[half, half]), float(half), float(half),
            float(np.median(crop)))
        raw_crops.append(crop)
        starts.append(start)
        corners.append((y - half, x - half))
    n_cand = len(ys)
    if len(raw_crops) < 3:
        raise InputError(f"only {len(raw_crops)} of {n_cand} spots are usable "
                         f"({', '.join(f'{v} {k}' for k, v in rejected.items() if v)}); measuring "
                         "a PSF needs at least 3 isolated, unsaturated spots")
    crops_a = np.array(raw_crops)
    starts_a = np.array(starts)
    sigma0 = max(w0 / FWHM_PER_SIGMA, 0.3)
    for attempt in range(3):
        cov, per, rel_err = _joint_fit(crops_a, starts_a, sigma0, noise)
        # spots the joint fit pushed off their window or to no brightness were not spots:
        # dropped, and the rest fitted again from where they are
        ok = (per[:, 0] > 0) & (np.abs(per[:, 1] - half) <= 2) & (np.abs(per[:, 2] - half) <= 2)
        if ok.all() or attempt == 2:
            break
        rejected["poor fit"] += int((~ok).sum())
        if ok.sum() < 3:
            raise InputError(f"only {int(ok.sum())} of {n_cand} spots are usable "
                             f"({', '.join(f'{v} {k}' for k, v in rejected.items() if v)}); "
                             "measuring a PSF needs at least 3 isolated, unsaturated spots")
        crops_a, starts_a = crops_a[ok], per[ok]
        corners = [c for c, k in zip(corners, ok, strict=True) if k]
        box = 1.0 / 12.0  # the next start is the optics' width: the recorded one less the box
        sigma0 = math.sqrt(math.sqrt(max((cov[0] - box) * (cov[1] - box) - cov[2] ** 2, 1e-8)))
    aligned, positions = [], []
    for crop, (_, cy, cx, off), (y0, x0) in zip(crops_a, per, corners, strict=True):
        # centre it: shift by the sub-pixel offset, remove the fitted background, unit sum
        c = ndi.shift(crop - off, (half - cy, half - cx), order=3, mode="nearest")
        aligned.append(c / max(float(c.sum()), 1e-12) if c.sum() > 0 else np.zeros_like(c))
        positions.append((y0 + cy, x0 + cx))
    # each spot's flux signal-to-noise through a matched filter (amplitude * sigma * sqrt(pi) /
    # noise): below about 8 a spot's free centre settles on its noise and the shared width
    # reads narrow (5-25% on faint beads, docs/models.md), more than its standard error says
    smaj, smin, angle = _principal(*cov)
    snr = float(np.median(per[:, 0])) * math.sqrt(smaj * smin * math.pi) / max(noise, 1e-12)
    return (smaj, smin, angle), np.mean(aligned, axis=0), positions, n_cand, rejected, rel_err, snr


def _joint_fit(crops: np.ndarray, starts: np.ndarray, sigma0: float, noise: float,
               fix_centres: bool = False):
    """Fit every crop with a 2D Gaussian of one shared covariance and its own amplitude,
    centre and background (least squares; the Jacobian is sparse: each spot's parameters
    touch only its crop). This is how faint spots add up: each says little about the width,
    together they say much (benchmarks/information_bound.py computes how much at best). With
    ``fix_centres`` the spots stay at the centres in ``starts`` (benchmarks/spots_noise.py
    --bias: the fit with the true centres given).

    Returns ((cov_xx, cov_yy, cov_xy), (n, 4) amplitude, cy, cx, background, the optical
    FWHM's relative standard error)."""
    from scipy.optimize import least_squares
    from scipy.sparse import lil_matrix

    n, w, _ = crops.shape
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float64)
    data = crops.reshape(n, -1)
    # each pixel's error: the noise, plus a model error in proportion to the spot's brightness
    # (a PSF is not exactly a Gaussian, a neighbour's tail reaches in), so that bright spots
    # count about equally, as in an average of normalised spots, and faint ones by their
    # signal-to-noise, as the likelihood says
    amp = np.clip(starts[:, 0], 0, None)
    scale = np.sqrt(noise**2 + (MODEL_ERROR * amp) ** 2)[:, None] + 1e-12

    # the camera pixel integrates the light: the model is the optical Gaussian averaged over
    # SUB x SUB points of each pixel, so an undersampled spot (x4 sampling) is fitted as
    # recorded and the covariance found is the optics' own
    sub = (np.arange(SUB) + 0.5) / SUB - 0.5
    oy, ox = (a.ravel() for a in np.meshgrid(sub, sub, indexing="ij"))

    def residuals(p):
        l11, l21, l22 = math.exp(p[0]), p[1], math.exp(p[2])
        q = p[3:].reshape(n, 4)
        c = starts if fix_centres else q
        dx = xx[None, :, :, None] + ox - c[:, 2, None, None, None]
        dy = yy[None, :, :, None] + oy - c[:, 1, None, None, None]
        u = dx / l11
        v = (dy - l21 * u) / l22
        g = np.exp(-0.5 * (u * u + v * v)).mean(-1)
        model = q[:, 0, None, None] * g + q[:, 3, None, None]
        return ((model.reshape(n, -1) - data) / scale).ravel()

    sparsity = lil_matrix((n * w * w, 3 + 4 * n), dtype=np.int8)
    sparsity[:, :3] = 1
    for k in range(n):
        sparsity[k * w * w:(k + 1) * w * w, 3 + 4 * k:7 + 4 * k] = 1
    p0 = np.concatenate([[math.log(sigma0), 0.0, math.log(sigma0)], starts.ravel()])
    # a robust loss (quadratic within two errors, linear beyond) so a neighbour's edge or a
    # hot pixel in a crop does not pull the shared width
    try:
        res = least_squares(residuals, p0, jac_sparsity=sparsity.tocsr(), method="trf",
                            x_scale="jac", loss="soft_l1", f_scale=2.0, max_nfev=100)
    except (ValueError, OverflowError, np.linalg.LinAlgError) as e:  # diverged
        raise InputError(f"the {n} isolated spots could not be fitted together ({e})") from None
    if not np.all(np.isfinite(res.x)) or max(abs(res.x[0]), abs(res.x[2])) > 20:
        raise InputError(f"the {n} isolated spots could not be fitted together")
    p = res.x
    l11, l21, l22 = math.exp(p[0]), p[1], math.exp(p[2])
    # as recorded: the optics widened by one pixel's box (variance 1/12 per axis), the
    # convention of SpotPSF.fit (optical_sigmas() takes the box off again)
    box = 1.0 / 12.0
    cov = (l11 * l11 + box, l21 * l21 + l22 * l22 + box, l11 * l21)
    # the optical FWHM's relative standard error from the fit's curvature (Gauss-Newton):
    # the shared parameters' covariance, the spots' own parameters profiled out (Schur
    # complement; the residuals are in units of their errors); FWHM ~ (l11 l22)^(1/2)
    jac = res.jac
    info = (jac.T @ jac).toarray() if hasattr(jac, "toarray") else np.asarray(jac.T @ jac)
    try:
        shared = info[:3, :3] - info[:3, 3:] @ np.linalg.solve(info[3:, 3:], info[3:, :3])
        v = np.linalg.inv(shared)
        rel = 0.5 * math.sqrt(max(v[0, 0] + v[2, 2] + 2 * v[0, 2], 0.0))
    except np.linalg.LinAlgError:
        rel = math.inf
    return cov, p[3:].reshape(n, 4), rel
