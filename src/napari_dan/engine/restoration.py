"""Restoring one plane: tiles through the Restorer with the plan's code (or the full loop per tile),
blended (:mod:`.tiling`), out-of-memory retry with halved tiles, the consistency check
(:mod:`napari_dan.imaging.consistency`), the inverse value map and alpha.

Out of memory during a plane: the tile side is halved and the plane restarted (the total grows
accordingly); below 32 px :class:`~napari_dan.engine.devices.OutOfMemory` is raised."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from ..imaging.camera import signal_to_noise
from .devices import (
    OutOfMemory,
    empty_cache,
    is_oom,
)
from .estimation import (
    estimate_kernel,
    n_estimation,
)
from .kernel_modes import KernelEstimate
from .plan import (
    Plan,
    PlaneResult,
    from_batch,
    read_plane_hwc,
    run_tile,
    to_batch,
    upsample_alpha,
)
from .progress import (
    Progress,
    drive,
)
from .tiling import Accumulator, make_tiles

__all__ = ["OOM_MIN_TILE", "restore_tiles", "restore_with_retry", "check_consistency",
           "restore_plane_iter", "restore_plane"]


OOM_MIN_TILE = 32


def restore_tiles(plan: Plan, x: np.ndarray, code: np.ndarray | None,
                   prog: Progress) -> Generator:
    """Tiles of one plane -> (HR (B, C, sH, sW) float32, tiles, per-tile kernels or None)."""
    _, _, h, w = x.shape
    tiles = make_tiles(h, w, plan.tile, plan.overlap)
    acc = Accumulator(x.shape[0] * x.shape[1], h, w, plan.layout.scale, plan.overlap)
    tile_kernels = []
    for t in tiles:
        prog.check()
        sr, kernel = run_tile(plan.runner, x[..., t.y0:t.y1, t.x0:t.x1], code, plan.iterations,
                              plan.settle, plan.views)
        acc.add(t, sr.reshape(-1, *sr.shape[-2:]))
        if kernel is not None:
            k = kernel.mean(0)
            tile_kernels.append(k / max(float(k.sum()), 1e-12))
        prog.done += 1
        yield prog.done, prog.total
    hr = acc.result().reshape(x.shape[0], x.shape[1], h * plan.layout.scale,
                              w * plan.layout.scale)
    return hr, tiles, tile_kernels


def restore_with_retry(plan: Plan, x: np.ndarray, code: np.ndarray | None, prog: Progress,
                        on_retry: Callable[[int], None], lead: tuple, retries: list) -> Generator:
    """:func:`restore_tiles`, halving ``plan.tile`` and starting the plane again on
    out-of-memory. ``on_retry(tiles_per_plane)`` lets the caller correct its progress total."""
    h, w = x.shape[-2:]
    while True:
        try:
            return (yield from restore_tiles(plan, x, code, prog))
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled here
            if not is_oom(e):
                raise
            empty_cache(plan.device)
            if plan.tile // 2 < OOM_MIN_TILE:
                raise OutOfMemory(
                    f"out of memory on {plan.device} even with {plan.tile}-pixel tiles; use "
                    "device='cpu', a smaller model, or free memory used by other programs"
                ) from None
            plan.tile //= 2
            if 2 * plan.overlap + 8 > plan.tile:
                plan.overlap = max(0, (plan.tile - 8) // 2)
            retries.append({"plane": lead, "tile_size": plan.tile, "tile_overlap": plan.overlap})
            on_retry(len(make_tiles(h, w, plan.tile, plan.overlap)))


def check_consistency(plan: Plan, res: PlaneResult, x: np.ndarray, hr: np.ndarray,
                       kernel: np.ndarray, keep_map: bool) -> None:
    """The plane's relative residual (and, with ``keep_map``, its residual map in input units,
    the plane's layout) from the LR batch ``x`` and the SR batch ``hr`` in network units."""
    from ..imaging.consistency import consistency

    lay = plan.layout
    k = np.asarray(kernel, np.float64)
    k = k / max(k.sum(), 1e-12)
    c = x.shape[0] * x.shape[1]
    # network units: 1 is the image's range, so a (nearly) flat plane is measured against
    # 0.1% of it rather than against its own norm of about 0
    rel, rmap = consistency(x.reshape(c, *x.shape[-2:]), hr.reshape(c, *hr.shape[-2:]), k,
                            lay.scale, plan.model.sampling, floor_rms=1e-3)
    res.consistency = rel
    if keep_map:
        norm = plan.norm_of(res.lead)
        span = (norm.hi - norm.lo).astype(np.float64)
        hwc = from_batch(rmap.reshape(x.shape), lay).astype(np.float64)
        hwc = (hwc * span[:hwc.shape[-1]]).astype(np.float32)
        if lay.alpha:
            hwc = np.concatenate([hwc, np.zeros((*hwc.shape[:2], 1), np.float32)], axis=-1)
        res.residual = lay.hwc_to_plane(hwc)


def restore_plane_iter(plan: Plan, lead: tuple, plane, prog: Progress, *,
                        batch: np.ndarray | None = None,
                        estimate: KernelEstimate | None = None,
                        on_retry: Callable[[int], None] | None = None,
                        keep_map: bool = False) -> Generator:
    """Generator behind :func:`restore_plane`; returns a :class:`PlaneResult`.

    ``batch`` is the plane already in network units (saves converting it again), ``estimate``
    a per-plane kernel worked out beforehand.
    """
    plan._ready()
    lay = plan.layout
    lead = tuple(int(i) for i in lead)
    hwc = read_plane_hwc(plan, lead, plane)
    x = batch if batch is not None else to_batch(hwc, lay, plan.norm_of(lead, hwc))
    res = PlaneResult(lead, None, norm=plan.norm_of(lead, hwc) if plan.per_plane_norm else None)
    est = plan.estimate
    if plan.mode == "per-plane":
        if estimate is None:
            t0 = time.perf_counter()
            estimate = yield from estimate_kernel(plan, {lead: x}, prog)
            res.estimate_s = time.perf_counter() - t0
        est = estimate
        res.rounds = list(est.rounds)
        res.kernels.append(est.kernel)
        res.snrs.append(est.snr)
        res.centres.append(lead)
    code = None if plan.mode == "per-tile" else est.code
    t0 = time.perf_counter()
    hr, tiles, tks = yield from restore_with_retry(
        plan, x, code, prog, on_retry or (lambda n: None), lead, res.retries)
    res.tiles = len(tiles)
    for t, k in zip(tiles, tks, strict=False):  # tks is empty unless per-tile
        res.kernels.append(k)
        res.snrs.append(signal_to_noise(x[..., t.y0:t.y1, t.x0:t.x1]))
        res.centres.append((*lead, *t.center))
    check_consistency(plan, res, x, hr, est.kernel if est is not None else
                       np.mean(tks, axis=0), keep_map)
    out = plan.norm_of(lead, hwc).from_unit(from_batch(hr, lay), lay.dtype)
    del hr
    if lay.alpha:
        out = np.concatenate([out, upsample_alpha(hwc[..., 3], lay.scale, lay.dtype)[..., None]],
                             axis=-1)
    res.plane = lay.hwc_to_plane(out)
    res.restore_s = time.perf_counter() - t0
    return res


def restore_plane(plan: Plan, lead: tuple[int, ...], plane: np.ndarray | None = None, *,
                  progress: Callable[[int, int], Any] | None = None,
                  cancel=None) -> PlaneResult:
    """Super-resolve one plane with a :class:`Plan`: per-plane kernel estimation (per-plane
    mode), tiled restoration with out-of-memory retry, the inverse value map and alpha.

    Parameters
    ----------
    plan
        From :func:`prepare` (or a pickled one given its model again with :meth:`Plan.attach`).
    lead
        The plane's index along the leading axes (one of ``plan.leads``).
    plane : array, optional
        The plane as stored in the input (``image[plan.layout.plane_index(lead)]``); read from
        the plan's array when omitted.
    progress, cancel
        As for :func:`super_resolve`, counting this plane's patches and tiles.

    Returns
    -------
    PlaneResult
        ``.plane`` goes to ``out[plan.layout.plane_index(lead)]``.
    """
    prog = Progress(cancel)
    prog.total = plan.tiles_per_plane + (
        n_estimation(plan.layout, 1) if plan.mode == "per-plane" else 0)
    return drive(restore_plane_iter(plan, lead, plane, prog), progress)
