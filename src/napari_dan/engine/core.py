"""``super_resolve`` and ``super_resolve_iter``: the one routine every front end calls, and the
building blocks it is made of.

Flow: :func:`prepare` decides everything about the whole array (:func:`.plan.decide`: input,
device, precision, tiles, normalisation, a known kernel) and works out the global kernel code
(:mod:`.estimation`) into a :class:`~.plan.Plan`; :func:`.restoration.restore_plane` then
restores one plane tile by tile (per-plane mode: after estimating its kernel), checks it and maps
it back to the input's dtype; :func:`.result.finish` gathers the kernels and metadata into the
:class:`~.result.SRResult`. ``super_resolve_iter`` is exactly
these steps over every plane (writing each into the output); the lazy dask path
(:mod:`.lazy`) and the cluster runner (:mod:`napari_dan.distributed`) use the same steps.

Progress counts work units: one per estimation patch (full DAN loop) and one per tile; the
generator yields ``(done, total)`` after each. ``cancel`` is checked before every unit.

Cancellation and ``out``: a plane is assembled in memory and written into the output only when
all its tiles are done, so after :class:`~napari_dan.errors.Cancelled` (or any error) ``out`` holds
complete planes for every plane before the one being worked on and untouched contents for the rest;
the exception's message says how many planes were written. Without ``out`` nothing is returned.

Out of memory: see :mod:`.restoration`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from ..errors import InputError
from .estimation import (
    estimate_global,
    n_estimation,
)
from .kernel_modes import ESTIMATION_PLANES
from .options import SROptions
from .plan import (
    Plan,
    PlaneResult,
    decide,
    is_dask,
)
from .progress import (
    Progress,
    drive,
    relay,
)
from .restoration import (
    restore_plane_iter,
)
from .result import (
    SRResult,
    finish,
)
from .threads import ThreadPolicy

__all__ = ["prepare", "_run", "_run_planes", "super_resolve_iter", "super_resolve"]


def prepare(image, model, options: SROptions | None = None, *,
            progress: Callable[[int, int], Any] | None = None, cancel=None, **settings) -> Plan:
    """Decide everything that concerns the whole array, as :func:`super_resolve` does.

    Checks the input, picks device and precision, computes the value normalisation and tile
    size/overlap, and in ``global`` mode estimates the kernel code (full DAN loop on the most
    textured patches of up to four planes); a user ``kernel`` is projected. Per-plane and per-tile
    kernels are left to :func:`restore_plane`. Arguments as for :func:`super_resolve`
    (``threads``, ``compiled`` and ``residual`` are the caller's business here);
    ``progress(done, total)`` is called after each estimation patch.

    Returns
    -------
    Plan
        Holds ``image`` (read plane by plane by :func:`restore_plane`); see :class:`Plan`.
    """
    plan = decide(image, model, SROptions.build(options, **settings))
    if plan.mode == "global":
        prog = Progress(cancel)
        prog.total = n_estimation(plan.layout, min(ESTIMATION_PLANES, len(plan.leads)))
        drive(estimate_global(plan, prog, {}), progress)
    return plan


def _run(image, model, opts: SROptions, cancel, out) -> Generator:
    plan = decide(image, model, opts)
    prog = Progress(cancel)
    if out is not None:
        plan.check_out(out)
    policy = ThreadPolicy(opts.threads, plan.device)
    if is_dask(image) and out is None and plan.mode != "per-tile":
        from .lazy import lazy_super_resolve

        return (yield from lazy_super_resolve(plan, prog))

    with policy:
        return (yield from _run_planes(plan, prog, out, policy, opts.residual))


def _run_planes(plan: Plan, prog: Progress, out, policy: ThreadPolicy,
                residual: bool = False) -> Generator:
    """Estimation (global mode) and every plane, in order, into ``out`` or a new array."""
    lay = plan.layout
    leads = plan.leads
    n_tiles = plan.tiles_per_plane
    per_plane_est = 0
    cache: dict = {}
    if plan.mode == "global":
        prog.total = n_estimation(lay, min(ESTIMATION_PLANES, len(leads))) + \
            n_tiles * len(leads)
        policy.update()
        yield from estimate_global(plan, prog, cache)
    elif plan.mode == "per-plane":
        per_plane_est = n_estimation(lay, 1)
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

        part = yield from restore_plane_iter(plan, lead, None, prog, batch=x, on_retry=on_retry,
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


def super_resolve_iter(image, model, options: SROptions | None = None, *,
                       progress: Callable[[int, int], Any] | None = None, cancel=None,
                       out=None, **settings) -> Generator[tuple[int, int], None, SRResult]:
    """Generator form of :func:`super_resolve`: yields ``(done, total)`` after every estimation
    patch and every tile, and returns the :class:`SRResult` (``StopIteration.value``).

    Meant for thread workers (napari's ``thread_worker``): ``result = yield from
    super_resolve_iter(...)``. ``progress`` is called as well when given.
    """
    gen = _run(image, model, SROptions.build(options, **settings), cancel, out)
    return (yield from relay(gen, progress))


def super_resolve(image, model, options: SROptions | None = None, *,
                  progress: Callable[[int, int], Any] | None = None, cancel=None, out=None,
                  **settings) -> SRResult:
    """Super-resolve an image of any size, dtype and dimensionality with a DAN model.

    The settings (``channel_axis`` to ``kernel_views`` below) are given as keywords, or as one
    :class:`~napari_dan.engine.options.SROptions` (``options``; keywords then replace its fields),
    which is what the widget, the CLI and the dask runner pass.

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
    kernel : (k, k) array, "spots" or Optics, optional
        A known PSF on the output (HR) grid, odd sides: non-blind, the Estimator is skipped.
        "spots": the PSF measured from isolated spots (beads, puncta) of the image itself
        (:func:`napari_dan.imaging.spots.measure_psf` on the brightest of up to 8 planes),
        as a Gaussian on the output grid; reported in ``metadata["spots"]``.
        ``napari_dan.Optics(na, wavelength, pixel_size)``: the theoretical in-focus PSF of those
        optics on the output grid (``pixel_size / scale``); reported in ``metadata["optics"]``.
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
    runtime : {"torch", "openvino"}
        What runs the network: PyTorch (default), or OpenVINO on the CPU in fp32 or bf16 when the
        ``openvino`` package is installed (the same results; not faster than PyTorch on this
        project's CPU); ``metadata["runtime"]`` says which ran. See
        :mod:`napari_dan.engine.runtime`.
    compiled : bool
        Restore tiles through ``torch.compile`` (fused element-wise steps; faster per tile, but
        a compilation per tile shape and process, and a C compiler is needed; falls back
        to the eager network when compiling fails). Off by default; see docs/engine.md.
    residual : bool
        Also return the residual map of the consistency check (``SRResult.residual``); the
        relative residual per plane is always in ``metadata["consistency"]``.
    iterations : int or "auto"
        Rounds of the DAN loop (Restorer, then Estimator) on the estimation patches (or tiles)
        before the image is restored with the last round's kernel, which is the kernel
        reported. "settled": at most the model's ``loop`` (4) rounds for napari-dan's models
        (``loop - 1`` for the authors' checkpoints), each patch (or tile) stopping after the
        first round from the second on that moved its kernel by less than
        ``engine.plan.SETTLED_L1`` (L1 of the normalised kernels; ``metadata["settled"]`` lists
        the rounds run). "auto" (default): "settled" for napari-dan's models; exactly ``loop -
        1`` rounds for the authors' checkpoints, which restores the image of their released
        forward pass (``iterations=loop - 1`` does that for any model). 1 to ``loop``: that many
        rounds (fewer are faster and approximate; docs/benchmarks.md measures every choice).
        ``metadata["iterations"]`` says how many rounds at most.
    kernel_views : 1, 4, 8 or "auto"
        On how many mirror images of each estimation patch (or tile) the loop runs; their
        kernels, mirrored back, are averaged (4: the patch flipped up-down, left-right and both;
        8: also transposed). The Estimator is not mirror-symmetric, and the mean of its views
        scatters less (docs/benchmarks.md). Costs that many times the estimation. "auto"
        (default): 4 for napari-dan's microscopy models in global and per-plane mode, 1 in
        per-tile mode, for the photo models and for the authors' checkpoints (run as released).
        ``metadata["kernel_views"]``.

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
    gen = super_resolve_iter(image, model, options, progress=progress, cancel=cancel, out=out,
                             **settings)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
