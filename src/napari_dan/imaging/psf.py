"""Point spread functions of a fluorescence microscope, in physical units and on a pixel grid.

Every PSF here is a normalised 2D kernel (odd side, sums to 1) sampled on the grid it will blur:
for training and the benchmarks that is the HR (output) grid, so a PSF's FWHM in pixels times the
output pixel size is its FWHM in micrometres.

* :func:`gaussian_psf`: a Gaussian from its FWHM in pixels (optionally elliptical and rotated).
* :func:`widefield_psf` / :func:`confocal_psf`: from numerical aperture, emission (and
  excitation) wavelength, refractive index and pixel size, with optional defocus, computed by the
  Gibson-Lanni scalar model of `psfmodels <https://github.com/tlambert03/PSFmodels>`_ (BSD-3;
  an optional dependency, ``pip install psfmodels``). Astigmatism is modelled by stretching
  the in-focus PSF along one axis.
* :func:`airy_fwhm`: the in-focus widefield FWHM, 0.51 lambda / NA (micrometres).
* :func:`bead_psf`: a PSF as measured from beads of finite size (the PSF convolved with the
  bead's image): flat-topped once the bead is about as wide as the PSF.
* :func:`lumpy_psf`: an irregular PSF (a few overlapping lobes, its maximum off its centroid,
  a faint pixel-scale texture), the shape of a PSF averaged from real beads under aberrations.
* :class:`Optics`: a microscope's objective, wavelength(s) and camera pixel size, and the PSF
  they give on a model's output grid: the theoretical kernel of non-blind runs
  (``super_resolve(..., kernel=Optics(...))``, CLI ``--psf optics``, the widget's "PSF from
  optics").
* :func:`random_psfs`: the training distribution of the microscopy models (Gaussian, widefield
  and confocal shapes, FWHM uniform in a range of HR pixels, mild defocus and astigmatism; on
  request a share of bead-measured and of irregular PSFs).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np

from ..errors import InputError
from ..model.kernels import FWHM_PER_SIGMA, gaussian_kernel, kernel_stats

__all__ = ["Optics", "OPTICS_FIELDS", "gaussian_psf", "widefield_psf", "confocal_psf",
           "airy_fwhm", "random_psfs", "bead_image", "bead_psf", "bead_fwhm_factor", "lumpy_psf",
           "have_psfmodels", "MICROSCOPY_FWHM_RANGE", "ASTIGMATISM"]

#: FWHM range (HR pixels) of the microscopy models' training PSFs: the benchmark asks for 2-10 px,
#: and the averaged PSF of the bead sample is about 8.7 px at its pixel size
MICROSCOPY_FWHM_RANGE = (1.6, 10.5)


#: :func:`random_psfs`' default astigmatism: (share of the PSFs, largest stretch)
ASTIGMATISM = (0.25, 1.3)


def have_psfmodels() -> bool:
    try:
        import psfmodels  # noqa: F401
    except ImportError:
        return False
    return True


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < 3 or size % 2 == 0:
        raise ValueError(f"a PSF's side must be an odd integer >= 3, got {size!r}")


def airy_fwhm(na: float, wavelength: float) -> float:
    """FWHM (same unit as ``wavelength``) of the in-focus widefield PSF: 0.51 lambda / NA."""
    if not 0 < na < 1.7 or wavelength <= 0:
        raise ValueError(f"NA must be in (0, 1.7) and the wavelength positive, got {na}, {wavelength}")
    return 0.51 * wavelength / na


def gaussian_psf(size: int, fwhm: float, fwhm_minor: float | None = None,
                 angle: float = 0.0) -> np.ndarray:
    """A Gaussian PSF with the given FWHM in pixels (``fwhm_minor`` for an elliptical one, its
    major axis at ``angle`` degrees from the x axis)."""
    _check_size(size)
    if fwhm <= 0 or (fwhm_minor is not None and fwhm_minor <= 0):
        raise ValueError("FWHM must be positive")
    sx = fwhm / FWHM_PER_SIGMA
    sy = sx if fwhm_minor is None else fwhm_minor / FWHM_PER_SIGMA
    return gaussian_kernel(size, sx, sy, math.radians(angle))


def _stretch(psf: np.ndarray, factor: float, angle: float) -> np.ndarray:
    """Stretch a PSF by ``factor`` along the axis at ``angle`` degrees and shrink it by
    1/sqrt(``factor``) along the other (major / minor about ``factor``**1.5, the area grown by
    sqrt(``factor``)), renormalised: a first-order astigmatism."""
    if abs(factor - 1) < 1e-6:
        return psf
    from scipy.ndimage import affine_transform

    t = math.radians(angle)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    scale = np.diag([factor, 1 / math.sqrt(factor)])  # (x, y) axes of the PSF
    m = rot @ scale @ rot.T  # maps output offsets to input offsets when inverted
    inv = np.linalg.inv(m)
    # affine_transform works in (row, col) = (y, x)
    inv_rc = inv[::-1, ::-1]
    c = (np.array(psf.shape) - 1) / 2
    out = affine_transform(psf, inv_rc, offset=c - inv_rc @ c, order=1, mode="constant")
    out = np.clip(out, 0, None)
    return out / out.sum()


@lru_cache(maxsize=512)
def _scalar_psf(size: int, dxy: float, na: float, wavelength: float, ni: float,
                defocus: float) -> np.ndarray:
    import psfmodels

    # the Gibson-Lanni scalar model at one z; a point source at the coverslip, observed ``defocus``
    # micrometres from focus. psfmodels samples on dxy with oversampling for accuracy.
    vol = psfmodels.make_psf([defocus], size, dxy=dxy, NA=na, wvl=wavelength, ni=ni, ni0=ni,
                             ns=ni, model="scalar", normalize=False)
    p = np.asarray(vol[0], np.float64)
    p = np.clip(p, 0, None)
    return p / p.sum()


def _require_psfmodels() -> None:
    if not have_psfmodels():
        raise ImportError("widefield and confocal PSFs need the psfmodels package: "
                          "pip install psfmodels")


def widefield_psf(size: int, pixel_size: float, na: float = 1.4, wavelength: float = 0.52,
                  ni: float = 1.515, defocus: float = 0.0, astigmatism: float = 1.0,
                  astig_angle: float = 0.0) -> np.ndarray:
    """Widefield PSF (Gibson-Lanni scalar model) on a ``size`` x ``size`` grid.

    Parameters
    ----------
    size : odd int, pixels
    pixel_size : the grid's pixel size in micrometres (the sample plane)
    na, wavelength, ni : numerical aperture, emission wavelength (um), immersion refractive index
    defocus : distance from focus, um
    astigmatism : >= 1, stretch of the PSF along ``astig_angle`` degrees (1: none)
    """
    _check_size(size)
    _require_psfmodels()
    if pixel_size <= 0:
        raise ValueError(f"pixel size must be positive, got {pixel_size}")
    airy_fwhm(na, wavelength)  # validates na and wavelength
    if na >= ni:
        raise ValueError(f"NA {na} must be below the immersion index {ni}")
    p = _scalar_psf(int(size), round(float(pixel_size), 6), float(na), float(wavelength),
                    float(ni), round(float(defocus), 4))
    return _stretch(p, astigmatism, astig_angle).astype(np.float32)


def confocal_psf(size: int, pixel_size: float, na: float = 1.4, wavelength: float = 0.52,
                 excitation: float = 0.488, ni: float = 1.515, defocus: float = 0.0,
                 astigmatism: float = 1.0, astig_angle: float = 0.0) -> np.ndarray:
    """Confocal PSF with a pinhole closed far below one Airy unit: the product of the excitation
    and emission widefield PSFs (about 1/sqrt(2) of the widefield FWHM)."""
    _check_size(size)
    _require_psfmodels()
    em = widefield_psf(size, pixel_size, na, wavelength, ni, defocus).astype(np.float64)
    ex = widefield_psf(size, pixel_size, na, excitation, ni, defocus).astype(np.float64)
    p = em * ex
    p /= p.sum()
    return _stretch(p, astigmatism, astig_angle).astype(np.float32)


def bead_image(size: int, diameter: float, profile: float = 0.5, supersample: int = 8) -> np.ndarray:
    """The image of a bead of ``diameter`` pixels on a (size, size) grid, summing to 1.

    ``profile`` sets its brightness across: 0.5 is a uniformly stained sphere projected along
    the optical axis (brightness ~ sqrt(1 - (r/R)^2), as a widefield image integrates it), 0 a
    flat disc (an optical section through the sphere); each pixel is the average of
    ``supersample``^2 sub-pixels.
    """
    _check_size(size)
    if diameter < 0:
        raise ValueError(f"a bead's diameter must be >= 0, got {diameter}")
    img = np.zeros((size, size))
    c = size // 2
    if diameter < 1e-6:
        img[c, c] = 1.0
        return img
    r = diameter / 2
    sub = (np.arange(size * supersample) + 0.5) / supersample - 0.5 - c
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    inside = np.clip(1.0 - (yy**2 + xx**2) / r**2, 0.0, None)
    fine = inside ** profile * (inside > 0)
    img = fine.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    if img.sum() <= 0:  # a bead far smaller than a pixel
        img[c, c] = 1.0
    return img / img.sum()


def _half_max_width(img: np.ndarray) -> float:
    """FWHM of a centred, radially symmetric image along its central row (linear interpolation)."""
    row = img[img.shape[0] // 2]
    c = len(row) // 2
    half = row[c] / 2
    i = c
    while i + 1 < len(row) and row[i + 1] > half:
        i += 1
    # row[i] > half >= row[i + 1]
    frac = (row[i] - half) / (row[i] - row[i + 1])
    return 2 * (i - c + frac)


@lru_cache(maxsize=256)
def bead_fwhm_factor(ratio: float, profile: float = 0.5) -> float:
    """FWHM of a Gaussian PSF convolved with a bead of ``ratio`` times its FWHM, divided by the
    PSF's FWHM (1 for a point; about 1.2 for ratio 1, profile 0.5)."""
    from scipy.signal import fftconvolve

    f = 12.0
    size = int(2 * math.ceil(3 * f + ratio * f) + 1)
    g = gaussian_kernel(size, f / FWHM_PER_SIGMA)
    b = bead_image(size, ratio * f, profile, supersample=4)
    return _half_max_width(fftconvolve(g, b, mode="same")) / f


def bead_psf(psf: np.ndarray, diameter: float, profile: float = 0.5) -> np.ndarray:
    """``psf`` as it is measured from beads of ``diameter`` pixels: convolved with the bead's
    image (:func:`bead_image`), same size, normalised. This is what averaging the images of
    isolated beads gives, and flat-topped once the bead is about as wide as the PSF."""
    from scipy.signal import fftconvolve

    psf = np.asarray(psf, np.float64)
    out = fftconvolve(psf, bead_image(psf.shape[0], diameter, profile), mode="same")
    out = np.clip(out, 0.0, None)
    return (out / out.sum()).astype(np.float32)


def _lumps(size: int, scale: float, w, sig, offs) -> np.ndarray:
    c = size // 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - c
    out = np.zeros((size, size))
    for wi, si, (oy, ox) in zip(w, sig, offs, strict=True):
        s2 = (si * scale / FWHM_PER_SIGMA) ** 2
        out += wi / s2 * np.exp(-((yy - oy * scale) ** 2 + (xx - ox * scale) ** 2) / (2 * s2))
    return out


def lumpy_psf(size: int, fwhm: float, rng: np.random.Generator, lobes: tuple[int, int] = (2, 4),
              spread: float = 0.25, texture: tuple[float, float] = (0.0, 0.12),
              max_elongation: float = 1.6) -> np.ndarray:
    """An irregular PSF whose fitted-Gaussian FWHM (:func:`..model.kernels.fit_gaussian_2d`, the
    width the package reports) is ``fwhm`` pixels.

    It is the sum of ``lobes`` (2-4) Gaussian lobes, each 0.5-0.85 of the FWHM wide with a
    random weight, their centres scattered by ``spread`` FWHM around the weighted centroid (so
    the PSF stays centred but its maximum is not at its centre, and its top is uneven), times
    ``1 + t * noise`` where the noise is smoothed over about a pixel and ``t`` is uniform in
    ``texture``: the shape of a PSF averaged from real beads under coma-like aberrations and
    residual misalignment, which a network trained on smooth, symmetric PSFs reads as narrow.
    Lobe layouts whose second moments are more than ``max_elongation`` times longer along one
    axis than the other are redrawn (up to 8 times).
    """
    from scipy.ndimage import gaussian_filter

    from ..model.kernels import fit_gaussian_2d

    _check_size(size)
    if fwhm <= 0:
        raise ValueError("FWHM must be positive")
    for _ in range(8):  # redraw lobes that make a PSF far more elongated than real ones
        k = int(rng.integers(lobes[0], lobes[1] + 1))
        w = rng.uniform(0.3, 1.0, k)
        w /= w.sum()
        sig = rng.uniform(0.5, 0.85, k)
        offs = rng.normal(0.0, spread, (k, 2))
        offs -= (w[:, None] * offs).sum(0)  # the weighted centre of the lobes is the kernel's centre
        cov = sum(wi * (np.outer(o, o) + np.eye(2) * (si / FWHM_PER_SIGMA) ** 2)
                  for wi, si, o in zip(w, sig, offs, strict=True))
        ev = np.linalg.eigvalsh(cov)
        if ev[1] <= max_elongation**2 * ev[0]:
            break
    t = rng.uniform(*texture)
    noise = gaussian_filter(rng.standard_normal((size, size)), 0.8)
    noise /= max(noise.std(), 1e-12)
    scale = fwhm
    for _ in range(3):  # rescale until the fitted width is the requested one (two passes suffice)
        p = _lumps(size, scale, w, sig, offs)
        p = np.clip(p * (1.0 + t * noise), 0.0, None)
        p /= p.sum()
        f = fit_gaussian_2d(p)
        if f is None:
            break
        if abs(f.fwhm / fwhm - 1) < 0.01:
            break
        scale *= fwhm / f.fwhm
    return p.astype(np.float32)


def random_psfs(n: int, size: int, fwhm_range: tuple[float, float] = MICROSCOPY_FWHM_RANGE,
                rng: np.random.Generator | None = None,
                kinds: tuple[str, ...] = ("gaussian", "widefield", "confocal"),
                bead_fraction: float = 0.0,
                bead_ratio: tuple[float, float] = (0.5, 2.0),
                lumpy_fraction: float = 0.0,
                astigmatism: tuple[float, float] = ASTIGMATISM) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``n`` PSFs of the microscopy training distribution.

    The target in-focus FWHM is uniform in ``fwhm_range`` (pixels); the shape is one of ``kinds``
    (widefield/confocal fall back to Gaussian without psfmodels). Widefield and confocal PSFs
    draw NA in [0.8, 1.45] and emission wavelength in [0.45, 0.68] um and set the pixel size so the
    in-focus FWHM lands on the target; a third of them are defocused by up to 0.35 of the depth of
    field. A quarter of all PSFs are astigmatic (stretch 1-1.3 at a random angle; ``astigmatism``
    = (share, largest stretch), default :data:`ASTIGMATISM`; the stretch is the Gaussians' major /
    minor FWHM; widefield and confocal PSFs are stretched by it along one axis and shrunk by its
    square root along the other, so their major / minor is about stretch^1.5).

    A ``bead_fraction`` of them are PSFs as measured from beads (:func:`bead_psf`): the PSF is
    drawn narrower and convolved with a bead whose diameter is ``bead_ratio`` (uniform) times the
    PSF's FWHM, a flat disc or a projected sphere (equally often), so that the result's FWHM
    is still the target (flat-topped for the larger beads). With ``bead_fraction`` 0 the draws
    are exactly those of earlier versions (the generator is not consulted for it).

    A ``lumpy_fraction`` of them are irregular PSFs (:func:`lumpy_psf`: uneven lobes, maximum off
    centre, faint texture) of the target FWHM instead of one of ``kinds``; 0 leaves the draws
    unchanged as well. Bead-measured PSFs are drawn first, so a PSF can be both.

    Returns
    -------
    psfs : (n, size, size) float32
    fwhm : (n,) float32, each PSF's target in-focus FWHM in pixels (half maximum; for an
        astigmatic PSF the geometric mean of its axes)
    """
    _check_size(size)
    if not 0.0 <= bead_fraction <= 1.0:
        raise ValueError(f"bead_fraction must be in [0, 1], got {bead_fraction}")
    if not 0.0 <= lumpy_fraction <= 1.0:
        raise ValueError(f"lumpy_fraction must be in [0, 1], got {lumpy_fraction}")
    astig_share, astig_max = (float(v) for v in astigmatism)
    if not (0.0 <= astig_share <= 1.0 and 1.0 <= astig_max <= 3.0):
        raise ValueError(f"astigmatism must be (share in [0, 1], largest stretch in [1, 3]), "
                         f"got {tuple(astigmatism)}")
    rng = np.random.default_rng() if rng is None else rng
    lo, hi = fwhm_range
    kinds = tuple(k for k in kinds if k == "gaussian" or have_psfmodels()) or ("gaussian",)
    out = np.empty((n, size, size), np.float32)
    widths = np.empty(n, np.float32)
    for i in range(n):
        final = target = rng.uniform(lo, hi)
        bead = None
        if bead_fraction > 0 and rng.random() < bead_fraction:
            ratio = rng.uniform(*bead_ratio)
            profile = float(rng.choice([0.0, 0.5]))
            target = final / bead_fwhm_factor(round(ratio, 2), profile)
            bead = (ratio * target, profile)
        if lumpy_fraction > 0 and rng.random() < lumpy_fraction:
            p = lumpy_psf(size, target, rng)
            out[i] = bead_psf(p, *bead) if bead is not None else p
            widths[i] = final
            continue
        kind = kinds[rng.integers(len(kinds))]
        astig = rng.uniform(1.0, astig_max) if rng.random() < astig_share else 1.0
        angle = rng.uniform(-90, 90)
        if kind == "gaussian":
            s = math.sqrt(astig)  # major / minor = astig, geometric mean = target
            p = gaussian_psf(size, target * s, target / s, angle)
        else:
            na = rng.uniform(0.8, 1.45)
            wl = rng.uniform(0.45, 0.68)
            ni = 1.515 if na > 1.0 else 1.33
            na = min(na, ni - 0.05)
            fw_um = airy_fwhm(na, wl) * (0.72 if kind == "confocal" else 1.0)
            # quantise the pixel size a little so the lru_cache of PSFs is reused across draws
            dxy = round(fw_um / target, 3)
            dof = wl * ni / na**2
            dz = rng.uniform(-0.35, 0.35) * dof if rng.random() < 1 / 3 else 0.0
            if kind == "widefield":
                p = widefield_psf(size, dxy, na, wl, ni, dz, astig, angle)
            else:
                p = confocal_psf(size, dxy, na, wl, wl - rng.uniform(0.02, 0.08), ni, dz,
                                 astig, angle)
        if bead is not None:
            p = bead_psf(p, *bead)
        out[i] = p
        widths[i] = final
    return out, widths


#: the parameters of an :class:`Optics` (its ``describe()`` adds derived values)
OPTICS_FIELDS = ("na", "wavelength", "pixel_size", "ni", "excitation")
#: wavelengths (µm) an :class:`Optics` accepts: far UV to the near infrared
WAVELENGTH_RANGE = (0.2, 2.0)


def _number(name: str, value, lo: float, hi: float, hint: str = "") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not (np.isfinite(v) and lo < v <= hi):
        raise InputError(f"{name} must be in ({lo:g}, {hi:g}], got {value!r}{hint}")
    return v


@dataclass(frozen=True)
class Optics:
    """A microscope's optics: the theoretical in-focus PSF as a known (non-blind) kernel.

    ``super_resolve(image, model, kernel=Optics(na=1.4, wavelength=0.52, pixel_size=0.065))``
    restores with the PSF these optics give on the model's output grid (``pixel_size / scale``)
    instead of estimating one. Use it when the blind estimate cannot be trusted (large smooth
    objects such as nuclei, whose soft edges the Estimator reads as blur; nearly empty or very
    noisy fields) and no isolated spots can be measured (``kernel="spots"``). A real system is
    never sharper than this and often wider (aberrations, a thick sample, a mounting medium
    that does not match ``ni``): it is a lower bound on the true PSF.

    Parameters
    ----------
    na : float
        Numerical aperture of the objective (below ``ni``).
    wavelength : float
        Emission wavelength in micrometres (0.52 for GFP; not nanometres).
    pixel_size : float, optional
        Input (camera) pixel size at the sample, in micrometres. Required to make the kernel;
        the CLI and the widget fill it from the file or layer when it is left out.
    ni : float
        Refractive index of the immersion medium (1.515 oil, 1.33 water, 1.0 air).
    excitation : float, optional
        Excitation wavelength in micrometres for a confocal PSF (pinhole closed: the product of
        the excitation and emission PSFs); None (default): widefield. With a pinhole of about one
        Airy unit a confocal's lateral PSF lies between the two.

    The PSF is the Gibson-Lanni scalar model of ``psfmodels`` when that package is installed,
    else a Gaussian of the same in-focus FWHM (0.51 lambda / NA widefield); :meth:`describe`
    says which.
    """

    na: float
    wavelength: float
    pixel_size: float | None = None
    ni: float = 1.515
    excitation: float | None = None

    def __post_init__(self) -> None:
        lo, hi = WAVELENGTH_RANGE
        nm = " (micrometres: 0.52 for 520 nm)"
        ni = _number("the immersion index ni", self.ni, 0.99, 2.0)
        na = _number("the numerical aperture", self.na, 0.0, 1.7)
        if na >= ni:
            raise InputError(f"the numerical aperture {na:g} must be below the immersion "
                             f"medium's refractive index {ni:g} (1.515 oil, 1.33 water, 1.0 air)")
        object.__setattr__(self, "na", na)
        object.__setattr__(self, "ni", ni)
        object.__setattr__(self, "wavelength",
                           _number("the emission wavelength", self.wavelength, lo, hi, nm))
        if self.excitation is not None:
            object.__setattr__(self, "excitation",
                               _number("the excitation wavelength", self.excitation, lo, hi, nm))
        if self.pixel_size is not None:
            object.__setattr__(self, "pixel_size",
                               _number("the pixel size (µm)", self.pixel_size, 0.0, 1000.0))

    @property
    def modality(self) -> str:
        return "widefield" if self.excitation is None else "confocal"

    def with_pixel_size(self, pixel_size: float) -> Optics:
        """The same optics with this input pixel size (µm), unless one was given already."""
        return self if self.pixel_size is not None else replace(self, pixel_size=pixel_size)

    def psf(self, size: int, grid: float) -> tuple[np.ndarray, str]:
        """The in-focus PSF on a ``size`` x ``size`` grid of ``grid`` µm pixels (sum 1), and the
        model it came from."""
        if have_psfmodels():
            if self.excitation is None:
                k = widefield_psf(size, grid, self.na, self.wavelength, self.ni)
            else:
                k = confocal_psf(size, grid, self.na, self.wavelength, self.excitation, self.ni)
            return k, "Gibson-Lanni scalar model (psfmodels)"
        sig = airy_fwhm(self.na, self.wavelength) / FWHM_PER_SIGMA
        if self.excitation is not None:  # product of two Gaussians
            sx = airy_fwhm(self.na, self.excitation) / FWHM_PER_SIGMA
            sig = sig * sx / math.hypot(sig, sx)
        return (gaussian_psf(size, sig * FWHM_PER_SIGMA / grid),
                "Gaussian of the in-focus FWHM (psfmodels not installed)")

    def kernel(self, scale: int, size: int) -> tuple[np.ndarray, dict]:
        """The PSF on a model's output grid (``pixel_size / scale``), ``size`` x ``size``, and a
        JSON-friendly description of it (:meth:`describe` plus its FWHM, Gaussian fit)."""
        if self.pixel_size is None:
            raise InputError("a PSF from optics needs the input pixel size: give "
                             "Optics(..., pixel_size=<µm>) (CLI: --pixel-size when the file "
                             "states none; widget: the 'Pixel size' field)")
        grid = self.pixel_size / scale
        k, how = self.psf(size, grid)
        st = kernel_stats(self.psf(4 * size + 1, grid)[0])  # uncropped, for its width
        info = {**self.describe(), "psf_model": how, "output_pixel_size_um": grid,
                "fwhm_px": st.fwhm, "fwhm_um": st.fwhm * grid,
                "fwhm_input_px": st.fwhm / scale}
        return k.astype(np.float32), info

    def describe(self) -> dict:
        return {**asdict(self), "modality": self.modality}

    def summary(self) -> str:
        what = (f"widefield, NA {self.na:g}, emission {1000 * self.wavelength:.0f} nm"
                if self.excitation is None else
                f"confocal (pinhole closed), NA {self.na:g}, excitation "
                f"{1000 * self.excitation:.0f} nm, emission {1000 * self.wavelength:.0f} nm")
        return f"{what}, immersion n = {self.ni:g}"

