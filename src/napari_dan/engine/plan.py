"""What is decided for a whole array before any plane is restored: the :class:`Plan`.

:func:`decide` checks the input (:mod:`.normalize`), picks device and precision
(:mod:`.devices`), the tile size and overlap (:mod:`.tiling`), projects a known kernel (or
measures one from isolated spots) and computes the value normalisation. :class:`NetworkRunner`
makes the network calls on numpy batches; :class:`PlaneResult` is what restoring a plane gives."""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DanError, InputError
from ..imaging.psf import Optics
from ..model import DanModel, load_model
from ..model.danv2 import reads_sr
from ..model.kernels import kernel_stats
from .devices import (
    Precision,
    autocast,
    memory_budget,
    network_on,
    resolve_device,
    resolve_precision,
)
from .kernel_modes import PROJECTION_WARNING, KernelEstimate, user_kernel
from .normalize import (
    Layout,
    Normalisation,
    analyse,
    cast,
    check_finite,
    colour_model_warning,
    compute_normalisation,
    few_levels_warning,
)
from .options import KERNEL_MODES, SROptions
from .runtime import CompiledRestorer, OpenVinoNetwork, openvino_version, resolve_runtime
from .tiling import auto_overlap, auto_tile_size, make_tiles

__all__ = ["NetworkRunner", "run_tile", "to_batch", "from_batch", "upsample_alpha",
           "resolve_model", "as_array", "check_tile_args", "is_dask", "Plan", "PlaneResult",
           "read_plane_hwc", "spot_kernel", "spot_psf", "default_iterations", "resolve_iterations",
           "KERNEL_VIEWS", "check_views", "mirror", "unmirror", "resolve_views",
           "decide"]


class NetworkRunner:
    """Network calls on one device, precision and runtime (:mod:`.runtime`: "torch" or
    "openvino"); numpy (B, C, h, w) float32 in and out."""

    def __init__(self, model: DanModel, device: torch.device, precision: Precision,
                 compiled: bool = False, runtime: str = "torch"):
        self.net = network_on(model.network, device)
        self.device, self.precision, self.runtime = device, precision, runtime
        self.compiled = CompiledRestorer.for_network(self.net) if compiled else None
        self.ov = OpenVinoNetwork.for_network(self.net) if runtime == "openvino" else None

    @property
    def note(self) -> str:
        """What runs the network, for the result's metadata."""
        if self.ov is not None:
            return f"openvino {openvino_version()}"
        return "torch" if self.compiled is None else f"torch ({self.compiled.note})"

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        # NHWC input makes the convolutions pick their faster channels_last kernels (CPU too)
        return t.contiguous(memory_format=torch.channels_last)

    def estimate(self, x: np.ndarray, rounds: int, settle: float | None = None,
                 views: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
        """``rounds`` rounds of the DAN loop on the batch ``x``: the last round's kernel
        (B, k, k), its code (B, L), the code the image is then restored with, and the rounds
        run. ``settle``: stop after a round (the second or later) that moved every kernel of the
        batch by less than this L1 distance (normalised kernels; 0 = equal, 2 = disjoint).

        ``views`` > 1: the loop runs on that many mirror images of ``x`` (:func:`mirror`: 4 =
        the flips, 8 = with the transposes), each kernel is mirrored back, and the kernel is
        their mean and the code its code (the PCA encoding is linear, so for DANv2 this is
        the mean of the views' codes). The Estimator is not mirror-symmetric; averaging its
        views removes much of its scatter (docs/benchmarks.md). The rounds run: the most of
        any view."""
        if views != 1:
            check_views(views)
            ks, done = [], 0
            for v in range(views):
                k, _, n = self.estimate(np.ascontiguousarray(mirror(x, v)), rounds, settle)
                ks.append(unmirror(k, v))
                done = max(done, n)
            kernel = np.mean(ks, axis=0, dtype=np.float64)
            kernel /= np.clip(kernel.sum(axis=(-2, -1), keepdims=True), 1e-12, None)
            kernel = kernel.astype(np.float32)
            with torch.inference_mode():
                code = self.net.encode(torch.from_numpy(kernel).to(self.net.encoder.device))
            return kernel, code.float().cpu().numpy(), done
        parts = {}
        if self.ov is not None:
            parts = dict(zip(("restorer", "estimator"), self.ov.parts(self.precision),
                             strict=True))
        with torch.inference_mode(), autocast(self.device, self.precision) if self.ov is None \
                else contextlib.nullcontext():
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if self.ov is not None \
                else self._tensor(x)
            code, prev, done = None, None, 0
            once = not reads_sr(self.net) and rounds > 0
            if once:
                # an Estimator of the LR image alone finds the same kernel every round: one
                # call, and no Restorer pass to feed it
                flat = self.net.Estimator(None, t)
                k = flat.reshape(flat.shape[0], self.net.kernel_size, self.net.kernel_size)
                code, done = self.net.encode(k), 1
            while not once and done < rounds:  # one round at a time, as forward_all(rounds=...)
                _, kernels, codes = self.net.forward_all(t, code, rounds=1, **parts)
                k, code, done = kernels[-1], codes[-1], done + 1
                if settle is not None:
                    flat = k.float().reshape(k.shape[0], -1)
                    flat = flat / flat.sum(1, keepdim=True).clamp_min(1e-12)
                    if prev is not None and float((flat - prev).abs().sum(1).max()) < settle:
                        break
                    prev = flat
        kernel = k.float().cpu().numpy()
        if not np.all(np.isfinite(kernel)) or not np.all(np.clip(kernel, 0, None).reshape(
                kernel.shape[0], -1).sum(1) > 0):
            raise DanError("the network produced no usable kernel on this image (NaN, Inf or "
                           f"nothing positive, in {self.precision.name}); "
                           "try precision='fp32', or check the image's values")
        return kernel, code.float().cpu().numpy(), done

    def restore(self, x: np.ndarray, code: np.ndarray) -> np.ndarray:
        """The Restorer on the batch ``x`` with one code (L,) for every entry, or one per entry
        (B, L)."""
        c = np.array(code, np.float32).reshape(-1, np.shape(code)[-1])
        if c.shape[0] != x.shape[0]:
            c = np.repeat(c, x.shape[0], axis=0)
        if self.ov is not None:
            return self.ov.restore(x, c, self.precision)
        with torch.inference_mode(), autocast(self.device, self.precision):
            t = self._tensor(x)
            c = torch.from_numpy(c).to(self.device)
            sr = self.compiled(t, c) if self.compiled is not None else self.net.restore(t, c)
            return sr.float().cpu().numpy()


#: ``SROptions.kernel_views``: the numbers of mirror images an estimate may average
KERNEL_VIEWS = (1, 4, 8)


def check_views(views) -> int:
    if isinstance(views, bool) or not isinstance(views, (int, np.integer)) \
            or int(views) not in KERNEL_VIEWS:
        raise InputError(f"kernel_views must be 'auto' or one of {', '.join(map(str, KERNEL_VIEWS))} "
                         f"(mirror images of each estimation patch), got {views!r}")
    return int(views)


def mirror(x: np.ndarray, view: int) -> np.ndarray:
    """View ``view`` (0-7) of an array's last two axes: bit 1 flips rows, bit 2 flips columns,
    bit 4 transposes (first). View 0 is ``x`` itself."""
    if view & 4:
        x = np.swapaxes(x, -1, -2)
    if view & 1:
        x = x[..., ::-1, :]
    if view & 2:
        x = x[..., ::-1]
    return x


def unmirror(k: np.ndarray, view: int) -> np.ndarray:
    """The inverse of :func:`mirror`: a kernel estimated on ``mirror(x, view)`` back in ``x``'s
    frame."""
    if view & 2:
        k = k[..., ::-1]
    if view & 1:
        k = k[..., ::-1, :]
    if view & 4:
        k = np.swapaxes(k, -1, -2)
    return k


def resolve_views(views, model: DanModel, mode: str) -> int:
    """``SROptions.kernel_views`` as a number: "auto" is 4 for napari-dan's microscopy models
    (``model.sampling == "bin"``) in global and per-plane mode (estimation there works on a few
    patches, so four times that is a fixed few seconds, and it halves their synthetic FWHM
    error; docs/models.md, session 14), and 1 otherwise: in per-tile mode (it would multiply
    the cost of every tile), for the photo models (their estimates and benchmark numbers stay
    as they were measured) and for the authors' checkpoints (which run as released)."""
    if isinstance(views, str) and views == "auto":
        if _released(model) or mode == "per-tile" or model.sampling != "bin":
            return 1
        return 4
    return check_views(views)


def run_tile(runner: NetworkRunner, x: np.ndarray, code: np.ndarray | None, rounds: int,
             settle: float | None = None, views: int = 1):
    """One tile: the Restorer with a fixed code, or with the code of ``rounds`` rounds of the
    DAN loop on the tile itself when ``code`` is None (``settle``, ``views``: see
    :meth:`NetworkRunner.estimate`).

    Returns (sr, kernel (B, k, k) or None). Module level so tests can inject failures (an OOM).
    """
    if code is None:
        kernel, code, _ = runner.estimate(x, rounds, settle, views)
        return runner.restore(x, code), kernel
    return runner.restore(x, code), None


def to_batch(hwc: np.ndarray, layout: Layout, norm: Normalisation) -> np.ndarray:
    """(H, W, C) raw plane -> (B, in_nc, H, W) float32 in network units (alpha dropped)."""
    u = norm.to_unit(hwc[..., : layout.colour_channels])
    chw = np.moveaxis(u, -1, 0)
    if layout.rgb and layout.in_nc == 3:
        return np.ascontiguousarray(chw[None])
    if layout.in_nc == 1:
        return np.ascontiguousarray(chw[:, None])
    return np.ascontiguousarray(np.repeat(chw[:, None], 3, axis=1))


def from_batch(hr: np.ndarray, layout: Layout) -> np.ndarray:
    """(B, in_nc, sH, sW) -> (sH, sW, C) colour channels in network units."""
    if layout.rgb and layout.in_nc == 3:
        chw = hr[0]
    elif layout.in_nc == 1:
        chw = hr[:, 0]
    else:
        chw = hr.mean(1)
    return np.moveaxis(chw, 0, -1)


def upsample_alpha(alpha: np.ndarray, scale: int, dtype: np.dtype) -> np.ndarray:
    """Bicubic upsampling of an alpha plane, clipped to its own range (no overshoot)."""
    a = alpha.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(a))[None, None]
    up = F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False)[0, 0].numpy()
    return cast(np.clip(up, a.min(), a.max()), dtype)


def resolve_model(model) -> DanModel:
    if isinstance(model, DanModel):
        return model
    return load_model(model)


def as_array(image):
    """Arrays (numpy, dask, zarr, TiffArray) as they are; nested lists, CPU torch tensors and
    the like as numpy. Refused with what to do: masked arrays with values masked (the mask would
    be ignored), dask arrays of unknown shape."""
    if isinstance(image, np.ma.MaskedArray):
        if np.ma.is_masked(image):
            raise InputError("the image is a masked array with masked values, which "
                             "super-resolution cannot leave out; fill them first "
                             "(image.filled(value)) or pass image.data")
        return np.ma.getdata(image)
    if all(hasattr(image, a) for a in ("shape", "dtype", "__getitem__")):
        shape = image.shape
        if any(not isinstance(n, (int, np.integer)) for n in shape):
            raise InputError(f"the image's shape {tuple(shape)} is not known (a dask array with "
                             "unknown chunk sizes, e.g. after boolean indexing); call "
                             ".compute_chunk_sizes() on it first")
        try:
            np.dtype(image.dtype)
            return image
        except TypeError:  # a torch tensor and the like: its own dtype type
            pass
    try:
        return np.asarray(image)
    except (ValueError, TypeError, RuntimeError) as e:
        raise InputError(f"cannot use a {type(image).__name__} as an image ({e}); pass a numpy, "
                         "dask or zarr array") from None


def check_tile_args(tile_size, tile_overlap) -> None:
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
        The value map of the whole array (input dtype <-> network units); in per-plane mode
        each plane has its own (:meth:`norm_of`).
    mode : str
        "global", "per-plane", "per-tile" or "user kernel".
    tile, overlap : int
        Tile side and overlap in LR pixels (the tile side halves on out-of-memory).
    estimate : KernelEstimate or None
        The code every tile is restored with: global (once estimated) or the user kernel; None in
        per-plane and per-tile mode, where each plane or tile gets its own.
    iterations : int
        Rounds of the DAN loop before a kernel's code is used (``SROptions.iterations``); with
        ``settle`` (``iterations="settled"``) at most that many, stopping once the kernel
        moves less than ``settle`` in a round.
    views : int
        Mirror images of each estimation patch (or tile) whose kernels are averaged
        (``SROptions.kernel_views``, :meth:`NetworkRunner.estimate`).

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
    estimate: KernelEstimate | None = None
    iterations: int = 3
    settle: float | None = None
    views: int = 1
    requested_device: str = "auto"
    requested_precision: str = "auto"
    requested_runtime: str = "torch"
    estimate_s: float = 0.0
    spots: dict | None = None
    optics: dict | None = None  # kernel=Optics(...): what the PSF came from (Optics.kernel)
    started: float = field(default_factory=time.perf_counter)
    source: Any = field(default=None, repr=False)
    runner: NetworkRunner | None = field(default=None, repr=False)
    plane_norms: dict = field(default_factory=dict, repr=False)

    @property
    def per_plane_norm(self) -> bool:
        """True when each plane gets its own value map: every stack, in every kernel mode,
        except 8-bit data for a photo model, which is always /255."""
        return self.layout.n_planes > 1 and self.norm.method != "uint8/255"

    def norm_of(self, lead: tuple[int, ...], hwc: np.ndarray | None = None) -> Normalisation:
        """The value map of one plane: its own percentiles for a plane of a stack (each plane
        is seen as the network was trained, a field by its own range; the tiles of a plane
        share it), else the array's. ``hwc``: the plane, if read."""
        if not self.per_plane_norm:
            return self.norm
        lead = tuple(int(i) for i in lead)
        if lead not in self.plane_norms:
            plane = (lambda _: hwc) if hwc is not None else (lambda ld: read_plane_hwc(self, ld))
            self.plane_norms[lead] = compute_normalisation(plane, self.layout, stretch_uint8=True,
                                                           leads=[lead])
        return self.plane_norms[lead]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(model=None, source=None, runner=None)
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
        model = resolve_model(model)
        lay = self.layout
        if (model.scale, model.in_channels) != (lay.scale, lay.in_nc) or (
                self.estimate is not None and self.estimate.code.shape[-1] != model.code_len):
            raise InputError(f"model {model.name!r} (x{model.scale}, {model.in_channels} "
                             "channel(s)) is not the model this plan was prepared for")
        dev = resolve_device(self.requested_device)
        rt = resolve_runtime(self.requested_runtime, dev, self.requested_precision, False)
        prec = resolve_precision(self.requested_precision, dev, model.network, rt)
        return replace(self, model=model, device=dev, precision=prec,
                       runner=NetworkRunner(model, dev, prec, runtime=rt))

    def _ready(self) -> None:
        if self.model is None or self.runner is None:
            raise InputError("this plan was sent without its model; use the copy that "
                             "plan.attach(model) returns (plan = plan.attach(model))")


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
    snrs : list of float
        Beside ``kernels``: the signal-to-noise ratio of the field each kernel was estimated
        from (:func:`napari_dan.imaging.camera.signal_to_noise`).
    tiles : int
        Tiles restored (after any out-of-memory retry).
    retries : list of dict
        Out-of-memory retries (plane, new tile_size and tile_overlap).
    estimate_s, restore_s : float
        Seconds spent estimating the plane's kernel (per-plane mode) and restoring it.
    norm : Normalisation or None
        The plane's own value map when it has one (per-plane mode), else None.
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
    norm: Normalisation | None = None
    rounds: list = field(default_factory=list)  # per-plane mode: rounds run per patch
    snrs: list = field(default_factory=list)  # signal-to-noise of what each kernel came from


def read_plane_hwc(plan: Plan, lead: tuple[int, ...], plane=None) -> np.ndarray:
    """A plane (read from the plan's array when not given) as checked (H, W, C)."""
    if plane is None:
        plane = plan.read_plane(lead)
    hwc = plan.layout.plane_to_hwc(np.asarray(plane))
    check_finite(hwc, f"plane {lead}" if lead else "")
    return hwc


def spot_kernel(image, layout: Layout, model: DanModel) -> tuple[np.ndarray, dict]:
    """The PSF measured from isolated spots (:mod:`napari_dan.imaging.spots`) on the brightest
    of up to 8 evenly spaced planes (channels averaged), as a kernel on the output grid."""
    from ..imaging.spots import measure_psf

    leads = [tuple(int(i) for i in np.unravel_index(p, layout.lead_shape)) if layout.lead_shape
             else () for p in range(layout.n_planes)]
    picks = sorted({int(round(i)) for i in np.linspace(0, len(leads) - 1, min(len(leads), 8))})
    best, best_level, lead = None, -np.inf, ()
    for i in picks:
        hwc = layout.plane_to_hwc(np.asarray(image[layout.plane_index(leads[i])]))
        check_finite(hwc, f"plane {leads[i]}" if leads[i] else "")
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


#: a known kernel this much narrower than the narrowest, or wider than the widest PSF a model
#: was trained on gets a note (its restoration is an extrapolation)
KNOWN_KERNEL_MARGIN = 1.25


def known_kernel_note(fwhm: float, model: DanModel, what: str) -> str | None:
    """A sentence when a known kernel (``what``: "the PSF given", "the spots PSF", "the optics'
    PSF"; FWHM in output-grid px, uncropped) lies outside the PSFs the model was trained on
    (None also when the width is not a number: :func:`user_kernel` then says what is wrong)."""
    rng = model.trained_fwhm_range
    if rng is None or not np.isfinite(fwhm) or (
            rng[0] / KNOWN_KERNEL_MARGIN <= fwhm <= rng[1] * KNOWN_KERNEL_MARGIN):
        return None
    wide = fwhm > rng[1]
    return (f"{what} ({fwhm:.2f} px on the output grid) is {'wider' if wide else 'narrower'} "
            f"than any PSF {model.name} was trained on ({rng[0]:.1f}-{rng[1]:.1f} px), so the "
            "result is an extrapolation" + ("" if model.sampling != "bin" else ": "
            + ("the image is oversampled for this PSF (the kernel is also cut to the model's "
               f"{model.kernel_size} px); a model of a smaller scale, or the image binned first, "
               "suits it better" if wide else
               "the camera's pixels are coarse for this PSF; a model of a larger scale suits it "
               "better")))


def optics_kernel(optics: Optics, model: DanModel) -> tuple[np.ndarray, dict]:
    """The PSF of ``optics`` on the model's output grid, and what it is (``Optics.kernel``)."""
    return optics.kernel(model.scale, model.kernel_size)


def _kernel_fwhm(kernel) -> float:
    """FWHM of a kernel given as an array (checked by :func:`user_kernel` afterwards)."""
    try:
        k = np.clip(np.asarray(kernel, dtype=np.float64), 0, None)
        return float(kernel_stats(k / k.sum()).fwhm) if k.ndim == 2 and k.sum() > 0 else np.nan
    except (TypeError, ValueError):
        return np.nan


def spot_psf(image, model, channel_axis: int | None = None) -> tuple[np.ndarray, dict]:
    """The PSF measured from isolated spots of ``image``, as ``kernel="spots"`` measures it: a
    Gaussian kernel on the model's output grid and a dict describing the measurement (spots
    used and rejected, FWHM on the input grid, plane). Raises InputError with fewer than 3
    usable spots. Used by the widget to show the measured PSF beside DAN's blind estimate."""
    model = resolve_model(model)
    image = as_array(image)
    layout = analyse(image, channel_axis, model.in_channels, model.scale)
    return spot_kernel(image, layout, model)


def _released(model: DanModel) -> bool:
    """True for the authors' checkpoints (their image is reproduced exactly)."""
    return model.info.get("format") == "official"


def default_iterations(model: DanModel) -> int:
    """The most rounds ``iterations="auto"`` (and "settled") runs for ``model``.

    The authors' checkpoints: ``loop - 1``, so the image is the one their released forward pass
    returns (``R(lr, code_{L-1})``). Models trained by napari-dan: ``loop``, the image restored
    with the loop's last kernel, the kernel reported (the same estimation cost: the last round
    ran anyway to report that kernel). Their Restorer learned mostly from true kernels, and
    side by side the last kernel restores better images: +1.5 dB mean on the microscopy fields
    for dan-x2-fluo, whose loop alternates between better and worse kernels from round to round
    (docs/benchmarks.md, ``benchmarks/iterations.py``)."""
    loop = int(model.network.loop)
    return max(1, loop - 1) if _released(model) else loop


#: ``iterations="settled"``: stop once a round moves the kernel by less than this (L1 distance of
#: the normalised kernels, 0..2); measured in docs/benchmarks.md
SETTLED_L1 = 0.05


def resolve_iterations(iterations, model: DanModel) -> tuple[int, float | None]:
    """``SROptions.iterations`` as (most rounds, settle threshold or None): "settled" is
    :func:`default_iterations` rounds at most, stopping after the first round (from the second
    on) that moved the kernel by less than ``SETTLED_L1``; "auto" is "settled" for napari-dan's
    models (side by side it changed no model's mean PSNR by more than 0.004 dB and cut the
    estimation by 16-47%, docs/benchmarks.md) and exactly ``loop - 1`` rounds for the authors'
    checkpoints (their released image); an int from 1 to ``loop`` is that many rounds."""
    loop = int(model.network.loop)
    if isinstance(iterations, str) and iterations in ("auto", "settled"):
        settle = None if iterations == "auto" and _released(model) else SETTLED_L1
        return default_iterations(model), settle
    if isinstance(iterations, (int, np.integer)) and not isinstance(iterations, bool) \
            and 1 <= iterations <= loop:
        return int(iterations), None
    raise InputError(f"iterations must be 'auto', 'settled' or an int from 1 to {loop} (this "
                     f"model unrolls {loop} rounds), got {iterations!r}")


def decide(image, model, opts: SROptions) -> Plan:
    """The plan without any kernel estimation (that needs progress reporting of its own)."""
    started = time.perf_counter()
    model = resolve_model(model)
    image = as_array(image)
    kernel_mode, kernel = opts.kernel_mode, opts.kernel
    tile_size, tile_overlap = opts.tile_size, opts.tile_overlap
    device, precision, compiled = opts.device, opts.precision, opts.compiled
    if kernel_mode not in KERNEL_MODES:
        raise InputError(f"unknown kernel_mode {kernel_mode!r}; use one of "
                         f"{', '.join(KERNEL_MODES)}")
    check_tile_args(tile_size, tile_overlap)
    iterations, settle = resolve_iterations(opts.iterations, model)
    layout = analyse(image, opts.channel_axis, model.in_channels, model.scale)
    user = spots = optics = None
    if isinstance(kernel, str):
        if kernel != "spots":
            raise InputError(f"kernel must be an array (a PSF on the output grid), 'spots' "
                             f"(measured from isolated spots in the image) or an Optics "
                             f"(the PSF of an objective), got {kernel!r}")
        kernel, spots = spot_kernel(image, layout, model)
    elif isinstance(kernel, Optics):
        kernel, optics = optics_kernel(kernel, model)
    if kernel is not None:
        # one check of a known kernel's width, whatever it came from
        what, fw = (("the optics' PSF", optics["fwhm_px"]) if optics else
                    ("the spots PSF", spots["output_grid"]["fwhm_px"]) if spots else
                    ("the PSF given", _kernel_fwhm(kernel)))
        note = known_kernel_note(fw, model, what)
        user = user_kernel(kernel, model.pca_basis, model.kernel_mean, warn=note is None,
                           hint=optics is None and spots is None)
        if note is not None:
            if (user.projection_error or 0) > PROJECTION_WARNING:
                # one warning, but the kernel actually used, when it differs, is named too
                note += (f"; the model uses its projection onto the kernels it knows, which "
                         f"misses {100 * user.projection_error:.0f}% of it and reads "
                         f"{kernel_stats(user.kernel).fwhm:.2f} px")
            warnings.warn(note, UserWarning, stacklevel=4)
            (optics or spots or {})["note"] = note
    dev = resolve_device(device)
    if not isinstance(compiled, bool):
        raise InputError(f"compiled must be True or False, got {compiled!r}")
    if not isinstance(opts.residual, (bool, np.bool_)):
        raise InputError(f"residual must be True or False, got {opts.residual!r}")
    runtime = resolve_runtime(opts.runtime, dev, precision, compiled)
    prec = resolve_precision(precision, dev, model.network, runtime)
    runner = NetworkRunner(model, dev, prec, compiled, runtime)

    def read_hwc(lead: tuple[int, ...]) -> np.ndarray:
        hwc = layout.plane_to_hwc(np.asarray(image[layout.plane_index(lead)]))
        check_finite(hwc, f"plane {lead}" if lead else "")
        return hwc

    norm = compute_normalisation(read_hwc, layout, stretch_uint8=model.sampling == "bin")
    if (few := few_levels_warning(layout, norm)) is not None:
        warnings.warn(few, UserWarning, stacklevel=4)
    if (colour := colour_model_warning(layout, model.name)) is not None:
        warnings.warn(colour, UserWarning, stacklevel=4)
    mode = "user kernel" if user is not None else kernel_mode
    views = resolve_views(opts.kernel_views, model, mode)
    if tile_overlap == "auto":
        code = None if user is None else torch.from_numpy(user.code)
        overlap = auto_overlap(runner.net, None if code is None else code.to(dev))
        note = "auto (probe of the model)"
    else:
        overlap, note = int(tile_overlap), f"{int(tile_overlap)} asked for"
    if tile_size == "auto":
        tile = auto_tile_size(model.network, layout.batch, memory_budget(dev), overlap,
                              full_loop=mode == "per-tile")
    else:
        tile = int(tile_size)
    if 2 * overlap + 8 > tile:  # a tile needs a core that no neighbour's ramp covers
        wanted, overlap = overlap, max(0, (tile - 8) // 2)
        note += f"; reduced to {overlap} to fit tile_size {tile}"
        if max(layout.height, layout.width) > tile:  # tiled: the cut shows as seams
            warnings.warn(f"tile_size {tile} leaves room for an overlap of only {overlap} px, "
                          f"less than the {wanted} px the network's output depends on: seams "
                          f"may show between tiles; use tile_size >= {2 * wanted + 8} (or "
                          "'auto')", UserWarning, stacklevel=4)
    return Plan(model, layout, dev, prec, norm, mode, tile, overlap, note, estimate=user,
                iterations=iterations, settle=settle, views=views,
                requested_device=str(device), requested_precision=str(precision),
                requested_runtime=str(opts.runtime),
                spots=spots, optics=optics, started=started, source=image,
                runner=runner)
