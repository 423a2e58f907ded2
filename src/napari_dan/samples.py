"""Sample data with a known answer: bundled scikit-image pictures degraded with a known kernel.

Every sample comes with its high-resolution original and the true blur kernel (on the HR grid),
so a super-resolved result and an estimated kernel can be compared with the truth. Only images
that ship inside scikit-image are used: nothing is downloaded.

This module is part of the core: it imports neither napari nor Qt (the napari sample-data
contribution in ``_napari/sample_data.py`` turns these dicts into layers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .model.kernels import gaussian_kernel

__all__ = ["SAMPLE_KINDS", "make_sample", "model_for_sample"]

SAMPLE_KINDS = ("photo", "photo-grey", "microscopy", "microscopy-stack", "fluorescence",
                "fluorescence-stack")

# the bundled model family each sample's degradation matches: the photo and the cell images are
# blurred and bicubic-downsampled (the "rgb" and "gray" models' training), the fluorescence field
# is integrated over camera pixels (the "fluo" models')
_FAMILY = {"photo": "rgb", "photo-grey": "gray", "microscopy": "gray", "microscopy-stack": "gray",
           "fluorescence": "fluo", "fluorescence-stack": "fluo"}


def model_for_sample(kind: str | None, scale: int | None) -> str | None:
    """The bundled model a sample is made for: its scale, and the family whose training
    degradation the sample's matches (``dan-x4-gray`` for the x4 microscopy sample). None for an
    unknown kind or scale. Whether that model is installed is for the caller to check."""
    family = _FAMILY.get(kind)
    if family is None or not isinstance(scale, (int, np.integer)):
        return None
    return f"dan-x{int(scale)}-{family}"

# Blur widths inside the range the released setting-1 models were trained on and in the middle of
# the Gaussian8 test range for each scale (x2: 0.8-1.6, x4: 1.8-3.2), so a good model should
# recover them.
_SIGMA = {2: 1.2, 3: 1.9, 4: 2.5}
_KERNEL_SIZE = 21
# skimage.data.cell(): "the pixel spacing is 0.107 um" (scikit-image documentation)
_CELL_PIXEL_UM = 0.107
# the fluorescence sample: HR pixels of 40 nm (a camera of 80 nm pixels at x2, 160 nm at x4)
# seen through a 1.4-NA oil objective at 520 nm (FWHM about 0.18 µm = 4.5 HR px)
_FLUO_HR_PIXEL_UM, _FLUO_NA, _FLUO_WAVELENGTH = 0.04, 1.4, 0.52
# the fluorescence focus series: each plane's distance from focus (µm); the widefield PSF's FWHM
# goes 4.55 HR px in focus, 4.66 / 5.17 / 7.97 px at 0.1 / 0.2 / 0.3 µm, inside dan-x2-fluo's range
_FOCUS_UM = (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3)


def _bundled(name: str) -> np.ndarray:
    """Read one of scikit-image's bundled images, refusing anything that would be downloaded."""
    import skimage.data
    import skimage.io

    path = Path(skimage.data.__file__).parent / name
    if not path.is_file():
        raise FileNotFoundError(f"scikit-image's bundled image {name!r} is missing from {path.parent}; "
                                "reinstall scikit-image (napari-dan never downloads sample data)")
    return np.asarray(skimage.io.imread(path))


def _crop(img: np.ndarray, scale: int, size: tuple[int, int] | None = None,
          origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Crop to ``size`` at ``origin``, then to a multiple of ``scale`` so LR and HR grids align."""
    if size is not None:
        img = img[origin[0]:origin[0] + size[0], origin[1]:origin[1] + size[1]]
    h, w = (img.shape[0] // scale) * scale, (img.shape[1] // scale) * scale
    return img[:h, :w]


def _degrade(hr: np.ndarray, kernel: np.ndarray, scale: int, noise: dict | None,
             rng: np.random.Generator) -> np.ndarray:
    """uint8 HR -> uint8 LR with the project's degradation model (blur, MATLAB bicubic, 8 bit)."""
    from .imaging.degradations import degrade

    lr = degrade(hr.astype(np.float64) / 255.0, kernel, scale, noise=noise, quantize_bits=8, rng=rng)
    return np.round(np.clip(lr, 0, 1) * 255).astype(np.uint8)


def make_sample(kind: str = "photo", scale: int = 4, *, sigma: float | None = None,
                noise: dict | None = None, seed: int = 0) -> dict:
    """A degraded image with its original and the true kernel.

    Parameters
    ----------
    kind : {"photo", "photo-grey", "microscopy", "microscopy-stack", "fluorescence", \
            "fluorescence-stack"}
        ``"photo"``: scikit-image's astronaut (RGB, 512 x 512 HR). ``"photo-grey"``: its
        cameraman (grey, 512 x 512 HR): what the grey photo models (``dan-x2-gray``,
        ``dan-x4-gray``) are made for. ``"microscopy"``: the
        quantitative-phase image of a cell (``skimage.data.cell``, grayscale, 0.107 um pixels).
        ``"microscopy-stack"``: five crops of that cell image, each blurred a little more than the
        last (like a focus series), for trying per-plane kernel estimation. ``"fluorescence"``: a
        synthetic fluorescence field (filaments and beads, :mod:`napari_dan.imaging.specimens`)
        through a 1.4-NA objective at 520 nm, camera pixel integration and Poisson-Gaussian
        noise (1,000 photons, offset 100), uint16 counts: what the microscopy models
        (``dan-x2-fluo``, ``dan-x4-fluo``) are made for; ``sigma`` and ``noise`` are ignored
        (its PSF is the optics', its noise the camera's). ``"fluorescence-stack"``: a focus
        series of such a field, seven planes 0.3 µm below to 0.3 µm above focus (the PSF's FWHM
        4.55 HR px in focus, 7.97 at the ends), for per-plane kernels: what ``dan-x2-fluo``'s
        "per plane" mode should read widening away from focus.
    scale : int
        Downsampling factor (2, 3 or 4).
    sigma : float, optional
        Standard deviation of the isotropic Gaussian kernel in HR pixels; default is a width the
        released models were trained on (1.2 at x2, 1.9 at x3, 2.5 at x4). For the stack it is the
        sharpest plane's sigma.
    noise : dict, optional
        Poisson-Gaussian noise after downsampling, ``{"photons": P, "read_noise": r}``; default
        none (the released models never saw noise).
    seed : int
        Seed of the noise.

    Returns
    -------
    dict
        ``name`` (str), ``kind``, ``lr`` (uint8, (h, w), (h, w, 3) or (n, h, w)), ``hr`` (uint8,
        ``scale`` times larger on the spatial axes), ``kernel`` (float32 (k, k) on the HR grid, or
        (n, k, k) for the stack: one per plane), ``sigma`` (float, or a list per plane),
        ``scale``, ``rgb`` (bool), ``pixel_size`` (LR pixel size in ``unit``, None for the photo),
        ``hr_pixel_size``, ``unit`` (str or None) and ``description``.
    """
    if kind in ("fluorescence", "fluorescence-stack"):
        if scale not in _SIGMA:
            raise InputError(f"sample scale must be 2, 3 or 4, got {scale!r}")
        if kind == "fluorescence-stack":
            return _fluorescence_stack(int(scale), seed)
        return _fluorescence(int(scale), noise, seed)
    if kind not in SAMPLE_KINDS:
        raise InputError(f"unknown sample kind {kind!r}; choose one of {', '.join(SAMPLE_KINDS)}")
    if scale not in _SIGMA:
        raise InputError(f"sample scale must be 2, 3 or 4, got {scale!r}")
    sigma = float(_SIGMA[scale] if sigma is None else sigma)
    if sigma <= 0:
        raise InputError(f"sigma must be positive, got {sigma}")
    rng = np.random.default_rng(seed)
    out: dict = {"kind": kind, "scale": int(scale), "noise": noise}

    if kind in ("photo", "photo-grey"):  # a colour or a grey photograph, degraded alike
        rgb = kind == "photo"
        name, what = ("astronaut", "skimage astronaut") if rgb else (
            "camera", "skimage camera (a grey photograph)")
        img = _bundled(f"{name}.png")
        hr = _crop(img[..., :3] if rgb else img, scale)
        kernel = gaussian_kernel(_KERNEL_SIZE, sigma)
        out.update(name=name, hr=hr, kernel=kernel, sigma=sigma, rgb=rgb,
                   lr=_degrade(hr, kernel, scale, noise, rng), pixel_size=None, hr_pixel_size=None,
                   unit=None,
                   description=f"{what}, Gaussian blur sigma {sigma:g} HR px, "
                               f"bicubic x{scale} downsampling, 8 bit")
        return out

    cell = _bundled("cell.png")
    if cell.ndim == 3:  # some scikit-image versions store it with an alpha/RGB plane
        cell = cell[..., 0]
    unit = "µm"
    if kind == "microscopy":
        hr = _crop(cell, scale)
        kernel = gaussian_kernel(_KERNEL_SIZE, sigma)
        out.update(name="cell", hr=hr, kernel=kernel, sigma=sigma, rgb=False,
                   lr=_degrade(hr, kernel, scale, noise, rng),
                   pixel_size=_CELL_PIXEL_UM * scale, hr_pixel_size=_CELL_PIXEL_UM, unit=unit,
                   description=f"skimage cell (quantitative phase, {_CELL_PIXEL_UM} µm pixels), "
                               f"Gaussian PSF sigma {sigma:g} HR px, bicubic x{scale} sampling, 8 bit")
        return out

    # microscopy-stack: a focus-series-like stack, the blur growing by 25% per plane
    n = 5
    sigmas = [sigma * (1.0 + 0.25 * i) for i in range(n)]
    size = (min(cell.shape[0], 256 * scale // 2), min(cell.shape[1], 256 * scale // 2))
    hr_plane = _crop(cell, scale, size, origin=((cell.shape[0] - size[0]) // 2,
                                                (cell.shape[1] - size[1]) // 2))
    kernels = np.stack([gaussian_kernel(_KERNEL_SIZE, s) for s in sigmas])
    lr = np.stack([_degrade(hr_plane, k, scale, noise, rng) for k in kernels])
    out.update(name="cell stack", hr=np.stack([hr_plane] * n), kernel=kernels, sigma=sigmas,
               rgb=False, lr=lr, pixel_size=_CELL_PIXEL_UM * scale, hr_pixel_size=_CELL_PIXEL_UM,
               unit=unit,
               description=f"{n} planes of skimage cell, Gaussian PSF sigma "
                           f"{sigmas[0]:g}..{sigmas[-1]:g} HR px, bicubic x{scale} sampling, 8 bit")
    return out


def _fluorescence_field(hr_size: int, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
    """The specimen of both fluorescence samples (filaments and beads on a faint background, as
    on a coverslip; HR pixels of 40 nm) and the camera that records it."""
    from .imaging.camera import Camera
    from .imaging.specimens import beads, filaments

    spec = filaments((hr_size, hr_size), 1 / 4000, rng) + 3.0 * beads((hr_size, hr_size),
                                                                       1 / 1500, rng)
    return spec / spec.max() + 0.02, Camera(photons=1000.0, read_noise=1.5, offset=100.0)


def _fluorescence(scale: int, noise: dict | None, seed: int) -> dict:
    """The "fluorescence" sample (see :func:`make_sample`): 512 x 512 HR pixels of 40 nm."""
    from .imaging.camera import bin_pixels, expose
    from .imaging.degradations import blur
    from .imaging.microscope import target_kernel
    from .imaging.psf import Optics
    from .model.kernels import fit_kernel_size, kernel_stats

    rng = np.random.default_rng(2026 + seed)  # the field, then the exposure, draw from it
    spec, camera = _fluorescence_field(512, rng)
    optics = Optics(_FLUO_NA, _FLUO_WAVELENGTH, pixel_size=_FLUO_HR_PIXEL_UM)
    psf, _ = optics.psf(41, _FLUO_HR_PIXEL_UM)
    lr = expose(bin_pixels(blur(spec, psf), scale), camera, rng)
    hr = np.round(camera.expected(blur(spec, target_kernel()))).astype(np.uint16)
    kernel, _ = fit_kernel_size(psf, _KERNEL_SIZE)
    fwhm = kernel_stats(psf).fwhm
    return {"kind": "fluorescence", "scale": scale, "noise": {"photons": 1000.0,
                                                              "read_noise": 1.5},
            "name": "fluorescence", "hr": hr, "lr": lr, "kernel": kernel.astype(np.float32),
            "sigma": fwhm / 2.3548, "rgb": False, "pixel_size": _FLUO_HR_PIXEL_UM * scale,
            "hr_pixel_size": _FLUO_HR_PIXEL_UM, "unit": "µm",
            "description": f"synthetic fluorescence (filaments, beads), widefield PSF NA "
                           f"{_FLUO_NA:g} at {1000 * _FLUO_WAVELENGTH:.0f} nm (FWHM {fwhm:.2f} "
                           f"HR px of {1000 * _FLUO_HR_PIXEL_UM:.0f} nm), camera pixels of "
                           f"{1000 * _FLUO_HR_PIXEL_UM * scale:.0f} nm, 1,000 photons, offset 100, "
                           "16 bit"}


def _fluorescence_stack(scale: int, seed: int) -> dict:
    """The "fluorescence-stack" sample (see :func:`make_sample`): one thin specimen imaged at
    seven focus positions, 256 x 256 HR pixels of 40 nm per plane."""
    from .imaging.camera import bin_pixels, expose
    from .imaging.degradations import blur
    from .imaging.microscope import target_kernel
    from .imaging.psf import gaussian_psf, have_psfmodels, widefield_psf
    from .model.kernels import FWHM_PER_SIGMA, fit_kernel_size, kernel_stats

    rng = np.random.default_rng(2031 + seed)
    spec, camera = _fluorescence_field(256, rng)
    if have_psfmodels():
        psfs = [widefield_psf(41, _FLUO_HR_PIXEL_UM, _FLUO_NA, _FLUO_WAVELENGTH, defocus=dz)
                for dz in _FOCUS_UM]
        how = "widefield PSF (Gibson-Lanni, psfmodels)"
    else:  # Gaussians of about the same widths (4.55 px in focus)
        psfs = [gaussian_psf(41, 4.55 * np.sqrt(1 + (dz / 0.22) ** 4)) for dz in _FOCUS_UM]
        how = "Gaussian PSF (psfmodels not installed)"
    lr = np.stack([expose(bin_pixels(blur(spec, p), scale), camera, rng) for p in psfs])
    hr_plane = np.round(camera.expected(blur(spec, target_kernel()))).astype(np.uint16)
    kernels = np.stack([fit_kernel_size(p, _KERNEL_SIZE)[0] for p in psfs]).astype(np.float32)
    fwhm = [kernel_stats(p).fwhm for p in psfs]
    n = len(_FOCUS_UM)
    return {"kind": "fluorescence-stack", "scale": scale,
            "noise": {"photons": 1000.0, "read_noise": 1.5}, "name": "focus series",
            "hr": np.stack([hr_plane] * n), "lr": lr, "kernel": kernels,
            "sigma": [f / FWHM_PER_SIGMA for f in fwhm], "rgb": False,
            "pixel_size": _FLUO_HR_PIXEL_UM * scale, "hr_pixel_size": _FLUO_HR_PIXEL_UM,
            "unit": "µm", "defocus_um": list(_FOCUS_UM),
            "description": f"synthetic fluorescence (filaments, beads) at {n} focus positions, "
                           f"{_FOCUS_UM[0]:g} to {_FOCUS_UM[-1]:g} µm, {how} NA {_FLUO_NA:g} at "
                           f"{1000 * _FLUO_WAVELENGTH:.0f} nm (FWHM {min(fwhm):.2f} to "
                           f"{max(fwhm):.2f} HR px of {1000 * _FLUO_HR_PIXEL_UM:.0f} nm), camera "
                           f"pixels of {1000 * _FLUO_HR_PIXEL_UM * scale:.0f} nm, 1,000 photons, "
                           "offset 100, 16 bit"}
