"""How a camera samples the image the optics form: pixel integration, shot and read noise, offset.

A microscope's camera pixel integrates the light over its area, so an image at ``factor`` times
coarser sampling is the block *mean* (the same brightness, ``factor**2`` times the photons) of the
finer one; photographs are instead modelled with MATLAB's bicubic ``imresize``
(:mod:`napari_dan.imaging.degradations`). Noise is Poisson (photons) plus Gaussian read noise,
on top of a background and a camera offset, stored as 16-bit counts.

Arrays are numpy (..., H, W) or torch (B, C, H, W).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["bin_pixels", "bin_pixels_torch", "Camera", "expose", "expose_torch", "noise_sigma",
           "signal_to_noise", "SNR_CAP"]


def bin_pixels(x: np.ndarray, factor: int, dtype=np.float64) -> np.ndarray:
    """Block mean over ``factor`` x ``factor`` pixels of the last two axes (cropped to a
    multiple of ``factor``): what a camera with ``factor`` times larger pixels records.
    Computed in ``dtype`` (float64 by default)."""
    if factor < 1:
        raise ValueError(f"binning factor must be >= 1, got {factor}")
    x = np.asarray(x, dtype=dtype)
    h, w = (x.shape[-2] // factor) * factor, (x.shape[-1] // factor) * factor
    if h == 0 or w == 0:
        raise ValueError(f"an image of {x.shape[-2:]} pixels is smaller than one {factor}x{factor} bin")
    x = x[..., :h, :w]
    return x.reshape(*x.shape[:-2], h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


def bin_pixels_torch(x: torch.Tensor, factor: int) -> torch.Tensor:
    """:func:`bin_pixels` for (B, C, H, W) tensors."""
    return F.avg_pool2d(x, factor, factor)


class Camera:
    """A camera: ``photons`` expected photo-electrons at unit intensity, ``read_noise`` electrons
    rms, ``offset`` counts added by the electronics, ``gain`` counts per electron, ``bits``."""

    def __init__(self, photons: float = 1000.0, read_noise: float = 1.5, offset: float = 100.0,
                 gain: float = 1.0, bits: int = 16):
        if photons <= 0 or read_noise < 0 or gain <= 0 or not 1 <= bits <= 32:
            raise ValueError("photons and gain must be positive, read noise >= 0, bits 1..32")
        self.photons, self.read_noise, self.offset = float(photons), float(read_noise), float(offset)
        self.gain, self.bits = float(gain), int(bits)

    def expected(self, intensity: np.ndarray) -> np.ndarray:
        """Noise-free counts for an intensity image (1.0 = ``photons`` electrons)."""
        return self.offset + self.gain * self.photons * np.clip(intensity, 0, None)


def expose(intensity: np.ndarray, camera: Camera, rng: np.random.Generator | None = None,
           noise: bool = True) -> np.ndarray:
    """Counts a camera records for an intensity image (already blurred and binned): Poisson
    shot noise, Gaussian read noise, offset, rounded and clipped to the camera's range (uint16
    for 16 bits or fewer, else float32)."""
    rng = np.random.default_rng() if rng is None else rng
    lam = camera.photons * np.clip(np.asarray(intensity, np.float64), 0, None)
    e = rng.poisson(lam).astype(np.float64) if noise else lam
    if noise and camera.read_noise > 0:
        e = e + rng.normal(0, camera.read_noise, e.shape)
    counts = np.round(camera.offset + camera.gain * e)
    top = 2**camera.bits - 1
    counts = np.clip(counts, 0, top)
    return counts.astype(np.uint16) if camera.bits <= 16 else counts.astype(np.float32)


def expose_torch(intensity: torch.Tensor, photons: torch.Tensor, read_noise: torch.Tensor,
                 offset: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched :func:`expose` without rounding: per-sample (B,) ``photons``, ``read_noise``
    (electrons) and ``offset`` (counts, gain 1). Returns float counts (B, C, H, W)."""
    shape = (-1, 1, 1, 1)
    p = photons.reshape(shape).to(intensity.dtype)
    e = torch.poisson(intensity.clamp_min(0) * p, generator=generator)
    e = e + read_noise.reshape(shape).to(intensity.dtype) * torch.randn(
        intensity.shape, generator=generator, dtype=intensity.dtype, device=intensity.device)
    return e + offset.reshape(shape).to(intensity.dtype)


#: :func:`signal_to_noise` of an image with no measurable noise (e.g. a rendered, noise-free field)
SNR_CAP = 10000.0

# Immerkaer's noise mask (1996): the difference of two Laplacians, blind to flat regions and
# linear ramps; on white noise of standard deviation s its response has standard deviation 6 s
_NOISE_MASK = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def noise_sigma(x: np.ndarray) -> np.ndarray:
    """Standard deviation of the noise of each (H, W) image in ``x`` (..., H, W), from the
    image alone: the median absolute response to Immerkaer's mask (a robust version of his
    estimator), so edges, spots and texture (a minority of pixels in a fluorescence field) do
    not count. For Poisson noise this is the noise of the typical pixel, i.e. of the background
    in a sparse field. Where more than half the responses are exactly zero (integer data whose
    noise is below one count, or a flat, clipped or rendered field) the median says nothing and
    Immerkaer's own mean-based estimate is used: it counts structure as noise, so it errs
    toward a lower signal-to-noise ratio. Returns an array of the leading shape (a 0-d array
    for one image)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[-2] < 3 or x.shape[-1] < 3:
        raise ValueError(f"noise_sigma needs images of at least 3 x 3 pixels, got {x.shape}")
    m = _NOISE_MASK
    r = sum(m[i, j] * x[..., i:x.shape[-2] - 2 + i, j:x.shape[-1] - 2 + j]
            for i in range(3) for j in range(3))
    a = np.abs(r.reshape(*x.shape[:-2], -1))
    robust = 1.4826 * np.median(a, axis=-1) / 6.0
    mean = np.sqrt(np.pi / 2) * np.mean(a, axis=-1) / 6.0
    return np.where(robust > 0, robust, mean)


def signal_to_noise(x: np.ndarray) -> float:
    """How far the image's signal rises above its noise: (99.9th - 0.1th percentile) /
    :func:`noise_sigma`, the median over the (H, W) images of ``x`` (..., H, W), capped at
    :data:`SNR_CAP` (no measurable noise at all); 0 for a flat image. Affine-invariant (an offset or a
    gain does not change it).

    Used to say when a blind PSF estimate is unreliable: on fields below about 20 noise biases
    the microscopy models' estimates (toward the middle of their trained range)
    (docs/models.md, benchmarks/estimate_reliability.py)."""
    x = np.asarray(x, dtype=np.float64)
    imgs = x.reshape(-1, *x.shape[-2:])
    lo, hi = np.percentile(imgs.reshape(len(imgs), -1), [0.1, 99.9], axis=-1)
    sig = noise_sigma(imgs)
    span = hi - lo
    snr = np.where(sig > span / SNR_CAP, span / np.maximum(sig, 1e-300), SNR_CAP)
    snr = np.where(span > 0, snr, 0.0)  # a flat image has no signal
    return float(min(np.median(snr), SNR_CAP))
