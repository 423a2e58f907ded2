"""Synthetic fluorescence specimens: what is under the objective before the optics blur it.

Each function renders fluorophore density on a pixel grid (float64, objects' peak brightness
about 0.3-1) as sums of small Gaussians at sub-pixel positions, so objects below the pixel size
stay anti-aliased. Sizes are in pixels of that grid (the HR grid in training).

* :func:`beads` - sub-resolution beads and puncta, optionally of varied size
* :func:`filaments` - microtubule- and actin-like curves of varying width, curvature and density
* :func:`rings` - vesicles (filled) and rings (hollow)
* :func:`membranes` - large closed, wobbly contours (cell outlines)
* :func:`nuclei` - filled ellipses with a textured interior and soft edge
* :func:`random_specimen` - one of these (or two mixed) at a random density, with optional
  out-of-focus haze and background: the training and benchmark fields.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["beads", "filaments", "rings", "membranes", "nuclei", "random_specimen", "KINDS"]

#: the largest haze of a ``bright`` field (:func:`random_specimen`), a share of the specimen
#: blurred by 6-15 px
BRIGHT_HAZE = 1.0

KINDS = ("beads", "puncta", "filaments", "actin", "rings", "membranes", "nuclei")


def _splat(img: np.ndarray, ys, xs, weights, sigma) -> None:
    """Add Gaussians (sigma per point or one for all) centred at sub-pixel (ys, xs) into img."""
    ys, xs = np.asarray(ys, np.float64), np.asarray(xs, np.float64)
    if ys.size == 0:
        return
    w = np.broadcast_to(np.asarray(weights, np.float64), ys.shape)
    s = np.broadcast_to(np.asarray(sigma, np.float64), ys.shape)
    r = int(math.ceil(3 * float(s.max())))
    off = np.arange(-r, r + 1)
    iy = np.floor(ys).astype(np.int64)[:, None] + off[None, :]   # (n, m)
    ix = np.floor(xs).astype(np.int64)[:, None] + off[None, :]
    gy = np.exp(-0.5 * ((iy - ys[:, None]) / s[:, None]) ** 2)
    gx = np.exp(-0.5 * ((ix - xs[:, None]) / s[:, None]) ** 2)
    norm = (gy.sum(1) * gx.sum(1))[:, None, None]
    val = w[:, None, None] * gy[:, :, None] * gx[:, None, :] / norm * (2 * math.pi * s[:, None, None] ** 2)
    h, wd = img.shape
    yy = np.broadcast_to(iy[:, :, None], val.shape)
    xx = np.broadcast_to(ix[:, None, :], val.shape)
    ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
    np.add.at(img, (yy[ok], xx[ok]), val[ok])


def _count(density: float, shape, rng) -> int:
    lam = density * shape[0] * shape[1]
    return max(1, int(rng.poisson(lam)))


def beads(shape, density: float, rng: np.random.Generator, size=(0.3, 0.45),
          brightness=(0.4, 1.0)) -> np.ndarray:
    """Point-like objects: ``density`` per pixel, Gaussian sigma in ``size`` px, peak brightness
    uniform in ``brightness``."""
    img = np.zeros(shape)
    n = _count(density, shape, rng)
    ys, xs = rng.uniform(-2, shape[0] + 2, n), rng.uniform(-2, shape[1] + 2, n)
    _splat(img, ys, xs, rng.uniform(*brightness, n), rng.uniform(*size, n))
    return img


def _curve(rng, start, length: float, step: float, curvature: float):
    n = max(2, int(length / step))
    theta = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, curvature * step, n))
    ys = start[0] + np.cumsum(step * np.sin(theta))
    xs = start[1] + np.cumsum(step * np.cos(theta))
    return ys, xs


def filaments(shape, density: float, rng: np.random.Generator, width=(0.3, 0.9),
              length=(30, 250), curvature=(0.0, 0.06), brightness=(0.3, 1.0)) -> np.ndarray:
    """Curved filaments: ``density`` filaments per pixel (at least one), each of a random width
    (Gaussian sigma, px), length and curvature (rad per px, random walk), constant brightness."""
    img = np.zeros(shape)
    for _ in range(_count(density, shape, rng)):
        start = (rng.uniform(0, shape[0]), rng.uniform(0, shape[1]))
        step = 0.35
        ys, xs = _curve(rng, start, rng.uniform(*length), step, rng.uniform(*curvature))
        w = rng.uniform(*width)
        # a line of points every `step` px with sigma w: peak across the line ~ brightness
        peak = rng.uniform(*brightness) * step / (math.sqrt(2 * math.pi) * w)
        _splat(img, ys, xs, peak, w)
    return img


def rings(shape, density: float, rng: np.random.Generator, radius=(1.5, 8.0), filled_p=0.5,
          brightness=(0.3, 1.0)) -> np.ndarray:
    """Vesicles (filled discs) and rings (hollow circles) of radius in ``radius`` px."""
    img = np.zeros(shape)
    for _ in range(_count(density, shape, rng)):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r = rng.uniform(*radius)
        b = rng.uniform(*brightness)
        if rng.random() < filled_p:
            m = max(8, int(math.pi * r * r * 3))
            rr = r * np.sqrt(rng.random(m))
            t = rng.uniform(0, 2 * math.pi, m)
            dens = m / (math.pi * r * r)
            _splat(img, cy + rr * np.sin(t), cx + rr * np.cos(t), b / dens / (2 * math.pi * 0.5**2), 0.5)
        else:
            m = max(12, int(2 * math.pi * r / 0.3))
            t = np.linspace(0, 2 * math.pi, m, endpoint=False)
            w = rng.uniform(0.3, 0.6)
            _splat(img, cy + r * np.sin(t), cx + r * np.cos(t),
                   b * 0.3 / (math.sqrt(2 * math.pi) * w), w)
    return img


def membranes(shape, density: float, rng: np.random.Generator, radius=(15, 60),
              brightness=(0.3, 1.0)) -> np.ndarray:
    """Closed wobbly contours (cell outlines): radius in ``radius`` px with a few Fourier modes."""
    img = np.zeros(shape)
    for _ in range(_count(density / 50, shape, rng)):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r0 = rng.uniform(*radius)
        m = max(24, int(2 * math.pi * r0 / 0.35))
        t = np.linspace(0, 2 * math.pi, m, endpoint=False)
        r = r0 * (1 + sum(rng.uniform(0, 0.12) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
                          for k in range(2, 6)))
        w = rng.uniform(0.4, 1.0)
        step = 2 * math.pi * r0 / m
        _splat(img, cy + r * np.sin(t), cx + r * np.cos(t),
               rng.uniform(*brightness) * step / (math.sqrt(2 * math.pi) * w), w)
    return img


def nuclei(shape, density: float, rng: np.random.Generator, radius=(8, 40),
           brightness=(0.3, 0.9), edge=(0.5, 1.5)) -> np.ndarray:
    """Filled ellipses with a soft edge and a textured interior (chromatin-like), brightest
    inside around ``brightness``; the edge is a logistic step of scale ``edge`` px (uniform in
    that range; 0.5-1.5 by default, the benchmark's nuclei)."""
    from scipy.ndimage import gaussian_filter

    img = np.zeros(shape)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    for _ in range(_count(density / 200, shape, rng)):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        a = rng.uniform(*radius)
        b = a * rng.uniform(0.6, 1.0)
        t = rng.uniform(0, math.pi)
        u = (xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)
        v = -(xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        with np.errstate(over="ignore"):  # far outside: exp overflows to inf, mask 0 as meant
            mask = 1 / (1 + np.exp((d - 1) * a / rng.uniform(*edge)))
        tex = gaussian_filter(rng.standard_normal(shape), rng.uniform(0.7, 2.5))
        tex = 1 + rng.uniform(0.3, 0.8) * tex / max(tex.std(), 1e-9)
        img += rng.uniform(*brightness) * mask * np.clip(tex, 0, None)
    return img


def _render(kind: str, shape, density: float, rng, nuclei_edge=None) -> np.ndarray:
    if kind == "beads":
        return beads(shape, density, rng)
    if kind == "puncta":
        return beads(shape, density, rng, size=(0.3, 1.2))
    if kind == "filaments":
        return filaments(shape, density / 40, rng)
    if kind == "actin":
        return filaments(shape, density / 10, rng, width=(0.25, 0.5), length=(10, 60),
                         curvature=(0.0, 0.02), brightness=(0.2, 0.6))
    if kind == "rings":
        return rings(shape, density / 4, rng)
    if kind == "membranes":
        return membranes(shape, density, rng)
    if kind == "nuclei":
        return nuclei(shape, density, rng, **({"edge": tuple(nuclei_edge)} if nuclei_edge else {}))
    raise ValueError(f"unknown specimen {kind!r}; known: {', '.join(KINDS)}")


def random_specimen(shape, rng: np.random.Generator, kinds: tuple[str, ...] = KINDS,
                    density_range=(1 / 3000, 1 / 10), kind: str | None = None,
                    density: float | None = None, haze: bool = True,
                    nuclei_edge: tuple[float, float] | None = None,
                    bright: float = 0.0) -> tuple[np.ndarray, dict]:
    """A training/benchmark field: one specimen kind (or, one time in four, two mixed) at a
    log-uniform density (objects per pixel; filaments, membranes and nuclei scale it down to
    a comparable coverage), scaled so its brightest pixel is 1, plus (when ``haze``) a smooth
    out-of-focus haze and a flat background.

    ``nuclei_edge``: the nuclei's edge-softness range (:func:`nuclei`'s ``edge``; None: its
    default). ``bright``: 0 (the default) draws the haze on half of the fields, up to 0.4 of the
    specimen blurred, and a background up to 0.08 of the peak; above 0, a field as bright as a
    widefield recording often is: haze on every field, up to 1.0, and a background up to
    ``bright``. Returns the image (float64, peak about 1) and a dict of what was drawn."""
    k1 = kind or kinds[rng.integers(len(kinds))]
    dens = density if density is not None else math.exp(rng.uniform(*np.log(density_range)))
    img = _render(k1, shape, dens, rng, nuclei_edge)
    info = {"kind": k1, "density": dens}
    if kind is None and rng.random() < 0.25:
        k2 = kinds[rng.integers(len(kinds))]
        d2 = math.exp(rng.uniform(*np.log(density_range)))
        img = img + rng.uniform(0.3, 1.0) * _render(k2, shape, d2, rng, nuclei_edge)
        info.update(kind2=k2, density2=d2)
    img /= max(img.max(), 1e-9)
    if haze:
        from scipy.ndimage import gaussian_filter

        if bright > 0:
            h, bg = rng.uniform(0, BRIGHT_HAZE), rng.uniform(0, bright)
        else:
            h = rng.uniform(0, 0.4) if rng.random() < 0.5 else 0.0
            bg = rng.uniform(0, 0.08)
        if h > 0:
            img = img + h * gaussian_filter(img, rng.uniform(6, 15))
        img = img + bg
        info.update(haze=h, background=bg)
    return img, info
