"""Blur kernels (PSFs): Gaussian kernels, the PCA basis, projection and statistics.

One place for every kernel computation: the training degradations, the engine's user-supplied
PSFs, the widget's text and the CLI's summaries all use these functions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "gaussian_kernel",
    "random_gaussian_kernels",
    "pca_basis",
    "default_kernel_mean",
    "decode_code",
    "project_kernel",
    "fit_kernel_size",
    "regrid_kernel",
    "kernel_stats",
    "KernelStats",
    "fit_gaussian_2d",
    "GaussianFit",
    "FWHM_PER_SIGMA",
]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548...


def _gaussians(size: int, sx: np.ndarray, sy: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """(n, size, size) normalised Gaussians, vectorised over the parameters."""
    c, s = np.cos(theta), np.sin(theta)
    # inverse covariance of R diag(sx^2, sy^2) R^T
    a = c * c / sx**2 + s * s / sy**2
    b = c * s * (1 / sx**2 - 1 / sy**2)
    d = s * s / sx**2 + c * c / sy**2
    r = np.arange(size, dtype=np.float64) - size // 2
    xx, yy = np.meshgrid(r, r)
    q = (a[:, None, None] * xx * xx + 2 * b[:, None, None] * xx * yy
         + d[:, None, None] * yy * yy)
    k = np.exp(-0.5 * q)
    return k / k.sum(axis=(1, 2), keepdims=True)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None,
                    theta: float = 0.0) -> np.ndarray:
    """A normalised Gaussian kernel on a ``size`` x ``size`` grid centred on the middle pixel.

    Parameters
    ----------
    size : int
        Odd side length.
    sigma_x, sigma_y : float
        Standard deviations (pixels) along the kernel's own axes; ``sigma_y`` defaults to ``sigma_x``.
    theta : float
        Rotation of the x axis, radians, counter-clockwise in (x, y) image coordinates.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive, got {size}")
    sigma_y = sigma_x if sigma_y is None else sigma_y
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError("sigmas must be positive")
    k = _gaussians(size, np.array([sigma_x], float), np.array([sigma_y], float),
                   np.array([theta], float))
    return k[0].astype(np.float32)


def random_gaussian_kernels(n: int, size: int, *, setting: int = 1,
                            sigma_range: tuple[float, float] | None = None,
                            rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``n`` kernels from the training distribution of dan-facts.md.

    Setting 1: isotropic, sigma ~ U(0.2, 4.0). Setting 2: anisotropic, sigma_x, sigma_y ~ U(0.6, 5),
    angle ~ U(-pi, pi), multiplicative noise U(0, 0.25) on the kernel, renormalised.

    Returns
    -------
    kernels : (n, size, size) float32
    params : (n, 3) float32 columns sigma_x, sigma_y, theta
    """
    rng = np.random.default_rng() if rng is None else rng
    if setting == 1:
        lo, hi = sigma_range or (0.2, 4.0)
        sx = rng.uniform(lo, hi, n)
        sy, th = sx.copy(), np.zeros(n)
    elif setting == 2:
        lo, hi = sigma_range or (0.6, 5.0)
        sx, sy = rng.uniform(lo, hi, n), rng.uniform(lo, hi, n)
        th = rng.uniform(-math.pi, math.pi, n)
    else:
        raise ValueError(f"setting must be 1 or 2, got {setting}")
    ks = _gaussians(size, sx, sy, th)
    if setting == 2:
        ks = ks * (1 + rng.uniform(0, 0.25, ks.shape))
        ks /= ks.sum(axis=(1, 2), keepdims=True)
    return ks.astype(np.float32), np.stack([sx, sy, th], 1).astype(np.float32)


def pca_basis(kernels: np.ndarray, code_len: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA projection matrix (k*k, L) and mean kernel (k, k) from sampled kernels (n, k, k).

    Mean-centred SVD; the first ``code_len`` principal directions become the columns. Codes are
    later computed without subtracting the mean, as in the released models; the mean is kept to
    reconstruct kernels from codes and to measure projection errors.
    """
    x = kernels.reshape(kernels.shape[0], -1).astype(np.float64)
    mean = x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    size = kernels.shape[-1]
    return vt[:code_len].T.astype(np.float32).copy(), mean.reshape(size, size).astype(np.float32)


def default_kernel_mean(size: int, setting: int | None = None, n: int = 4000) -> np.ndarray:
    """Mean kernel of the released training distribution for a kernel size (21: setting 1,
    11 or 31: setting 2), sampled with a fixed seed. Used for checkpoints that carry no mean."""
    if setting is None:
        setting = 1 if size == 21 else 2
    ks, _ = random_gaussian_kernels(n, size, setting=setting, rng=np.random.default_rng(1234))
    return ks.mean(0).astype(np.float32)


def decode_code(code: np.ndarray, basis: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The kernel a code stands for: ``mean + P (code - P^T mean)``, clipped at 0, sums to 1."""
    basis = np.asarray(basis, dtype=np.float64)
    m = np.asarray(mean, dtype=np.float64).reshape(-1)
    v = m + basis @ (np.asarray(code, dtype=np.float64) - basis.T @ m)
    v = np.clip(v, 0, None)
    size = int(round(math.sqrt(basis.shape[0])))
    return (v / max(v.sum(), 1e-12)).reshape(size, size).astype(np.float32)


def fit_kernel_size(kernel: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Centre-crop or zero-pad a 2D kernel to ``size`` x ``size``, normalised to sum 1.

    Returns the kernel and the fraction of its mass lost by cropping.
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"a kernel must be a 2D array with odd sides, got shape {k.shape}")
    if not np.all(np.isfinite(k)):
        raise ValueError("the kernel contains NaN or Inf")
    k = np.clip(k, 0, None)
    total = k.sum()
    if total <= 0:
        raise ValueError("the kernel has no positive values")
    k = k / total
    out = np.zeros((size, size))
    h, w = k.shape
    # overlap of the two centred windows
    ch, cw = min(h, size), min(w, size)
    out[(size - ch) // 2:(size - ch) // 2 + ch, (size - cw) // 2:(size - cw) // 2 + cw] = \
        k[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
    kept = out.sum()
    return (out / kept).astype(np.float32), float(1 - kept)


def regrid_kernel(kernel: np.ndarray, ratio: float, supersample: int = 8) -> np.ndarray:
    """A kernel moved onto a grid of other pixels: ``ratio`` = old pixel size / new pixel size
    (0.5: the new pixels are twice as large, so a width of F old pixels becomes 0.5 F).

    Each new pixel is the mean of the kernel, interpolated bilinearly (zero outside), over that
    pixel's footprint (``supersample`` x ``supersample`` points): the kernel integrated over the
    new pixels, as a camera would. The centres of the two middle pixels coincide. The result
    has odd sides of about ``round(n * ratio)`` (at least 3) and sums to 1.
    """
    from scipy.ndimage import map_coordinates

    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"a kernel must be a 2D array with odd sides, got shape {k.shape}")
    if not (np.isfinite(ratio) and ratio > 0):
        raise ValueError(f"the pixel size ratio must be positive, got {ratio}")
    k = np.clip(np.nan_to_num(k), 0, None)
    if k.sum() <= 0:
        raise ValueError("the kernel has no positive values")

    def side(n: int) -> int:
        m = max(3, int(round(n * ratio)))
        return m if m % 2 else m + 1

    (h, w), (nh, nw) = k.shape, (side(k.shape[0]), side(k.shape[1]))
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5  # points inside one new pixel

    def coords(n_new: int, n_old: int) -> np.ndarray:
        new = (np.arange(n_new) - n_new // 2)[:, None] + sub[None, :]  # (n_new, supersample)
        return (new / ratio + n_old // 2).ravel()

    yy, xx = np.meshgrid(coords(nh, h), coords(nw, w), indexing="ij")
    vals = map_coordinates(k, [yy.ravel(), xx.ravel()], order=1, mode="constant", cval=0.0)
    out = vals.reshape(nh, supersample, nw, supersample).mean(axis=(1, 3))
    total = out.sum()
    if total <= 0:
        raise ValueError("the kernel has no mass on the new grid")
    return (out / total).astype(np.float32)


def project_kernel(kernel: np.ndarray, basis: np.ndarray,
                   mean: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Project a kernel onto a PCA basis (k*k, L) with mean kernel (k, k).

    The kernel is first fitted to the basis' size (see :func:`fit_kernel_size`).

    Returns
    -------
    code : (L,) float32, ``kernel.flatten() @ basis`` (no mean subtraction, as the networks use)
    reconstruction : (k, k) float32, the kernel the code stands for (:func:`decode_code`)
    rel_error : float, ``||kernel - reconstruction|| / ||kernel||``, or the fraction of the
        kernel's mass lost by cropping it to the basis' size if that is larger
    """
    basis = np.asarray(basis, dtype=np.float64)
    size = int(round(math.sqrt(basis.shape[0])))
    k, lost = fit_kernel_size(kernel, size)
    v = k.reshape(-1).astype(np.float64)
    code = v @ basis
    rec = decode_code(code, basis, mean).reshape(-1).astype(np.float64)
    err = float(np.linalg.norm(v - rec) / max(np.linalg.norm(v), 1e-12))
    return code.astype(np.float32), rec.reshape(size, size).astype(np.float32), max(err, lost)


@dataclass
class GaussianFit:
    """A 2D Gaussian fitted to an image: ``amplitude * exp(-q/2) + offset`` with centre
    (``cy``, ``cx``), principal sigmas ``sigma_major`` >= ``sigma_minor`` (pixels) and the major
    axis at ``angle`` degrees from the x axis (counter-clockwise, rows pointing down)."""

    amplitude: float
    offset: float
    cy: float
    cx: float
    sigma_major: float
    sigma_minor: float
    angle: float
    rel_residual: float

    @property
    def fwhm_major(self) -> float:
        return FWHM_PER_SIGMA * self.sigma_major

    @property
    def fwhm_minor(self) -> float:
        return FWHM_PER_SIGMA * self.sigma_minor

    @property
    def fwhm(self) -> float:
        return FWHM_PER_SIGMA * math.sqrt(self.sigma_major * self.sigma_minor)


def _principal(cxx: float, cyy: float, cxy: float) -> tuple[float, float, float]:
    evals, evecs = np.linalg.eigh(np.array([[cxx, cxy], [cxy, cyy]]))
    evals = np.clip(evals, 0, None)
    smin, smaj = math.sqrt(evals[0]), math.sqrt(evals[1])
    angle = math.degrees(math.atan2(evecs[1, 1], evecs[0, 1]))
    angle = (angle + 90.0) % 180.0 - 90.0  # an axis, not a direction: fold into [-90, 90)
    if smaj - smin < 1e-6 * max(smaj, 1e-12):
        angle = 0.0
    return smaj, smin, angle


def fit_gaussian_2d(image: np.ndarray, offset: bool = False) -> GaussianFit | None:
    """Least-squares fit of an elliptical 2D Gaussian (plus a constant when ``offset``) to a 2D
    image, started from its second moments. None when the image has no positive mass or the fit
    fails. This is how a FWHM is measured everywhere in the package: an Airy-like PSF's second
    moments are dominated by its rings and tails, its half-maximum width is not."""
    from scipy.optimize import least_squares

    img = np.nan_to_num(np.asarray(image, dtype=np.float64))
    if img.ndim != 2 or img.size < 9:
        return None
    base = float(np.median(img)) if offset else 0.0
    pos = np.clip(img - base, 0, None)
    total = pos.sum()
    if total <= 0:
        return None
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(np.float64)
    cy, cx = float((pos * yy).sum() / total), float((pos * xx).sum() / total)
    cyy = float((pos * (yy - cy) ** 2).sum() / total)
    cxx = float((pos * (xx - cx) ** 2).sum() / total)
    cxy = float((pos * (xx - cx) * (yy - cy)).sum() / total)
    # start from a third of the moment width: tails inflate moments
    l0 = np.linalg.cholesky(np.array([[cxx, cxy], [cxy, cyy]]) / 3 + 0.05 * np.eye(2))
    # parametrise the covariance as L L^T (L lower triangular, log-diagonal) so it stays valid
    p0 = [float(pos.max()), cy, cx, math.log(l0[0, 0]), l0[1, 0], math.log(l0[1, 1])]
    if offset:
        p0.append(base)

    def model(p):
        a, y0, x0, la, lb, lc = p[:6]
        l11, l21, l22 = math.exp(la), lb, math.exp(lc)
        # inverse of [[l11^2, l11 l21], [l11 l21, l21^2 + l22^2]] applied to (dx, dy)
        dx, dy = xx - x0, yy - y0
        u = dx / l11
        v = (dy - l21 * u) / l22
        return a * np.exp(-0.5 * (u * u + v * v)) + (p[6] if offset else 0.0)

    try:
        res = least_squares(lambda p: (model(p) - img).ravel(), p0, method="lm", max_nfev=400)
    except (ValueError, OverflowError, np.linalg.LinAlgError):  # diverged (extreme values)
        return None
    if not res.success or not np.all(np.isfinite(res.x)):
        return None
    a, y0, x0, la, lb, lc = res.x[:6]
    l11, l22 = math.exp(la), math.exp(lc)
    cov_xx, cov_xy, cov_yy = l11 * l11, l11 * lb, lb * lb + l22 * l22
    smaj, smin, angle = _principal(cov_xx, cov_yy, cov_xy)
    if a <= 0 or smin <= 0 or smaj > 10 * max(img.shape):
        return None
    rel = float(np.linalg.norm(res.fun) / max(np.linalg.norm(img - (res.x[6] if offset else 0)), 1e-12))
    return GaussianFit(amplitude=float(a), offset=float(res.x[6]) if offset else 0.0,
                       cy=float(y0), cx=float(x0), sigma_major=smaj, sigma_minor=smin,
                       angle=angle, rel_residual=rel)


@dataclass
class KernelStats:
    """Description of a kernel (PSF).

    Centroid, ``cov_*`` and ``sigma_x``/``sigma_y`` (marginal standard deviations along columns
    and rows) are second moments. The widths people read - ``sigma_major``/``sigma_minor``
    (along the principal axes, pixels of the kernel's grid), ``fwhm_*`` (= 2.3548 sigma) and
    ``angle`` (of the major axis, degrees from the x axis, counter-clockwise with y pointing down
    the rows) - come from a fitted 2D Gaussian (:func:`fit_gaussian_2d`; ``width_method`` says
    "gaussian fit"), so an Airy-like PSF reports its half-maximum width, not the width of its
    rings; they fall back to the moments ("moments") when the fit fails.
    With a ``pixel_size`` the ``*_physical`` fields hold the same widths in that unit.
    """

    centroid_y: float
    centroid_x: float
    cov_yy: float
    cov_xx: float
    cov_xy: float
    sigma_x: float
    sigma_y: float
    sigma_major: float
    sigma_minor: float
    angle: float
    fwhm_major: float
    fwhm_minor: float
    fwhm: float
    anisotropy: float
    width_method: str = "moments"
    pixel_size: float | None = None
    unit: str | None = None
    fwhm_physical: float | None = None
    fwhm_major_physical: float | None = None
    fwhm_minor_physical: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for people: FWHM in pixels (and physical units) and anisotropy."""
        s = f"FWHM {self.fwhm:.2f} px (major {self.fwhm_major:.2f}, minor {self.fwhm_minor:.2f})"
        if self.fwhm_physical is not None:
            s += f" = {self.fwhm_physical:.4g} {self.unit or ''}".rstrip()
        s += f", anisotropy {self.anisotropy:.2f}, angle {self.angle:.0f} deg"
        return s


def kernel_stats(kernel: np.ndarray, pixel_size: float | None = None,
                 unit: str | None = None, fit: bool = True) -> KernelStats:
    """Centroid, covariance, principal sigmas, angle and FWHM of a 2D kernel.

    Negative values are ignored (clipped); the kernel is normalised first. ``pixel_size`` is the
    size of one pixel of the kernel's grid (for an estimated kernel: the HR pixel).
    ``fit=False`` reports second-moment widths only (faster; no Gaussian fit).
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2:
        raise ValueError(f"kernel must be 2D, got shape {k.shape}")
    k = np.clip(np.nan_to_num(k), 0, None)
    total = k.sum()
    if total <= 0:
        raise ValueError("kernel has no positive mass")
    k = k / total
    yy, xx = np.mgrid[0:k.shape[0], 0:k.shape[1]].astype(np.float64)
    cy, cx = float((k * yy).sum()), float((k * xx).sum())
    dy, dx = yy - cy, xx - cx
    cyy, cxx, cxy = float((k * dy * dy).sum()), float((k * dx * dx).sum()), float((k * dx * dy).sum())
    smaj, smin, angle = _principal(cxx, cyy, cxy)
    method = "moments"
    fit = fit_gaussian_2d(k) if fit else None
    if fit is not None:
        smaj, smin, angle, method = fit.sigma_major, fit.sigma_minor, fit.angle, "gaussian fit"
    fwhm_major, fwhm_minor = FWHM_PER_SIGMA * smaj, FWHM_PER_SIGMA * smin
    fwhm = FWHM_PER_SIGMA * math.sqrt(smaj * smin)  # geometric mean: the width of a round PSF
    st = KernelStats(
        centroid_y=cy, centroid_x=cx, cov_yy=cyy, cov_xx=cxx, cov_xy=cxy,
        sigma_x=math.sqrt(cxx), sigma_y=math.sqrt(cyy), sigma_major=smaj, sigma_minor=smin,
        angle=angle, fwhm_major=fwhm_major, fwhm_minor=fwhm_minor, fwhm=fwhm,
        anisotropy=smaj / smin if smin > 0 else float("inf"), width_method=method,
    )
    if pixel_size is not None:
        st.pixel_size, st.unit = float(pixel_size), unit
        st.fwhm_physical = fwhm * pixel_size
        st.fwhm_major_physical = fwhm_major * pixel_size
        st.fwhm_minor_physical = fwhm_minor * pixel_size
    return st
