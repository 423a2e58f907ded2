"""The thread worker: the engine's tile generator run off the GUI thread.

The worker yields ``(done, total)`` after every tile (napari shows it as a progress bar) and
returns ``(model, result)``. Cancelling sets the ``threading.Event`` the engine checks between
tiles; the engine then raises :class:`~napari_dan.errors.Cancelled`, which reaches the widget
through the worker's ``errored`` signal like any other error. One mechanism for stopping.

The worker is superqt's, which napari's ``thread_worker`` wraps: napari's variant also relays
every error to its notification manager with a traceback, which would report a user's Cancel as
a crash and every :class:`~napari_dan.errors.InputError` twice. The widget shows them itself.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any

import numpy as np
from superqt.utils import GeneratorWorker, create_worker

from ..model import DanModel, load_model
from .request import RunRequest

__all__ = ["sr_worker", "run_engine"]


def run_engine(request: RunRequest, model: Any, cancel: threading.Event):
    """Generator: load the model if needed, then run the engine tile by tile.

    Yields ``(done, total)``; returns ``(model, SRResult)``.
    """
    from ..engine import super_resolve_iter

    m = model if isinstance(model, DanModel) else load_model(model)
    out = None
    if not isinstance(request.image, np.ndarray):
        # a dask (or zarr, ...) layer: the engine would return a lazy array that napari would then
        # compute on the GUI thread while drawing; have it written here instead, into memory, or
        # for results too large for that into a memory-mapped file in the temporary folder
        out = _output_array(_out_shape(request, m), np.dtype(request.image.dtype))
    opts = request.options
    result = yield from super_resolve_iter(request.image, m, opts, cancel=cancel, out=out)
    if opts.kernel is None and not request.rgb and m.in_channels == 1:
        # a blind run on a grey layer: the PSF measured from isolated spots beside it, if the
        # image has them (beads, puncta), so the two can be compared
        from ..engine import spot_psf
        from ..engine.result import blind_fwhm_of_plane, spots_note
        from ..errors import InputError

        try:
            kernel, info = spot_psf(request.image, m, opts.channel_axis)
            # the blind estimate of the plane the spots were measured on (per plane / per tile)
            blind = blind_fwhm_of_plane(result, info.get("plane"))
            g = info["output_grid"]
            note = spots_note(g["fwhm_px"], m, blind,
                              g["fwhm_major_px"] / max(g["fwhm_minor_px"], 1e-9))
            result.metadata["spots_comparison"] = dict(info, kernel=kernel, note=note)
        except InputError as e:
            result.metadata["spots_comparison"] = {"unavailable": str(e)}
    return m, result


IN_MEMORY_LIMIT = 2 * 1024**3  # bytes; larger results of lazy layers go to a memory-mapped file


def _output_array(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An output array for the engine: in memory, or a ``.npy`` memmap when it would be large."""
    if int(np.prod(shape)) * dtype.itemsize <= IN_MEMORY_LIMIT:
        return np.empty(shape, dtype=dtype)
    folder = tempfile.mkdtemp(prefix="napari-dan-")
    return np.lib.format.open_memmap(os.path.join(folder, "result.npy"), mode="w+", dtype=dtype,
                                     shape=shape)


def _out_shape(request: RunRequest, model: DanModel) -> tuple[int, ...]:
    """The result's shape, by the engine's own reading of the axes."""
    import warnings

    from ..engine.normalize import analyse

    with warnings.catch_warnings():  # the engine's own run says what it has to say, once
        warnings.simplefilter("ignore")
        return analyse(request.image, request.options.channel_axis, model.in_channels,
                       model.scale).out_shape


def sr_worker(request: RunRequest, model: Any, cancel: threading.Event) -> GeneratorWorker:
    """A not-yet-started napari worker around :func:`run_engine` (connect, then ``.start()``)."""
    return create_worker(run_engine, request, model, cancel, _start_thread=False,
                         _ignore_errors=True)
