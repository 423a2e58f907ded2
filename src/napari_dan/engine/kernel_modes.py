"""Kernel modes: where the blur kernel (and the code the Restorer is conditioned on) comes from.

- ``global``: the full DAN loop runs on a few representative patches (the most textured
  ``ESTIMATION_PATCH`` x ``ESTIMATION_PATCH`` LR squares of up to ``ESTIMATION_PLANES`` evenly
  spaced planes, ``ESTIMATION_PATCHES`` in all; a plane no larger than that budget is used whole),
  their codes and kernels are averaged, and every tile is restored once with that code. The patch
  choice does not depend on the tile size, so a tiled and an untiled run use the same code.
- ``per-plane``: the same, separately for every plane.
- ``per-tile``: the full loop on every tile (handled by the engine's tile loop).
- user kernel: projected onto the model's PCA basis; the Estimator is skipped.

Which code: ``n = iterations`` rounds of the loop (``sr_i = R(lr, code_{i-1})``, ``k_i =
E(sr_i, lr)``, ``code_i`` = ``k_i``'s code) run on each patch, and the image is restored with
``code_n``; the kernel reported is ``k_n`` (for DANv1 the decoded code), so the kernel shown is
the one the image was restored with. The network's own output is ``sr_L = R(lr, code_{L-1})``:
``iterations = L - 1`` reproduces it exactly on a patch covering the image (the default for the
authors' checkpoints; napari-dan's models default to ``L``, see
:func:`.plan.default_iterations`). Several patches: the mean of their codes and the mean of
their kernels (a mean of kernels is still a kernel).
Texture score: mean squared finite difference (gradient energy) of the normalised patch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..model.kernels import project_kernel
from .options import KERNEL_MODES  # defined with the options; re-exported here

__all__ = ["KERNEL_MODES", "ESTIMATION_PATCH", "ESTIMATION_PATCHES", "ESTIMATION_PLANES",
           "PROJECTION_WARNING", "Patch", "KernelEstimate", "candidate_patches", "texture_score",
           "select_patches", "combine", "user_kernel"]

ESTIMATION_PATCH = 128
ESTIMATION_PATCHES = 4
ESTIMATION_PLANES = 4
PROJECTION_WARNING = 0.2


@dataclass(frozen=True)
class Patch:
    """An estimation patch: plane (lead index) and LR rows/columns."""

    lead: tuple[int, ...]
    y0: int
    y1: int
    x0: int
    x1: int
    score: float = 0.0


@dataclass
class KernelEstimate:
    """The code every tile is restored with, and the kernel reported for it."""

    code: np.ndarray  # (L,) float32
    kernel: np.ndarray  # (k, k) float32, HR grid
    source: str
    patches: list[Patch] = field(default_factory=list)
    projection_error: float | None = None
    rounds: list[int] = field(default_factory=list)  # rounds of the loop run, per patch
    #: signal-to-noise ratio of the field it was estimated from (median over the patches,
    #: :func:`napari_dan.imaging.camera.signal_to_noise`); None for a given kernel
    snr: float | None = None


def candidate_patches(h: int, w: int, patch: int | None = None,
                      budget: int | None = None) -> list[tuple[int, int, int, int]]:
    """Non-overlapping ``patch``-sized squares covering the plane (the last ones moved back to
    end at the border), or the whole plane when it is within the estimation budget.

    ``patch`` and ``budget`` default to the module's ``ESTIMATION_PATCH`` and
    ``ESTIMATION_PATCHES`` as they are at call time (so changing those changes the engine)."""
    patch = ESTIMATION_PATCH if patch is None else patch
    budget = ESTIMATION_PATCHES if budget is None else budget
    if h * w <= budget * patch * patch and max(h, w) <= 2 * patch:
        return [(0, h, 0, w)]
    ph, pw = min(patch, h), min(patch, w)
    ys = list(range(0, h - ph + 1, ph))
    xs = list(range(0, w - pw + 1, pw))
    if ys[-1] + ph < h:
        ys.append(h - ph)
    if xs[-1] + pw < w:
        xs.append(w - pw)
    return [(y, y + ph, x, x + pw) for y in ys for x in xs]


def texture_score(x: np.ndarray) -> float:
    """Gradient energy of a (..., H, W) array."""
    gy = np.diff(x, axis=-2)
    gx = np.diff(x, axis=-1)
    return float(np.mean(gy * gy) + np.mean(gx * gx))


def select_patches(planes: dict[tuple[int, ...], np.ndarray], n: int | None = None,
                   patch: int | None = None) -> list[Patch]:
    """The ``n`` most textured candidate patches over the given planes.

    ``planes`` maps a lead index to the plane in network units, shaped (..., H, W); ``n`` and
    ``patch`` default to ``ESTIMATION_PATCHES`` and ``ESTIMATION_PATCH`` at call time.
    """
    n = ESTIMATION_PATCHES if n is None else n
    patch = ESTIMATION_PATCH if patch is None else patch
    cands: list[Patch] = []
    for lead, x in planes.items():
        h, w = x.shape[-2:]
        for y0, y1, x0, x1 in candidate_patches(h, w, patch, n):
            cands.append(Patch(lead, y0, y1, x0, x1, texture_score(x[..., y0:y1, x0:x1])))
    # ties (e.g. flat images) resolve to the earliest patch so the choice is deterministic
    order = sorted(range(len(cands)), key=lambda i: (-cands[i].score, i))
    return [cands[i] for i in order[:n]]


def combine(codes: list[np.ndarray], kernels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean code (L,) and mean kernel (k, k) of any number of (B, L) / (B, k, k) arrays."""
    c = np.concatenate([np.asarray(a, np.float64).reshape(-1, a.shape[-1]) for a in codes])
    k = np.concatenate([np.asarray(a, np.float64).reshape(-1, *a.shape[-2:]) for a in kernels])
    kernel = k.mean(0)
    kernel = kernel / max(kernel.sum(), 1e-12)
    return c.mean(0).astype(np.float32), kernel.astype(np.float32)


def user_kernel(kernel, basis: np.ndarray, mean: np.ndarray, warn: bool = True,
                hint: bool = True) -> KernelEstimate:
    """Project a user PSF (2D, odd sides, on the HR grid) onto the model's PCA basis.

    Warns (``UserWarning``, unless ``warn`` is False) when the relative projection error exceeds
    0.2: the model can only represent kernels like those it was trained on, so the result is
    then less trustworthy; ``hint``: the warning asks to check the kernel's grid and size (for a
    kernel the user made; not for one the plugin measured or computed).
    """
    k = np.asarray(kernel)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise InputError(f"a kernel must be a 2D array with odd sides (centre pixel in the "
                         f"middle), got shape {k.shape}")
    if not (np.issubdtype(k.dtype, np.integer) or np.issubdtype(k.dtype, np.floating)) \
            or k.dtype == bool:
        raise InputError(f"the kernel must hold real numbers, got dtype {k.dtype}")
    if not np.all(np.isfinite(k)):
        raise InputError("the kernel contains NaN or Inf values")
    if not np.any(k > 0):
        raise InputError("the kernel has no positive values")
    code, rec, err = project_kernel(k.astype(np.float64), basis, mean)
    if err > PROJECTION_WARNING and warn:
        warnings.warn(f"the kernel is far from what the model knows: its projection onto the "
                      f"model's kernel space misses {100 * err:.0f}% of it (relative error "
                      f"{err:.2f}); the result may be unreliable."
                      + (" Check that the kernel is on the output (HR) grid and fits the "
                         f"model's kernel size {rec.shape[0]}x{rec.shape[1]}." if hint else ""),
                      UserWarning, stacklevel=4)
    return KernelEstimate(code.astype(np.float32), rec.astype(np.float32), "user kernel",
                          projection_error=float(err))
