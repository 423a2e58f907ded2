"""Dask input -> lazy dask output.

The kernel is worked out eagerly (global: from the most textured patches of up to four evenly
spaced planes; per-plane: for every plane, which reads every plane once; user kernel: no reading),
then the super-resolved array is built with ``dask.array.map_blocks`` over chunks of one plane:
every leading axis chunked by 1, the spatial (and channel) axes whole. Each block runs the same
tiled restoration as the eager path, so napari computes exactly the planes it shows.

``per-tile`` mode is not lazy (its kernels are a product of the full run); the engine processes it
eagerly, plane by plane, like a numpy input.
"""

from __future__ import annotations

import time
from collections.abc import Generator

import numpy as np

from . import kernels as km
from .normalize import check_finite

__all__ = ["lazy_super_resolve"]


def lazy_super_resolve(st, prog, t_start: float) -> Generator:
    """Generator: yields progress while estimating, returns an SRResult with a dask ``image``."""
    import dask.array as da

    from .core import (
        SRResult,
        _base_metadata,
        _estimate,
        _from_batch,
        _global_estimate,
        _image_centre,
        _leads,
        _n_estimation,
        _Progress,
        _restore_with_retry,
        _stats,
        _to_batch,
        _upsample_alpha,
    )

    lay = st.layout
    leads = _leads(lay)
    t0 = time.perf_counter()
    codes: dict[tuple, np.ndarray] = {}
    if st.mode == "global":
        prog.total = _n_estimation(lay, min(km.ESTIMATION_PLANES, len(leads)))
        est = yield from _global_estimate(st, prog, {})
        kernel, kernels, centres = est.kernel, est.kernel[None], _image_centre(lay)
        default_code = est.code
    elif st.mode == "per-plane":
        prog.total = _n_estimation(lay, 1) * len(leads)
        ks = []
        for lead in leads:
            x = _to_batch(st.read_hwc(lead), lay, st.norm)
            e = yield from _estimate(st, {lead: x}, prog)
            codes[lead] = e.code
            ks.append(e.kernel)
        kernels = np.stack(ks)
        kernel = kernels.mean(0)
        kernel = kernel / kernel.sum()
        centres = np.array(leads, np.float64).reshape(len(leads), -1)
        default_code = None
        est = None
    else:  # user kernel
        est = st.user
        kernel, kernels, centres = est.kernel, est.kernel[None], _image_centre(lay)
        default_code = est.code
    t_est = time.perf_counter() - t0

    src = st.source
    chunks = {a: 1 for a in lay.lead_axes}
    for a in range(len(lay.shape)):
        chunks.setdefault(a, -1)
    src = src.rechunk(chunks)
    out_chunks = []
    for a, n in enumerate(lay.out_shape):
        out_chunks.append((1,) * n if a in lay.lead_axes else (n,))

    def block(b: np.ndarray, block_info=None) -> np.ndarray:
        loc = block_info[0]["chunk-location"]
        lead = tuple(int(loc[a]) for a in lay.lead_axes)
        sel = tuple(0 if a in lay.lead_axes else slice(None) for a in range(b.ndim))
        hwc = lay.plane_to_hwc(np.asarray(b[sel]))
        check_finite(hwc, f"plane {lead}" if lead else "")
        x = _to_batch(hwc, lay, st.norm)
        code = codes[lead] if default_code is None else default_code
        gen = _restore_with_retry(st, x, code, _Progress(None), lambda n: None, lead, [])
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                hr = stop.value[0]
                break
        res = st.norm.from_unit(_from_batch(hr, lay), lay.dtype)
        if lay.alpha:
            res = np.concatenate([res, _upsample_alpha(hwc[..., 3], lay.scale,
                                                       lay.dtype)[..., None]], axis=-1)
        plane = lay.hwc_to_plane(res)
        return np.expand_dims(plane, tuple(lay.lead_axes)) if lay.lead_axes else plane

    lazy = da.map_blocks(block, src, dtype=lay.dtype, chunks=tuple(out_chunks),
                         name=f"napari-dan-sr-{id(st):x}", meta=np.empty((0,) * len(lay.shape),
                                                                        lay.dtype))
    meta = _base_metadata(st)
    meta.update({"lazy": True, "tiles": None, "steps": prog.done, "oom_retries": [],
                 "timing": {"estimate_s": t_est, "restore_s": None,
                            "total_s": time.perf_counter() - t_start}})
    if est is not None and est.patches:
        meta["estimation_patches"] = [vars(p) for p in est.patches]
    if st.user is not None:
        meta["kernel_projection_error"] = st.user.projection_error
    kernel = np.asarray(kernel, np.float32)
    return SRResult(lazy, kernel, np.asarray(kernels, np.float32), centres, _stats(kernel), meta)

