"""Dask input -> lazy dask output.

The kernel is worked out eagerly (global: from the most textured patches of up to four evenly
spaced planes; per-plane: for every plane, which reads every plane once; user kernel: no reading),
then the super-resolved array is built with ``dask.array.map_blocks`` over chunks of one plane:
every leading axis chunked by 1, the spatial (and channel) axes whole. Each block is one call of
the engine's plane step (what ``restore_plane`` runs), so napari computes exactly the planes it
shows.

``per-tile`` mode is not lazy (its kernels are a product of the full run); the engine processes it
eagerly, plane by plane, like a numpy input.
"""

from __future__ import annotations

import time
from collections.abc import Generator

import numpy as np

from .estimation import estimate_global, estimate_kernel, n_estimation
from .kernel_modes import ESTIMATION_PLANES, KernelEstimate
from .plan import Plan, PlaneResult, read_plane_hwc, to_batch
from .progress import Progress, drive
from .restoration import restore_plane_iter
from .result import finish

__all__ = ["lazy_super_resolve"]


def lazy_super_resolve(plan: Plan, prog: Progress) -> Generator:
    """Generator: yields progress while estimating, returns an SRResult with a dask ``image``.

    ``plan`` comes from :func:`.plan.decide` (no estimation yet) and holds the dask array.
    """
    import dask.array as da


    lay = plan.layout
    leads = plan.leads
    estimates: dict[tuple, KernelEstimate] = {}
    parts: list[PlaneResult] = []
    if plan.mode == "global":
        prog.total = n_estimation(lay, min(ESTIMATION_PLANES, len(leads)))
        yield from estimate_global(plan, prog, {})
    elif plan.mode == "per-plane":
        prog.total = n_estimation(lay, 1) * len(leads)
        for lead in leads:
            t0 = time.perf_counter()
            hwc = read_plane_hwc(plan, lead)
            x = to_batch(hwc, lay, plan.norm_of(lead, hwc))
            e = yield from estimate_kernel(plan, {lead: x}, prog)
            estimates[lead] = e
            parts.append(PlaneResult(lead, None, [e.kernel], [lead], rounds=list(e.rounds),
                                     snrs=[e.snr],
                                     estimate_s=time.perf_counter() - t0,
                                     norm=plan.norm_of(lead, hwc) if plan.per_plane_norm else None))

    chunks = {a: 1 for a in lay.lead_axes}
    for a in range(len(lay.shape)):
        chunks.setdefault(a, -1)
    src = plan.source.rechunk(chunks)
    out_chunks = []
    for a, n in enumerate(lay.out_shape):
        out_chunks.append((1,) * n if a in lay.lead_axes else (n,))
    model = plan.model  # a plan pickled to a dask worker arrives without it

    def block(b: np.ndarray, block_info=None) -> np.ndarray:
        loc = block_info[0]["chunk-location"]
        lead = tuple(int(loc[a]) for a in lay.lead_axes)
        sel = tuple(0 if a in lay.lead_axes else slice(None) for a in range(b.ndim))
        p = plan if plan.model is not None else plan.attach(model)
        part = drive(restore_plane_iter(p, lead, b[sel], Progress(None),
                                          estimate=estimates.get(lead)))
        return np.expand_dims(part.plane, tuple(lay.lead_axes)) if lay.lead_axes else part.plane

    lazy = da.map_blocks(block, src, dtype=lay.dtype, chunks=tuple(out_chunks),
                         name=f"napari-dan-sr-{id(plan):x}",
                         meta=np.empty((0,) * len(lay.shape), lay.dtype))
    return finish(plan, lazy, parts, lazy=True, tiles=None, steps=prog.done,
                  timing={"restore_s": None})
