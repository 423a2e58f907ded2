"""The one tiling routine: overlapping tiles, blended with a smooth weight window.

Tiles are at most ``tile`` x ``tile`` LR pixels: along each axis the fewest tiles that cover it with
the overlap, all of one size and evenly spaced (balanced), the first at 0 and the last ending at the
image border (tiles never hang over the edge, so the network sees exactly the zero padding it would
see on the whole image at true borders). Balanced tiles compute little more than the image itself;
full-size tiles with the last one moved back computed up to twice as much.

Blending: on every side that has a neighbour, a tile's weight is 0 over the outer quarter of the
overlap (where the tile edge's zero padding disturbs the network most), rises as a raised cosine
over the middle half, and is 1 beyond; sides at the image border keep weight 1. The output is
``sum(w * sr) / sum(w)`` accumulated on the HR grid, so the window needs no exact partition of unity.

``tile_overlap="auto"`` comes from a probe of the model itself (:func:`auto_overlap`): the Restorer
is run on a synthetic image with and without its left half zeroed (which is what a tile edge does)
and the distance from the cut where the output change falls below 0.25 grey levels (8-bit) is
measured; the overlap is twice that distance (so the zero-weight quarter plus the ramp cover it),
rounded up to 8, at least 8. Blind runs take the largest over the Dirac (where the loop starts)
and Gaussian kernels up to a fifth of the kernel's side in sigma (a wide kernel makes the
Restorer reach further), cached per network; a user's kernel is probed too. docs/engine.md lists
the measured numbers.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["Tile", "tile_extent", "tile_starts", "make_tiles", "axis_weights", "Accumulator", "auto_overlap",
           "auto_tile_size", "receptive_radius", "MIN_TILE"]

MIN_TILE = 16
_OVERLAP_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Tile:
    """One tile in LR pixels: rows ``y0:y1``, columns ``x0:x1``, and which sides have neighbours."""

    y0: int
    y1: int
    x0: int
    x1: int
    top: bool
    bottom: bool
    left: bool
    right: bool

    @property
    def center(self) -> tuple[float, float]:
        return (self.y0 + self.y1 - 1) / 2, (self.x0 + self.x1 - 1) / 2


def tile_extent(n: int, tile: int, overlap: int) -> int:
    """The side of the tiles along an axis of length ``n``: the fewest tiles of at most ``tile``
    pixels that cover ``n`` with ``overlap``, made equal. (Tiles of the full ``tile`` side with
    the last one moved back would compute up to twice the image: 512 px in tiles of 416 are two
    416-px tiles, 832 px of work, where two balanced tiles of 264 px do 528.)"""
    if n <= tile:
        return n
    step = max(tile - overlap, 1)
    k = -(-(n - overlap) // step)  # tiles needed
    return min(tile, -(-(n + (k - 1) * overlap) // k))


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis of length ``n`` for tiles of :func:`tile_extent`; the first
    starts at 0, the last ends at ``n``, neighbours overlap by at least ``overlap``."""
    t = tile_extent(n, tile, overlap)
    if n <= t:
        return [0]
    k = -(-(n - overlap) // max(t - overlap, 1))
    return [round(i * (n - t) / (k - 1)) for i in range(k)] if k > 1 else [0]


def make_tiles(h: int, w: int, tile: int, overlap: int) -> list[Tile]:
    """Row-major list of balanced tiles (at most ``tile`` x ``tile``) covering ``h`` x ``w``."""
    th, tw = tile_extent(h, tile, overlap), tile_extent(w, tile, overlap)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    out = []
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            out.append(Tile(y0, min(y0 + th, h), x0, min(x0 + tw, w),
                            i > 0, i < len(ys) - 1, j > 0, j < len(xs) - 1))
    return out


def _ramp(n: int, ramp: float) -> np.ndarray:
    """Weights along ``n`` HR pixels measured from an edge that has a neighbour."""
    d = np.arange(n) + 0.5
    t = np.clip((d - ramp / 4) / (ramp / 2), 0.0, 1.0)
    return np.maximum(np.sin(0.5 * math.pi * t) ** 2, 1e-6)


def axis_weights(n: int, before: bool, after: bool, ramp: float) -> np.ndarray:
    """1D window for a tile of ``n`` HR pixels; ``ramp`` = overlap in HR pixels."""
    w = np.ones(n)
    if ramp > 0:
        if before:
            w = np.minimum(w, _ramp(n, ramp))
        if after:
            w = np.minimum(w, _ramp(n, ramp)[::-1])
    return w.astype(np.float32)


class Accumulator:
    """Weighted sum of tile outputs on the HR grid, normalised at the end.

    Memory: two float32 arrays of the HR plane's size (values, weights).
    """

    def __init__(self, channels: int, h: int, w: int, scale: int, overlap: int):
        self.scale, self.ramp = scale, overlap * scale
        self.sum = np.zeros((channels, h * scale, w * scale), np.float32)
        self.weight = np.zeros((h * scale, w * scale), np.float32)

    def add(self, tile: Tile, sr: np.ndarray) -> None:
        """``sr`` (C, s*th, s*tw) for ``tile``."""
        s = self.scale
        wy = axis_weights(sr.shape[-2], tile.top, tile.bottom, self.ramp)
        wx = axis_weights(sr.shape[-1], tile.left, tile.right, self.ramp)
        w = wy[:, None] * wx[None, :]
        ys, xs = slice(tile.y0 * s, tile.y1 * s), slice(tile.x0 * s, tile.x1 * s)
        self.sum[:, ys, xs] += sr * w
        self.weight[ys, xs] += w

    def result(self) -> np.ndarray:
        np.divide(self.sum, self.weight, out=self.sum)
        return self.sum


def receptive_radius(network: nn.Module) -> int:
    """Upper bound of the Restorer's receptive radius in LR pixels (counting 3x3 convs)."""
    r = 0
    for m in network.Restorer.modules():
        if isinstance(m, nn.Conv2d):
            r += (m.kernel_size[0] - 1) // 2
    return max(r, 1)


# kernels the blind probe runs (sigma as a fraction of the kernel's side): a wide kernel makes the
# Restorer deconvolve harder and reach further from a tile edge than the loop's starting Dirac
_PROBE_SIGMAS = (0.10, 0.14, 0.20)


def auto_overlap(network: nn.Module, code: torch.Tensor | None = None,
                 threshold: float = 0.25 / 255) -> int:
    """Overlap (LR pixels) that hides tile edges for this network (see the module docstring).

    Blind runs (``code`` None) probe the Dirac (where the loop starts) and isotropic Gaussians up to
    a fifth of the kernel's side in sigma, and take the largest overlap (cached per network): the
    kernel is not known when the plan is made, and a wide one needs the most. With ``code`` (a
    user's kernel) that code is probed too."""
    if network not in _OVERLAP_CACHE:
        from ..model.kernels import gaussian_kernel

        k = int(network.kernel_size)
        kernels = [np.asarray(gaussian_kernel(k, f * k), np.float32) for f in _PROBE_SIGMAS]
        codes = torch.cat([network.initial_code(1),
                           network.encode(torch.from_numpy(np.stack(kernels)))])
        _OVERLAP_CACHE[network] = max(_probe_overlaps(network, codes, threshold))
    overlap = _OVERLAP_CACHE[network]
    if code is not None:
        overlap = max(overlap, *_probe_overlaps(network, code.reshape(1, -1), threshold))
    return overlap


def _probe_overlaps(network: nn.Module, codes: torch.Tensor, threshold: float) -> list[int]:
    """The overlap each kernel code (rows of ``codes``) needs: twice the distance from a cut at
    which the Restorer's output changes by less than ``threshold``, rounded up to 8 (at least
    8), at most twice the receptive radius."""
    rmax = receptive_radius(network)
    half = int(min(rmax + 4, 96))
    size = 2 * half
    rng = np.random.default_rng(3)
    in_nc = int(network.in_nc)
    yy, xx = np.mgrid[0:32, 0:size] / 8.0
    base = np.stack([0.5 + 0.25 * np.sin(yy * (1.3 + c) + xx * 0.7) * np.cos(xx * (0.9 + c))
                     for c in range(in_nc)])
    base = np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1).astype(np.float32)
    n = codes.shape[0]
    full = torch.from_numpy(base)[None].expand(n, -1, -1, -1).contiguous()
    cut = full.clone()
    cut[..., :half] = 0
    dev = next(network.parameters()).device
    codes = codes.to(device=dev, dtype=next(network.parameters()).dtype)
    with torch.inference_mode():
        a = network.restore(full.to(dev), codes).float().cpu()
        b = network.restore(cut.to(dev), codes).float().cpu()
    s = int(network.scale)
    out = []
    for i in range(n):
        diff = (a[i] - b[i]).abs().amax(dim=(0, 1))[half * s:]  # per HR column right of the cut
        bad = torch.nonzero(diff > threshold).flatten()
        dist = int(math.ceil((int(bad.max()) + 1) / s)) if len(bad) else 1
        dist = min(dist, rmax)  # beyond the receptive field the output is exact anyway
        out.append(max(8, int(math.ceil(2 * dist / 8.0)) * 8))
    return out


def auto_tile_size(network: nn.Module, batch: int, budget: int, overlap: int,
                   full_loop: bool) -> int:
    """Largest tile side (LR px, multiple of 16, 64..2048) whose activations fit ``budget`` bytes.

    The estimate counts float32 feature maps per LR pixel: about 6 of the Restorer's ``nf`` maps,
    the upsampler's ``nf * s^2`` output twice, and the Estimator's maps in the full loop.
    """
    nf = int(network.Restorer.head1.out_channels if hasattr(network.Restorer, "head1")
             else network.Restorer.head.out_channels)
    s = int(network.scale)
    floats = 6 * nf + 2.5 * nf * s * s
    if full_loop:
        floats += 4 * 64
    per_px = 4 * floats * max(batch, 1) * 1.5
    side = int(math.sqrt(budget / per_px)) // 16 * 16
    return int(min(max(side, max(64, 2 * overlap + 16)), 2048))
