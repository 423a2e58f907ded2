"""``super_resolve`` and ``super_resolve_iter``: the one routine every front end calls, and the
building blocks it is made of.

Flow: :func:`prepare` checks the input (:mod:`.normalize`), picks device and precision
(:mod:`.devices`), the tile size and overlap (:mod:`.tiling`) and works out the global kernel code
(:mod:`.kernels`) into a :class:`Plan`; :func:`restore_plane` then restores one plane tile by tile
(per-plane mode: after estimating its kernel) and maps it back to the input's dtype; :func:`finish`
gathers the kernels and metadata into the :class:`SRResult`. ``super_resolve_iter`` is exactly
these steps over every plane (writing each into the output); the lazy dask path
(:mod:`.lazy`) and the cluster runner (:mod:`napari_dan.distributed`) use the same steps.

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
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import Cancelled, DanError, InputError
from ..model import DanModel, load_model
from ..model.kernels import KernelStats, kernel_stats
from . import kernels as km
from .devices import (
    CompiledRestorer,
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
from .threads import ThreadPolicy
from .tiling import Accumulator, auto_overlap, auto_tile_size, make_tiles

__all__ = ["SRResult", "super_resolve", "super_resolve_iter", "Plan", "PlaneResult", "prepare",
           "restore_plane", "finish", "spot_psf", "OOM_MIN_TILE"]

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
        model, mode, device, precision, tiles, channel handling, normalisation, timing, the
        consistency check (``metadata["consistency"]``: relative residual, overall and per
        plane) and, for ``kernel="spots"``, the spot measurement (``metadata["spots"]``).
    residual : numpy.ndarray or None
        With ``residual=True``: the input minus the SR image seen through its kernel and
        sampled back (:mod:`napari_dan.imaging.consistency`), float32, the input's shape and
        units (alpha channels 0).
    """

    image: Any
    kernel: np.ndarray
    kernels: np.ndarray
    kernel_centers: np.ndarray
    kernel_stats: KernelStats
    metadata: dict = field(default_factory=dict)
    residual: np.ndarray | None = None


class _Runner:
    """Network calls on one device and precision; numpy (B, C, h, w) float32 in and out."""

    def __init__(self, model: DanModel, device: torch.device, precision: Precision,
                 compiled: bool = False):
        self.net = network_on(model.network, device)
        self.device, self.precision = device, precision
        self.compiled = CompiledRestorer.for_network(self.net) if compiled else None

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
            kernel = kernels[-1].float().cpu().numpy()
            if not np.all(np.isfinite(kernel)) or not np.all(np.clip(kernel, 0, None).reshape(
                    kernel.shape[0], -1).sum(1) > 0):
                raise DanError("the network produced no usable kernel on this image (NaN, Inf or "
                               f"nothing positive, in {self.precision.name}); "
                               "try precision='fp32', or check the image's values")
            return srs[-1].float().cpu().numpy(), kernel, code.float().cpu().numpy()

    def restore(self, x: np.ndarray, code: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), autocast(self.device, self.precision):
            t = self._tensor(x)
            c = torch.from_numpy(np.asarray(code, np.float32).reshape(1, -1)).to(self.device)
            c = c.expand(t.shape[0], -1)
            sr = self.compiled(t, c) if self.compiled is not None else self.net.restore(t, c)
            return sr.float().cpu().numpy()


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


def _as_array(image):
    """Arrays (numpy, dask, zarr, TiffArray) as they are; nested lists and the like as numpy."""
    if all(hasattr(image, a) for a in ("shape", "dtype", "__getitem__")):
        return image
    try:
        return np.asarray(image)
    except (ValueError, TypeError) as e:
        raise InputError(f"cannot use a {type(image).__name__} as an image ({e}); pass a numpy, "
                         "dask or zarr array") from None


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


def is_dask(image) -> bool:
    try:
        import dask.array as da
    except ImportError:  # dask is a dependency, but the engine should not need it for numpy
        return False
    return isinstance(image, da.Array)


def _relay(gen: Generator, progress: Callable[[int, int], Any] | None = None):
    """Yield an engine generator's ``(done, total)`` steps, also reporting them to ``progress``;
    return its value."""
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)
        yield done, total


def _drive(gen: Generator, progress: Callable[[int, int], Any] | None = None):
    """Run an engine generator to its end and return its value, reporting ``(done, total)``."""
    relay = _relay(gen, progress)
    while True:
        try:
            next(relay)
        except StopIteration as stop:
            return stop.value


# ---- the building blocks -------------------------------------------------------------------


@dataclass
class Plan:
    """Everything decided for one array before its planes are restored (see :func:`prepare`).

    Attributes
    ----------
    model : DanModel or None
        None after pickling (see :meth:`attach`).
    layout : Layout
        Axes, channels, dtype and scale of the input (:mod:`.normalize`).
    device, precision
        Where and how the network runs; ``requested_device`` / ``requested_precision`` are the
        caller's words ("auto", ...), resolved again by :meth:`attach` on another machine.
    norm : Normalisation
        The value map of the whole array (input dtype <-> network units).
    mode : str
        "global", "per-plane", "per-tile" or "user kernel".
    tile, overlap : int
        Tile side and overlap in LR pixels (the tile side halves on out-of-memory).
    estimate : KernelEstimate or None
        The code every tile is restored with: global (once estimated) or the user kernel; None in
        per-plane and per-tile mode, where each plane or tile gets its own.

    A plan pickles without its model, input array and network runner, so it can be sent to
    other processes; there :meth:`attach` gives it a model again.
    """

    model: DanModel | None
    layout: Layout
    device: torch.device
    precision: Precision
    norm: Normalisation
    mode: str
    tile: int
    overlap: int
    overlap_note: str
    estimate: km.KernelEstimate | None = None
    requested_device: str = "auto"
    requested_precision: str = "auto"
    estimate_s: float = 0.0
    spots: dict | None = None
    started: float = field(default_factory=time.perf_counter)
    source: Any = field(default=None, repr=False)
    runner: _Runner | None = field(default=None, repr=False)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(model=None, source=None, runner=None)
        if self.estimate is not None and self.estimate.whole_sr is not None:
            # a whole HR plane kept for reuse here; not worth shipping
            state["estimate"] = replace(self.estimate, whole_sr=None)
        return state

    @property
    def leads(self) -> list[tuple[int, ...]]:
        """Plane indices along the leading axes, in order (``[()]`` for a single plane);
        ``layout.plane_index(lead)`` turns one into an index of the input or output array."""
        return [tuple(int(i) for i in ix) for ix in np.ndindex(*self.layout.lead_shape)] \
            if self.layout.lead_shape else [()]

    @property
    def tiles_per_plane(self) -> int:
        return len(make_tiles(self.layout.height, self.layout.width, self.tile, self.overlap))

    def read_plane(self, lead: tuple[int, ...]) -> np.ndarray:
        """One plane of the input array, as stored (the plan must still hold the array)."""
        if self.source is None:
            raise InputError("this plan no longer holds its input array (it was pickled); "
                             "pass the plane to restore_plane")
        return np.asarray(self.source[self.layout.plane_index(lead)])

    def check_out(self, out) -> None:
        """Raise :class:`InputError` unless ``out`` has the output's shape and dtype."""
        lay = self.layout
        shape = tuple(getattr(out, "shape", ()))
        if shape != lay.out_shape:
            raise InputError(f"out has shape {shape}, expected {lay.out_shape} (the input's "
                             f"shape with both spatial axes x{lay.scale})")
        if np.dtype(getattr(out, "dtype", None)) != lay.dtype:
            raise InputError(f"out has dtype {out.dtype}, expected {lay.dtype} (the input's)")
        flags = getattr(out, "flags", None)
        if flags is not None and not getattr(flags, "writeable", True):
            raise InputError("out is read-only (a numpy array with writeable=False, or a memmap "
                             "opened with mode='r'); pass a writable array")

    def attach(self, model: DanModel | str) -> Plan:
        """A copy of the plan that runs ``model`` here: device and precision are resolved again
        from the requested ones (a worker may have a GPU the client lacks).

        ``model`` must be the model the plan was made with (same scale, channels, code length).
        """
        model = _resolve_model(model)
        lay = self.layout
        if (model.scale, model.in_channels) != (lay.scale, lay.in_nc) or (
                self.estimate is not None and self.estimate.code.shape[-1] != model.code_len):
            raise InputError(f"model {model.name!r} (x{model.scale}, {model.in_channels} "
                             "channel(s)) is not the model this plan was prepared for")
        dev = resolve_device(self.requested_device)
        prec = resolve_precision(self.requested_precision, dev, model.network)
        return replace(self, model=model, device=dev, precision=prec,
                       runner=_Runner(model, dev, prec))

    def _ready(self) -> None:
        if self.model is None or self.runner is None:
            raise InputError("this plan was sent without its model; call plan.attach(model) "
                             "before restoring planes with it")


@dataclass
class PlaneResult:
    """One restored plane (see :func:`restore_plane`).

    Attributes
    ----------
    lead : tuple of int
        The plane's index along the leading axes.
    plane : numpy.ndarray or None
        The output plane in the input's dtype and axis order:
        ``out[plan.layout.plane_index(lead)] = plane``. Callers may set it to None once written;
        :func:`finish` does not need it.
    kernels, centres : list
        Per-plane mode: the plane's kernel and its lead index; per-tile: one kernel per tile and
        (lead..., y, x) of the tile centre in input pixels; otherwise empty.
    tiles : int
        Tiles restored (after any out-of-memory retry).
    retries : list of dict
        Out-of-memory retries (plane, new tile_size and tile_overlap).
    estimate_s, restore_s : float
        Seconds spent estimating the plane's kernel (per-plane mode) and restoring it.
    """

    lead: tuple[int, ...]
    plane: np.ndarray | None
    kernels: list = field(default_factory=list)
    centres: list = field(default_factory=list)
    tiles: int = 0
    retries: list = field(default_factory=list)
    estimate_s: float = 0.0
    restore_s: float = 0.0
    consistency: float | None = None
    residual: np.ndarray | None = None


def _spot_kernel(image, layout: Layout, model: DanModel) -> tuple[np.ndarray, dict]:
    """The PSF measured from isolated spots (:mod:`napari_dan.imaging.spots`) on the brightest
    of up to 8 evenly spaced planes (channels averaged), as a kernel on the output grid."""
    from ..imaging.spots import measure_psf

    leads = [tuple(int(i) for i in np.unravel_index(p, layout.lead_shape)) if layout.lead_shape
             else () for p in range(layout.n_planes)]
    picks = sorted({int(round(i)) for i in np.linspace(0, len(leads) - 1, min(len(leads), 8))})
    best, best_level, lead = None, -np.inf, ()
    for i in picks:
        hwc = layout.plane_to_hwc(np.asarray(image[layout.plane_index(leads[i])]))
        g = hwc[..., :layout.colour_channels].astype(np.float64).mean(-1)
        level = float(np.percentile(g, 99.9) - np.median(g))
        if level > best_level:
            best, best_level, lead = g, level, leads[i]
    psf = measure_psf(best if np.issubdtype(layout.dtype, np.floating)
                      else best.round().astype(layout.dtype))
    kernel = psf.kernel(model.scale, model.kernel_size)
    hr = kernel_stats(psf.kernel(model.scale, 4 * model.kernel_size + 1))  # uncropped
    info = {"plane": list(lead), **psf.to_dict(), "summary": psf.summary(),
            "output_grid": {"fwhm_px": hr.fwhm, "fwhm_major_px": hr.fwhm_major,
                            "fwhm_minor_px": hr.fwhm_minor, "angle_deg": hr.angle}}
    return kernel, info


def spot_psf(image, model, channel_axis: int | None = None) -> tuple[np.ndarray, dict]:
    """The PSF measured from isolated spots of ``image``, as ``kernel="spots"`` measures it: a
    Gaussian kernel on the model's output grid and a dict describing the measurement (spots
    used and rejected, FWHM on the input grid, plane). Raises InputError with fewer than 3
    usable spots. Used by the widget to show the measured PSF beside DAN's blind estimate."""
    model = _resolve_model(model)
    image = _as_array(image)
    layout = analyse(image, channel_axis, model.in_channels, model.scale)
    return _spot_kernel(image, layout, model)


def _decide(image, model, channel_axis, tile_size, tile_overlap, kernel_mode, kernel, device,
            precision, compiled: bool = False) -> Plan:
    """The plan without any kernel estimation (that needs progress reporting of its own)."""
    started = time.perf_counter()
    model = _resolve_model(model)
    image = _as_array(image)
    if kernel_mode not in km.KERNEL_MODES:
        raise InputError(f"unknown kernel_mode {kernel_mode!r}; use one of "
                         f"{', '.join(km.KERNEL_MODES)}")
    _check_tile_args(tile_size, tile_overlap)
    layout = analyse(image, channel_axis, model.in_channels, model.scale)
    user = spots = None
    if isinstance(kernel, str):
        if kernel != "spots":
            raise InputError(f"kernel must be an array (a PSF on the output grid) or 'spots' "
                             f"(measured from isolated spots in the image), got {kernel!r}")
        kernel, spots = _spot_kernel(image, layout, model)
    if kernel is not None:
        user = km.user_kernel(kernel, model.pca_basis, model.kernel_mean)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev, model.network)
    if not isinstance(compiled, bool):
        raise InputError(f"compiled must be True or False, got {compiled!r}")
    runner = _Runner(model, dev, prec, compiled)

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
    return Plan(model, layout, dev, prec, norm, mode, tile, overlap, note, estimate=user,
                requested_device=str(device), requested_precision=str(precision),
                spots=spots, started=started, source=image, runner=runner)


def _read_hwc(plan: Plan, lead: tuple[int, ...], plane=None) -> np.ndarray:
    """A plane (read from the plan's array when not given) as checked (H, W, C)."""
    if plane is None:
        plane = plan.read_plane(lead)
    hwc = plan.layout.plane_to_hwc(np.asarray(plane))
    check_finite(hwc, f"plane {lead}" if lead else "")
    return hwc


def _estimate(plan: Plan, planes: dict, prog: _Progress) -> Generator:
    """Full loop on the most textured patches of ``planes`` (lead -> (B, C, H, W) units)."""
    patches = km.select_patches(planes)
    codes, kernels = [], []
    for p in patches:
        prog.check()
        x = planes[p.lead][..., p.y0:p.y1, p.x0:p.x1]
        sr, kernel, code = plan.runner.loop(x)
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


def _sample_leads(plan: Plan, n: int) -> list[tuple[int, ...]]:
    leads = plan.leads
    picks = sorted({int(round(i)) for i in np.linspace(0, len(leads) - 1, min(n, len(leads)))})
    return [leads[i] for i in picks]


def _estimate_global(plan: Plan, prog: _Progress, cache: dict) -> Generator:
    """Kernel for the whole array from a few planes; stored in ``plan.estimate``.

    ``cache`` receives the last sampled plane in network units (the plane most likely needed
    next); the others are freed.
    """
    t0 = time.perf_counter()
    planes = {}
    for lead in _sample_leads(plan, km.ESTIMATION_PLANES):
        planes[lead] = _to_batch(_read_hwc(plan, lead), plan.layout, plan.norm)
    cache.clear()
    last = list(planes)[-1]
    cache[last] = planes[last]
    plan.estimate = yield from _estimate(plan, planes, prog)
    plan.estimate_s += time.perf_counter() - t0
    return plan.estimate


def _restore_tiles(plan: Plan, x: np.ndarray, code: np.ndarray | None,
                   prog: _Progress) -> Generator:
    """Tiles of one plane -> (HR (B, C, sH, sW) float32, tiles, per-tile kernels or None)."""
    _, _, h, w = x.shape
    tiles = make_tiles(h, w, plan.tile, plan.overlap)
    acc = Accumulator(x.shape[0] * x.shape[1], h, w, plan.layout.scale, plan.overlap)
    tile_kernels = []
    for t in tiles:
        prog.check()
        sr, kernel = _run_tile(plan.runner, x[..., t.y0:t.y1, t.x0:t.x1], code)
        acc.add(t, sr.reshape(-1, *sr.shape[-2:]))
        if kernel is not None:
            k = kernel.mean(0)
            tile_kernels.append(k / max(float(k.sum()), 1e-12))
        prog.done += 1
        yield prog.done, prog.total
    hr = acc.result().reshape(x.shape[0], x.shape[1], h * plan.layout.scale,
                              w * plan.layout.scale)
    return hr, tiles, tile_kernels


def _restore_with_retry(plan: Plan, x: np.ndarray, code: np.ndarray | None, prog: _Progress,
                        on_retry: Callable[[int], None], lead: tuple, retries: list) -> Generator:
    """:func:`_restore_tiles`, halving ``plan.tile`` and starting the plane again on
    out-of-memory. ``on_retry(tiles_per_plane)`` lets the caller correct its progress total."""
    h, w = x.shape[-2:]
    while True:
        try:
            return (yield from _restore_tiles(plan, x, code, prog))
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


def _check_consistency(plan: Plan, res: PlaneResult, x: np.ndarray, hr: np.ndarray,
                       kernel: np.ndarray, keep_map: bool) -> None:
    """The plane's relative residual (and, with ``keep_map``, its residual map in input units,
    the plane's layout) from the LR batch ``x`` and the SR batch ``hr`` in network units."""
    from ..imaging.consistency import consistency

    lay = plan.layout
    k = np.asarray(kernel, np.float64)
    k = k / max(k.sum(), 1e-12)
    c = x.shape[0] * x.shape[1]
    rel, rmap = consistency(x.reshape(c, *x.shape[-2:]), hr.reshape(c, *hr.shape[-2:]), k,
                            lay.scale, plan.model.sampling)
    res.consistency = rel
    if keep_map:
        span = (plan.norm.hi - plan.norm.lo).astype(np.float64)
        hwc = _from_batch(rmap.reshape(x.shape), lay).astype(np.float64)
        hwc = (hwc * span[:hwc.shape[-1]]).astype(np.float32)
        if lay.alpha:
            hwc = np.concatenate([hwc, np.zeros((*hwc.shape[:2], 1), np.float32)], axis=-1)
        res.residual = lay.hwc_to_plane(hwc)


def _restore_plane_iter(plan: Plan, lead: tuple, plane, prog: _Progress, *,
                        batch: np.ndarray | None = None,
                        estimate: km.KernelEstimate | None = None,
                        on_retry: Callable[[int], None] | None = None,
                        keep_map: bool = False) -> Generator:
    """Generator behind :func:`restore_plane`; returns a :class:`PlaneResult`.

    ``batch`` is the plane already in network units (saves converting it again), ``estimate``
    a per-plane kernel worked out beforehand.
    """
    plan._ready()
    lay = plan.layout
    lead = tuple(int(i) for i in lead)
    hwc = _read_hwc(plan, lead, plane)
    x = batch if batch is not None else _to_batch(hwc, lay, plan.norm)
    res = PlaneResult(lead, None)
    est = plan.estimate
    if plan.mode == "per-plane":
        if estimate is None:
            t0 = time.perf_counter()
            estimate = yield from _estimate(plan, {lead: x}, prog)
            res.estimate_s = time.perf_counter() - t0
        est = estimate
        res.kernels.append(est.kernel)
        res.centres.append(lead)
    code = None if plan.mode == "per-tile" else est.code
    t0 = time.perf_counter()
    whole = est.whole_sr if est is not None and plan.mode != "user kernel" else None
    if whole is not None and est.patches[0].lead == lead and plan.tile >= max(x.shape[-2:]):
        # one tile = the whole plane = the estimation patch: the loop already produced it
        hr, tiles, tks = whole, make_tiles(lay.height, lay.width, plan.tile, plan.overlap), []
        prog.done += 1
        yield prog.done, prog.total
    else:
        hr, tiles, tks = yield from _restore_with_retry(
            plan, x, code, prog, on_retry or (lambda n: None), lead, res.retries)
    if est is not None:
        est.whole_sr = None  # used at most once; frees the memory
    res.tiles = len(tiles)
    for t, k in zip(tiles, tks, strict=False):  # tks is empty unless per-tile
        res.kernels.append(k)
        res.centres.append((*lead, *t.center))
    _check_consistency(plan, res, x, hr, est.kernel if est is not None else
                       np.mean(tks, axis=0), keep_map)
    out = plan.norm.from_unit(_from_batch(hr, lay), lay.dtype)
    del hr
    if lay.alpha:
        out = np.concatenate([out, _upsample_alpha(hwc[..., 3], lay.scale, lay.dtype)[..., None]],
                             axis=-1)
    res.plane = lay.hwc_to_plane(out)
    res.restore_s = time.perf_counter() - t0
    return res


def prepare(image, model, *, channel_axis: int | None = None, tile_size: int | str = "auto",
            tile_overlap: int | str = "auto", kernel_mode: str = "global",
            kernel: np.ndarray | None = None, device: str = "auto", precision: str = "auto",
            progress: Callable[[int, int], Any] | None = None, cancel=None) -> Plan:
    """Decide everything that concerns the whole array, as :func:`super_resolve` does.

    Checks the input, picks device and precision, computes the value normalisation and tile
    size/overlap, and in ``global`` mode estimates the kernel code (full DAN loop on the most
    textured patches of up to four planes); a user ``kernel`` is projected. Per-plane and per-tile
    kernels are left to :func:`restore_plane`. Arguments as for :func:`super_resolve`;
    ``progress(done, total)`` is called after each estimation patch.

    Returns
    -------
    Plan
        Holds ``image`` (read plane by plane by :func:`restore_plane`); see :class:`Plan`.
    """
    plan = _decide(image, model, channel_axis, tile_size, tile_overlap, kernel_mode, kernel,
                   device, precision)
    if plan.mode == "global":
        prog = _Progress(cancel)
        prog.total = _n_estimation(plan.layout, min(km.ESTIMATION_PLANES, len(plan.leads)))
        _drive(_estimate_global(plan, prog, {}), progress)
    return plan


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
    prog = _Progress(cancel)
    prog.total = plan.tiles_per_plane + (
        _n_estimation(plan.layout, 1) if plan.mode == "per-plane" else 0)
    return _drive(_restore_plane_iter(plan, lead, plane, prog), progress)


def finish(plan: Plan, image, planes: Sequence[PlaneResult], **metadata) -> SRResult:
    """The :class:`SRResult` of a run: kernel(s) and their centres, statistics and metadata.

    Parameters
    ----------
    plan
        The plan every plane was restored with.
    image
        The output array (what ``SRResult.image`` will be).
    planes
        The :class:`PlaneResult` of every plane, in plane order (their ``plane`` may be None).
    **metadata
        Extra or replaced metadata entries (``timing`` is merged).
    """
    lay = plan.layout
    if plan.mode in ("per-plane", "per-tile"):
        ks = [k for p in planes for k in p.kernels]
        if not ks:
            raise InputError(f"no kernels to report: {plan.mode} mode needs the results of "
                             "restore_plane for every plane")
        kernels = np.stack(ks).astype(np.float32)
        centres = np.array([c for p in planes for c in p.centres],
                           np.float64).reshape(len(ks), -1)
        kernel = kernels.mean(0)
    else:
        kernel = plan.estimate.kernel
        kernels = kernel[None].astype(np.float32)
        centres = np.array([(n - 1) / 2 for n in lay.lead_shape] +
                           [(lay.height - 1) / 2, (lay.width - 1) / 2])[None]
    kernel = (kernel / kernel.sum()).astype(np.float32)
    timing = {"estimate_s": plan.estimate_s + sum(p.estimate_s for p in planes),
              "restore_s": sum(p.restore_s for p in planes),
              "total_s": time.perf_counter() - plan.started}
    timing.update(metadata.pop("timing", {}))
    meta = {"model": _model_info(plan.model), "mode": plan.mode, "device": str(plan.device),
            "precision": plan.precision.name, "precision_reason": plan.precision.reason,
            "tile_size": plan.tile, "tile_overlap": plan.overlap,
            "tile_overlap_note": plan.overlap_note, "channels": lay.handling,
            "normalisation": plan.norm.to_dict(), "input_shape": lay.shape,
            "output_shape": lay.out_shape, "dtype": str(lay.dtype), "planes": lay.n_planes,
            "spatial_axes": lay.spatial_axes, "channel_axis": lay.channel_axis,
            "tiles_per_plane": plan.tiles_per_plane, "tiles": sum(p.tiles for p in planes),
            "oom_retries": [r for p in planes for r in p.retries], "lazy": False,
            "timing": timing}
    est = plan.estimate
    if est is not None and est.patches and plan.mode == "global":
        meta["estimation_patches"] = [vars(p) for p in est.patches]
    if plan.mode == "user kernel":
        meta["kernel_projection_error"] = est.projection_error
        meta["kernel_source"] = "spots" if plan.spots else "user"
    if plan.spots:
        meta["spots"] = plan.spots
    rels = [p.consistency for p in planes if p.consistency is not None]
    if rels:
        meta["consistency"] = {
            "relative_residual": float(np.sqrt(np.mean(np.square(rels)))),
            "per_plane": [float(r) for r in rels], "sampling": plan.model.sampling,
            "note": "||input - D(SR * kernel)|| / ||input|| in network units, interior; "
                    "includes the input's noise"}
    residual = metadata.pop("residual", None)
    meta.update(metadata)
    return SRResult(image, kernel, kernels, centres, kernel_stats(kernel), meta, residual)


def _model_info(model: DanModel) -> dict:
    return {"name": model.name, "architecture": model.architecture, "scale": model.scale,
            "in_channels": model.in_channels, "kernel_size": model.kernel_size,
            "iterations": model.iterations, "source": model.source}


def _run(image, model, channel_axis, tile_size, tile_overlap, kernel_mode, kernel, device,
         precision, cancel, out, threads=None, compiled=False, residual=False) -> Generator:
    plan = _decide(image, model, channel_axis, tile_size, tile_overlap, kernel_mode, kernel,
                   device, precision, compiled)
    prog = _Progress(cancel)
    if out is not None:
        plan.check_out(out)
    policy = ThreadPolicy(threads, plan.device)
    if is_dask(image) and out is None and plan.mode != "per-tile":
        from .lazy import lazy_super_resolve

        return (yield from lazy_super_resolve(plan, prog))

    with policy:
        return (yield from _run_planes(plan, prog, out, policy, residual))


def _run_planes(plan: Plan, prog: _Progress, out, policy: ThreadPolicy,
                residual: bool = False) -> Generator:
    """Estimation (global mode) and every plane, in order, into ``out`` or a new array."""
    lay = plan.layout
    leads = plan.leads
    n_tiles = plan.tiles_per_plane
    per_plane_est = 0
    cache: dict = {}
    if plan.mode == "global":
        prog.total = _n_estimation(lay, min(km.ESTIMATION_PLANES, len(leads))) + \
            n_tiles * len(leads)
        policy.update()
        yield from _estimate_global(plan, prog, cache)
    elif plan.mode == "per-plane":
        per_plane_est = _n_estimation(lay, 1)
        prog.total = (per_plane_est + n_tiles) * len(leads)
    else:
        prog.total = n_tiles * len(leads)

    result = out if out is not None else np.empty(lay.out_shape, lay.dtype)
    rmap = np.zeros(lay.shape, np.float32) if residual else None
    parts: list[PlaneResult] = []
    for i, lead in enumerate(leads):
        prog.check()
        policy.update()
        x = cache.pop(lead, None)
        cache.clear()
        remaining = len(leads) - i

        def on_retry(new_per_plane: int, remaining=remaining) -> None:
            prog.total = prog.done + new_per_plane * remaining + \
                per_plane_est * (remaining - 1) * (plan.mode == "per-plane")

        part = yield from _restore_plane_iter(plan, lead, None, prog, batch=x, on_retry=on_retry,
                                              keep_map=residual)
        if rmap is not None:
            rmap[lay.plane_index(lead)] = part.residual
            part.residual = None
        t0 = time.perf_counter()
        try:
            result[lay.plane_index(lead)] = part.plane
        except (ValueError, TypeError, PermissionError) as e:
            if out is None:
                raise
            raise InputError(f"cannot write into out ({type(e).__name__}: {e})") from None
        part.plane = None  # written; only its kernels are kept
        part.restore_s += time.perf_counter() - t0
        prog.planes_written += 1
        parts.append(part)
    extra = {} if plan.runner.compiled is None else {"compiled": plan.runner.compiled.note}
    return finish(plan, result, parts, steps=prog.done, threads=policy.summary(),
                  residual=rmap, **extra)


def super_resolve_iter(image, model, *, channel_axis: int | None = None,
                       tile_size: int | str = "auto", tile_overlap: int | str = "auto",
                       kernel_mode: str = "global", kernel: np.ndarray | None = None,
                       device: str = "auto", precision: str = "auto",
                       progress: Callable[[int, int], Any] | None = None, cancel=None,
                       out=None, threads: int | str | None = None, compiled: bool = False,
                       residual: bool = False) -> Generator[tuple[int, int], None, SRResult]:
    """Generator form of :func:`super_resolve`: yields ``(done, total)`` after every estimation
    patch and every tile, and returns the :class:`SRResult` (``StopIteration.value``).

    Meant for thread workers (napari's ``thread_worker``): ``result = yield from
    super_resolve_iter(...)``. ``progress`` is called as well when given.
    """
    gen = _run(image, model, channel_axis, tile_size, tile_overlap, kernel_mode, kernel, device,
               precision, cancel, out, threads, compiled, residual)
    return (yield from _relay(gen, progress))


def super_resolve(image, model, *, channel_axis: int | None = None,
                  tile_size: int | str = "auto", tile_overlap: int | str = "auto",
                  kernel_mode: str = "global", kernel: np.ndarray | None = None,
                  device: str = "auto", precision: str = "auto",
                  progress: Callable[[int, int], Any] | None = None, cancel=None,
                  out=None, threads: int | str | None = None,
                  compiled: bool = False, residual: bool = False) -> SRResult:
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
    kernel : (k, k) array or "spots", optional
        A known PSF on the output (HR) grid, odd sides: non-blind, the Estimator is skipped.
        "spots": the PSF measured from isolated spots (beads, puncta) of the image itself
        (:func:`napari_dan.imaging.spots.measure_psf` on the brightest of up to 8 planes),
        as a Gaussian on the output grid; reported in ``metadata["spots"]``.
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
    threads : int, "auto" or None
        CPU threads for PyTorch during the call (restored afterwards): a number, "auto" (the
        cores other processes leave idle, re-measured before every plane, at most PyTorch's
        current count; what the CLI and the widget use), or None (default: PyTorch's setting
        as it is). See :mod:`napari_dan.engine.threads`.
    compiled : bool
        Restore tiles through ``torch.compile`` (fused element-wise steps; faster per tile, but
        a compilation per tile shape and process, and a C compiler is needed; falls back
        to the eager network when compiling fails). Off by default; see docs/engine.md.
    residual : bool
        Also return the residual map of the consistency check (``SRResult.residual``); the
        relative residual per plane is always in ``metadata["consistency"]``.

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
                             cancel=cancel, out=out, threads=threads, compiled=compiled,
                             residual=residual)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value

