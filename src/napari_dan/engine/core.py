"""``super_resolve`` and ``super_resolve_iter``: the one routine every front end calls.

Flow: check the input (:mod:`.normalize`), pick device and precision (:mod:`.devices`), work out the
kernel code (:mod:`.kernels`), then go through the planes one at a time: read one plane, restore it
tile by tile (:mod:`.tiling`), map it back to the input's dtype and write it into the output.

Progress counts work units: one per estimation patch (full DAN loop) and one per tile; the
generator yields ``(done, total)`` after each. ``cancel`` is checked before every unit.

Cancellation and ``out``: a plane is assembled in memory and written into the output only when
all its tiles are done, so after :class:`~napari_dan.errors.Cancelled` (or any error) ``out`` holds
complete planes for every plane before the one being worked on and untouched contents for the rest;
the exception's message says how many planes were written. Without ``out`` nothing is returned.

Out of memory during a plane: the tile side is halved and the plane restarted (the total grows
accordingly); below 32 px :class:`~napari_dan.engine.devices.OutOfMemory` is raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import Cancelled, InputError
from ..model import DanModel, load_model
from ..model.kernels import KernelStats, kernel_stats
from . import kernels as km
from .devices import (
    OutOfMemory,
    Precision,
    autocast,
    empty_cache,
    is_oom,
    memory_budget,
    network_on,
    resolve_device,
    resolve_precision,
)
from .normalize import Layout, Normalisation, analyse, cast, check_finite, compute_normalisation
from .tiling import Accumulator, auto_overlap, auto_tile_size, make_tiles

__all__ = ["SRResult", "super_resolve", "super_resolve_iter", "OOM_MIN_TILE"]

OOM_MIN_TILE = 32


@dataclass
class SRResult:
    """What :func:`super_resolve` returns.

    Attributes
    ----------
    image : numpy.ndarray, dask.array.Array or the caller's ``out``
        Same dtype and axis order as the input; the two spatial axes are ``scale`` times larger.
        Lazy (dask) when the input was a dask array and no ``out`` was given.
    kernel : (k, k) float32
        The blur kernel on the HR grid, sums to 1 (per-plane/per-tile: the mean kernel).
    kernels : (N, k, k) float32
        global or user kernel: ``kernel[None]``; per-plane: one per plane; per-tile: one per tile.
    kernel_centers : (N, D) float64
        global/user kernel: the array's centre (leading axes..., y, x); per-plane: the plane's
        leading-axes index (D = number of leading axes); per-tile: (leading index..., y, x) of the
        tile centre in input pixel coordinates.
    kernel_stats : KernelStats
        Widths, FWHM and angle of ``kernel`` (HR pixels).
    metadata : dict
        model, mode, device, precision, tiles, channel handling, normalisation, timing.
    """

    image: Any
    kernel: np.ndarray
    kernels: np.ndarray
    kernel_centers: np.ndarray
    kernel_stats: KernelStats
    metadata: dict = field(default_factory=dict)


class _Runner:
    """Network calls on one device and precision; numpy (B, C, h, w) float32 in and out."""

    def __init__(self, model: DanModel, device: torch.device, precision: Precision):
        self.net = network_on(model.network, device)
        self.device, self.precision = device, precision

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        # NHWC input makes the convolutions pick their faster channels_last kernels (CPU too)
        return t.contiguous(memory_format=torch.channels_last)

    def loop(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Full DAN loop: last SR, last kernel (B, k, k), and the code that produced the last SR."""
        with torch.inference_mode(), autocast(self.device, self.precision):
            t = self._tensor(x)
            srs, kernels, codes = self.net.forward_all(t)
            code = codes[-2] if len(codes) > 1 else self.net.initial_code(t.shape[0])
            return (srs[-1].float().cpu().numpy(), kernels[-1].float().cpu().numpy(),
                    code.float().cpu().numpy())

    def restore(self, x: np.ndarray, code: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), autocast(self.device, self.precision):
            t = self._tensor(x)
            c = torch.from_numpy(np.asarray(code, np.float32).reshape(1, -1)).to(self.device)
            return self.net.restore(t, c.expand(t.shape[0], -1)).float().cpu().numpy()


def _run_tile(runner: _Runner, x: np.ndarray, code: np.ndarray | None):
    """One tile: the Restorer with a fixed code, or the full loop when ``code`` is None.

    Returns (sr, kernel or None). Module level so tests can inject failures (e.g. an OOM).
    """
    if code is None:
        sr, kernel, _ = runner.loop(x)
        return sr, kernel
    return runner.restore(x, code), None


class _Progress:
    def __init__(self, cancel):
        self.done, self.total = 0, 0
        self.cancel = _cancel_check(cancel)
        self.planes_written = 0

    def check(self) -> None:
        if self.cancel():
            raise Cancelled(f"stopped by the caller after {self.done} of {self.total} steps; "
                            f"{self.planes_written} complete plane(s) written")


def _cancel_check(cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return lambda: bool(cancel.is_set())
    if callable(cancel):
        return lambda: bool(cancel())
    raise InputError(f"cancel must be a callable returning bool or a threading.Event, got "
                     f"{type(cancel).__name__}")


def _to_batch(hwc: np.ndarray, layout: Layout, norm: Normalisation) -> np.ndarray:
    """(H, W, C) raw plane -> (B, in_nc, H, W) float32 in network units (alpha dropped)."""
    u = norm.to_unit(hwc[..., : layout.colour_channels])
    chw = np.moveaxis(u, -1, 0)
    if layout.rgb and layout.in_nc == 3:
        return np.ascontiguousarray(chw[None])
    if layout.in_nc == 1:
        return np.ascontiguousarray(chw[:, None])
    return np.ascontiguousarray(np.repeat(chw[:, None], 3, axis=1))


def _from_batch(hr: np.ndarray, layout: Layout) -> np.ndarray:
    """(B, in_nc, sH, sW) -> (sH, sW, C) colour channels in network units."""
    if layout.rgb and layout.in_nc == 3:
        chw = hr[0]
    elif layout.in_nc == 1:
        chw = hr[:, 0]
    else:
        chw = hr.mean(1)
    return np.moveaxis(chw, 0, -1)


def _upsample_alpha(alpha: np.ndarray, scale: int, dtype: np.dtype) -> np.ndarray:
    """Bicubic upsampling of an alpha plane, clipped to its own range (no overshoot)."""
    a = alpha.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(a))[None, None]
    up = F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False)[0, 0].numpy()
    return cast(np.clip(up, a.min(), a.max()), dtype)


def _resolve_model(model) -> DanModel:
    if isinstance(model, DanModel):
        return model
    return load_model(model)


def _check_tile_args(tile_size, tile_overlap) -> None:
    if not (tile_size == "auto" or (isinstance(tile_size, (int, np.integer))
                                    and not isinstance(tile_size, bool) and tile_size >= 16)):
        raise InputError(f"tile_size must be 'auto' or an int >= 16 (LR pixels), got "
                         f"{tile_size!r}")
    if not (tile_overlap == "auto" or (isinstance(tile_overlap, (int, np.integer))
                                       and not isinstance(tile_overlap, bool)
                                       and tile_overlap >= 0)):
        raise InputError(f"tile_overlap must be 'auto' or an int >= 0 (LR pixels), got "
                         f"{tile_overlap!r}")


def _check_out(out, layout: Layout) -> None:
    shape = tuple(getattr(out, "shape", ()))
    if shape != layout.out_shape:
        raise InputError(f"out has shape {shape}, expected {layout.out_shape} (the input's "
                         f"shape with both spatial axes x{layout.scale})")
    if np.dtype(getattr(out, "dtype", None)) != layout.dtype:
        raise InputError(f"out has dtype {out.dtype}, expected {layout.dtype} (the input's)")


def is_dask(image) -> bool:
    try:
        import dask.array as da
    except ImportError:  # dask is a dependency, but the engine should not need it for numpy
        return False
    return isinstance(image, da.Array)


@dataclass
class _Setup:
    """Everything decided before the first pixel is processed (shared with the dask path)."""

    model: DanModel
    layout: Layout
    device: torch.device
    precision: Precision
    runner: _Runner
    norm: Normalisation
    mode: str
    user: km.KernelEstimate | None
    tile: int
    overlap: int
    overlap_note: str
    read_hwc: Callable
    source: Any = None


def _setup(image, model, channel_axis, tile_size, tile_overlap, kernel_mode, kernel, device,
           precision) -> _Setup:
    model = _resolve_model(model)
    if kernel_mode not in km.KERNEL_MODES:
        raise InputError(f"unknown kernel_mode {kernel_mode!r}; use one of "
                         f"{', '.join(km.KERNEL_MODES)}")
    _check_tile_args(tile_size, tile_overlap)
    layout = analyse(image, channel_axis, model.in_channels, model.scale)
    user = None
    if kernel is not None:
        user = km.user_kernel(kernel, model.pca_basis, model.kernel_mean)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev, model.network)
    runner = _Runner(model, dev, prec)

    def read_hwc(lead: tuple[int, ...]) -> np.ndarray:
        hwc = layout.plane_to_hwc(np.asarray(image[layout.plane_index(lead)]))
        check_finite(hwc, f"plane {lead}" if lead else "")
        return hwc

    norm = compute_normalisation(read_hwc, layout)
    mode = "user kernel" if user is not None else kernel_mode
    if tile_overlap == "auto":
        code = None if user is None else torch.from_numpy(user.code)
        overlap = auto_overlap(runner.net, None if code is None else code.to(dev))
        note = "auto (probe of the model)"
    else:
        overlap, note = int(tile_overlap), "asked for"
    if tile_size == "auto":
        tile = auto_tile_size(model.network, layout.batch, memory_budget(dev), overlap,
                              full_loop=mode == "per-tile")
    else:
        tile = int(tile_size)
    if 2 * overlap + 8 > tile:  # a tile needs a core that no neighbour's ramp covers
        overlap = max(0, (tile - 8) // 2)
        note += f"; reduced to {overlap} to fit tile_size {tile}"
    return _Setup(model, layout, dev, prec, runner, norm, mode, user, tile, overlap, note,
                  read_hwc, image)


def _estimate(st: _Setup, planes: dict, prog: _Progress) -> Generator:
    """Full loop on the most textured patches of ``planes`` (lead -> (B, C, H, W) units)."""
    patches = km.select_patches(planes)
    codes, kernels = [], []
    for p in patches:
        prog.check()
        x = planes[p.lead][..., p.y0:p.y1, p.x0:p.x1]
        sr, kernel, code = st.runner.loop(x)
        codes.append(code)
        kernels.append(kernel)
        prog.done += 1
        yield prog.done, prog.total
    code, kernel = km.combine(codes, kernels)
    est = km.KernelEstimate(code, kernel, "estimated", patches)
    p = patches[0]
    if len(patches) == 1 and (p.y1 - p.y0, p.x1 - p.x0) == planes[p.lead].shape[-2:]:
        est.whole_sr = sr
    return est


def _n_estimation(layout: Layout, n_planes: int) -> int:
    per = len(km.candidate_patches(layout.height, layout.width))
    return min(km.ESTIMATION_PATCHES, per * n_planes)


def _restore_plane(st: _Setup, x: np.ndarray, code: np.ndarray | None, tile: int,
                   prog: _Progress) -> Generator:
    """Tiles of one plane -> (HR (B, C, sH, sW) float32, tiles, per-tile kernels or None)."""
    _, _, h, w = x.shape
    tiles = make_tiles(h, w, tile, st.overlap)
    acc = Accumulator(x.shape[0] * x.shape[1], h, w, st.layout.scale, st.overlap)
    tile_kernels = []
    for t in tiles:
        prog.check()
        sr, kernel = _run_tile(st.runner, x[..., t.y0:t.y1, t.x0:t.x1], code)
        acc.add(t, sr.reshape(-1, *sr.shape[-2:]))
        if kernel is not None:
            k = kernel.mean(0)
            tile_kernels.append(k / max(float(k.sum()), 1e-12))
        prog.done += 1
        yield prog.done, prog.total
    hr = acc.result().reshape(x.shape[0], x.shape[1], h * st.layout.scale, w * st.layout.scale)
    return hr, tiles, tile_kernels


def _restore_with_retry(st: _Setup, x: np.ndarray, code: np.ndarray | None, prog: _Progress,
                        on_retry: Callable[[int], None], lead: tuple, retries: list) -> Generator:
    """:func:`_restore_plane`, halving ``st.tile`` and starting the plane again on out-of-memory.

    ``on_retry(tiles_per_plane)`` lets the caller correct its progress total.
    """
    h, w = x.shape[-2:]
    while True:
        try:
            return (yield from _restore_plane(st, x, code, st.tile, prog))
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled here
            if not is_oom(e):
                raise
            empty_cache(st.device)
            if st.tile // 2 < OOM_MIN_TILE:
                raise OutOfMemory(
                    f"out of memory on {st.device} even with {st.tile}-pixel tiles; use "
                    "device='cpu', a smaller model, or free memory used by other programs"
                ) from None
            st.tile //= 2
            if 2 * st.overlap + 8 > st.tile:
                st.overlap = max(0, (st.tile - 8) // 2)
            retries.append({"plane": lead, "tile_size": st.tile, "tile_overlap": st.overlap})
            on_retry(len(make_tiles(h, w, st.tile, st.overlap)))


def _stats(kernel: np.ndarray) -> KernelStats:
    return kernel_stats(kernel)


def _model_info(model: DanModel) -> dict:
    return {"name": model.name, "architecture": model.architecture, "scale": model.scale,
            "in_channels": model.in_channels, "kernel_size": model.kernel_size,
            "iterations": model.iterations, "source": model.source}


def _base_metadata(st: _Setup) -> dict:
    lay = st.layout
    return {"model": _model_info(st.model), "mode": st.mode, "device": str(st.device),
            "precision": st.precision.name, "precision_reason": st.precision.reason,
            "tile_size": st.tile, "tile_overlap": st.overlap, "tile_overlap_note": st.overlap_note,
            "channels": lay.handling, "normalisation": st.norm.to_dict(),
            "input_shape": lay.shape, "output_shape": lay.out_shape, "dtype": str(lay.dtype),
            "planes": lay.n_planes, "spatial_axes": lay.spatial_axes,
            "channel_axis": lay.channel_axis}


def _leads(layout: Layout) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in ix) for ix in np.ndindex(*layout.lead_shape)] \
        if layout.lead_shape else [()]


def _sample_leads(layout: Layout, n: int) -> list[tuple[int, ...]]:
    leads = _leads(layout)
    picks = sorted({int(round(i)) for i in np.linspace(0, len(leads) - 1, min(n, len(leads)))})
    return [leads[i] for i in picks]


def _global_estimate(st: _Setup, prog: _Progress, cache: dict) -> Generator:
    """Kernel for the whole array from a few planes (also used by the dask path)."""
    planes = {}
    for lead in _sample_leads(st.layout, km.ESTIMATION_PLANES):
        planes[lead] = _to_batch(st.read_hwc(lead), st.layout, st.norm)
    cache.clear()
    last = list(planes)[-1]
    cache[last] = planes[last]  # the plane most likely needed next is kept, the rest freed
    est = yield from _estimate(st, planes, prog)
    return est


def _image_centre(layout: Layout) -> np.ndarray:
    return np.array([(n - 1) / 2 for n in layout.lead_shape] +
                    [(layout.height - 1) / 2, (layout.width - 1) / 2])[None]


def _run(image, model, channel_axis, tile_size, tile_overlap, kernel_mode, kernel, device,
         precision, cancel, out) -> Generator:
    t_start = time.perf_counter()
    st = _setup(image, model, channel_axis, tile_size, tile_overlap, kernel_mode, kernel, device,
                precision)
    prog = _Progress(cancel)
    lay = st.layout
    if out is not None:
        _check_out(out, lay)
    if is_dask(image) and out is None and st.mode != "per-tile":
        from .lazy import lazy_super_resolve

        return (yield from lazy_super_resolve(st, prog, t_start))

    leads = _leads(lay)
    n_tiles = len(make_tiles(lay.height, lay.width, st.tile, st.overlap))
    cache: dict = {}
    est: km.KernelEstimate | None = st.user
    t_est = 0.0
    per_plane_est = 0
    if st.mode == "global":
        prog.total = _n_estimation(lay, min(km.ESTIMATION_PLANES, len(leads))) + \
            n_tiles * len(leads)
        t0 = time.perf_counter()
        est = yield from _global_estimate(st, prog, cache)
        t_est += time.perf_counter() - t0
    elif st.mode == "per-plane":
        per_plane_est = _n_estimation(lay, 1)
        prog.total = (per_plane_est + n_tiles) * len(leads)
    else:
        prog.total = n_tiles * len(leads)

    result = out if out is not None else np.empty(lay.out_shape, lay.dtype)
    plane_kernels, plane_centres, tile_kernels, tile_centres, retries = [], [], [], [], []
    n_done_tiles = 0
    t_restore = 0.0
    for i, lead in enumerate(leads):
        prog.check()
        x_hwc = st.read_hwc(lead)
        x = cache.pop(lead, None)
        if x is None:
            x = _to_batch(x_hwc, lay, st.norm)
        cache.clear()
        code = None
        if st.mode == "per-plane":
            t0 = time.perf_counter()
            est = yield from _estimate(st, {lead: x}, prog)
            t_est += time.perf_counter() - t0
            plane_kernels.append(est.kernel)
            plane_centres.append(lead)
        if st.mode != "per-tile":
            code = est.code
        t0 = time.perf_counter()
        remaining = len(leads) - i

        def on_retry(new_per_plane: int, remaining=remaining) -> None:
            prog.total = prog.done + new_per_plane * remaining + \
                per_plane_est * (remaining - 1) * (st.mode == "per-plane")

        whole = est.whole_sr if est is not None and st.mode != "user kernel" else None
        if whole is not None and est.patches[0].lead == lead and st.tile >= max(x.shape[-2:]):
            # one tile = the whole plane = the estimation patch: the loop already produced it
            hr, tiles, tks = whole, make_tiles(lay.height, lay.width, st.tile, st.overlap), []
            prog.done += 1
            yield prog.done, prog.total
        else:
            hr, tiles, tks = yield from _restore_with_retry(st, x, code, prog, on_retry, lead,
                                                            retries)
        if est is not None:
            est.whole_sr = None  # used at most once; frees the memory
        n_done_tiles += len(tiles)
        for t, k in zip(tiles, tks, strict=False):  # tks is empty unless per-tile
            tile_kernels.append(k)
            tile_centres.append((*lead, *t.center))
        hwc = st.norm.from_unit(_from_batch(hr, lay), lay.dtype)
        del hr
        if lay.alpha:
            hwc = np.concatenate([hwc, _upsample_alpha(x_hwc[..., 3], lay.scale, lay.dtype)[..., None]],
                                 axis=-1)
        result[lay.plane_index(lead)] = lay.hwc_to_plane(hwc)
        prog.planes_written += 1
        t_restore += time.perf_counter() - t0

    if st.mode == "per-tile":
        kernels = np.stack(tile_kernels).astype(np.float32)
        centres = np.array(tile_centres, np.float64)
        kernel = kernels.mean(0)
    elif st.mode == "per-plane":
        kernels = np.stack(plane_kernels).astype(np.float32)
        centres = np.array(plane_centres, np.float64).reshape(len(plane_kernels), -1)
        kernel = kernels.mean(0)
    else:
        kernel = est.kernel
        kernels = kernel[None].astype(np.float32)
        centres = _image_centre(lay)
    kernel = (kernel / kernel.sum()).astype(np.float32)
    meta = _base_metadata(st)
    meta.update({"tile_size": st.tile, "tile_overlap": st.overlap, "tiles_per_plane":
                 len(make_tiles(lay.height, lay.width, st.tile, st.overlap)),
                 "tiles": n_done_tiles, "oom_retries": retries, "lazy": False,
                 "steps": prog.done,
                 "timing": {"estimate_s": t_est, "restore_s": t_restore,
                            "total_s": time.perf_counter() - t_start}})
    if est is not None and est.patches and st.mode == "global":
        meta["estimation_patches"] = [vars(p) for p in est.patches]
    if st.user is not None:
        meta["kernel_projection_error"] = st.user.projection_error
    return SRResult(result, kernel, kernels, centres, _stats(kernel), meta)


def super_resolve_iter(image, model, *, channel_axis: int | None = None,
                       tile_size: int | str = "auto", tile_overlap: int | str = "auto",
                       kernel_mode: str = "global", kernel: np.ndarray | None = None,
                       device: str = "auto", precision: str = "auto",
                       progress: Callable[[int, int], Any] | None = None, cancel=None,
                       out=None) -> Generator[tuple[int, int], None, SRResult]:
    """Generator form of :func:`super_resolve`: yields ``(done, total)`` after every estimation
    patch and every tile, and returns the :class:`SRResult` (``StopIteration.value``).

    Meant for thread workers (napari's ``thread_worker``): ``result = yield from
    super_resolve_iter(...)``. ``progress`` is called as well when given.
    """
    gen = _run(image, model, channel_axis, tile_size, tile_overlap, kernel_mode, kernel, device,
               precision, cancel, out)
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)
        yield done, total


def super_resolve(image, model, *, channel_axis: int | None = None,
                  tile_size: int | str = "auto", tile_overlap: int | str = "auto",
                  kernel_mode: str = "global", kernel: np.ndarray | None = None,
                  device: str = "auto", precision: str = "auto",
                  progress: Callable[[int, int], Any] | None = None, cancel=None,
                  out=None) -> SRResult:
    """Super-resolve an image of any size, dtype and dimensionality with a DAN model.

    Parameters
    ----------
    image : array-like
        numpy, dask, zarr or memmap array. 2D (Y, X); RGB/RGBA (..., Y, X, 3|4); multichannel with
        ``channel_axis``; leading axes (Z, T, ...) are processed plane by plane. The last two
        non-channel axes are super-resolved. uint8, uint16, other integers and float16/32/64.
    model : DanModel or str or path
        A loaded model, a bundled model name or a checkpoint path.
    channel_axis : int, optional
        Axis holding independent channels. Not needed for RGB(A) in the last axis.
    tile_size : int or "auto"
        Tile side in LR (input) pixels; "auto" chooses by device memory.
    tile_overlap : int or "auto"
        Overlap of neighbouring tiles in LR pixels; "auto" probes the model's receptive field.
    kernel_mode : {"global", "per-plane", "per-tile"}
        One kernel for the whole array, one per plane, or one per tile (full loop on every tile).
    kernel : (k, k) array, optional
        A known PSF on the output (HR) grid, odd sides: non-blind, the Estimator is skipped.
    device : str
        "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    precision : str
        "auto", "fp32", "fp16" or "bf16" (see :mod:`napari_dan.engine.devices`).
    progress : callable(done, total), optional
        Called after every estimation patch and tile.
    cancel : callable returning bool, or threading.Event, optional
        Checked before every patch and tile; when set, :class:`Cancelled` is raised.
    out : array-like, optional
        Where to write the result (numpy array, memmap, zarr): the input's shape with both spatial
        axes multiplied by the scale, and the input's dtype. Written one complete plane at a time.

    Returns
    -------
    SRResult

    Raises
    ------
    InputError
        The image or a parameter cannot be used; the message says what to change.
    Cancelled
        ``cancel`` was set; ``out`` holds only complete planes.
    OutOfMemory
        Even small tiles did not fit on the device.
    """
    gen = super_resolve_iter(image, model, channel_axis=channel_axis, tile_size=tile_size,
                             tile_overlap=tile_overlap, kernel_mode=kernel_mode, kernel=kernel,
                             device=device, precision=precision, progress=progress,
                             cancel=cancel, out=out)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value

