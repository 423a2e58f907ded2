"""Super-resolve the planes of a stack on a dask.distributed cluster.

The client (the CLI process) reads the stack, decides everything that concerns the whole array
once (value normalisation, tile size and overlap, and in ``global`` mode the kernel code, from the
same few planes as the local engine), then sends planes to the workers and writes the results in
plane order into one output. Only a bounded number of planes is in flight (default two per
worker), so the client's memory stays at a few planes whatever the stack size.

Each worker process loads the model once and keeps it (a module-level cache keyed by the model's
name or checkpoint digest); a checkpoint file is broadcast to the workers as bytes, so the
workers need not see the client's file system. Every plane goes through the engine's own
per-plane routine with the client's decisions, so a cluster run gives exactly the bytes of a
local run with the same options (tested with a two-process ``LocalCluster``).

Requires the ``distributed`` package (``pip install napari-dan[distributed]``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .model import DanModel, load_model

__all__ = ["ClusterRunner", "PlaneSpec", "start_cluster"]


def _drive(gen):
    """Run an engine generator to its end and return its value (progress is not needed here)."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


@dataclass
class PlaneSpec:
    """What a worker needs to process any plane of one array (small and picklable)."""

    model_key: str  # bundled name, or "sha256:<digest>" of broadcast checkpoint bytes
    device: str
    precision: str
    layout: Any  # engine.normalize.Layout
    norm: Any  # engine.normalize.Normalisation
    mode: str  # "global" | "per-plane" | "per-tile" | "user kernel"
    code: np.ndarray | None
    tile: int
    overlap: int


# ---- worker side --------------------------------------------------------------------------

_CACHE: dict[tuple, tuple] = {}
_LOCK = threading.Lock()


def _worker_model(key: str, payload: bytes | None) -> DanModel:
    """The model for ``key``, loaded at most once per worker process."""
    with _LOCK:
        hit = _CACHE.get(("model", key))
        if hit is not None:
            return hit[0]
        if payload is None:
            model = load_model(key)
        else:
            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "model.pt"
                p.write_bytes(payload)
                model = load_model(p)
        _CACHE[("model", key)] = (model,)
        return model


def _worker_setup(spec: PlaneSpec, payload: bytes | None):
    """An engine setup on this worker with the client's decisions (cached per model/device)."""
    from .engine import core
    from .engine.devices import resolve_device, resolve_precision

    model = _worker_model(spec.model_key, payload)
    key = ("runner", spec.model_key, spec.device, spec.precision)
    with _LOCK:
        if key not in _CACHE:
            dev = resolve_device(spec.device)
            prec = resolve_precision(spec.precision, dev, model.network)
            _CACHE[key] = (core._Runner(model, dev, prec), dev, prec)
        runner, dev, prec = _CACHE[key]
    return core._Setup(model=model, layout=spec.layout, device=dev, precision=prec, runner=runner,
                       norm=spec.norm, mode=spec.mode, user=None, tile=spec.tile,
                       overlap=spec.overlap, overlap_note="from the client", read_hwc=None)


def process_plane(spec: PlaneSpec, lead: tuple[int, ...], plane: np.ndarray,
                  payload: bytes | None = None) -> tuple[np.ndarray, list, list]:
    """Super-resolve one plane as the engine's eager path does; runs on a worker.

    Returns the output plane, the kernels it estimated (per-plane: one; per-tile: one per tile;
    otherwise none) and their centres.
    """
    from .engine import core
    from .engine.normalize import check_finite

    st = _worker_setup(spec, payload)
    lay = st.layout
    hwc = lay.plane_to_hwc(np.asarray(plane))
    check_finite(hwc, f"plane {lead}" if lead else "")
    x = core._to_batch(hwc, lay, st.norm)
    prog = core._Progress(None)
    kernels: list = []
    centres: list = []
    code = spec.code
    if spec.mode == "per-plane":
        est = _drive(core._estimate(st, {lead: x}, prog))
        code = est.code
        kernels.append(est.kernel)
        centres.append(tuple(float(i) for i in lead))
    elif spec.mode == "per-tile":
        code = None
    hr, tiles, tks = _drive(core._restore_with_retry(st, x, code, prog, lambda n: None, lead, []))
    for t, k in zip(tiles, tks, strict=False):
        kernels.append(k)
        centres.append((*lead, *t.center))
    res = st.norm.from_unit(core._from_batch(hr, lay), lay.dtype)
    if lay.alpha:
        alpha = core._upsample_alpha(hwc[..., 3], lay.scale, lay.dtype)
        res = np.concatenate([res, alpha[..., None]], axis=-1)
    return lay.hwc_to_plane(res), kernels, centres


def _warm(key: str, payload: bytes | None) -> int:
    _worker_model(key, payload)
    return os.getpid()


# ---- client side --------------------------------------------------------------------------


def start_cluster(scheduler: str | None = None, workers: int | None = None,
                  timeout: str = "20s"):
    """A ``distributed.Client``: connected to ``scheduler`` (``tcp://host:port``) or to a new
    ``LocalCluster`` of ``workers`` single-threaded processes.

    Raises
    ------
    InputError
        ``distributed`` is missing or the scheduler cannot be reached.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--scheduler/--workers need the 'distributed' package: "
                         "pip install 'napari-dan[distributed]'") from None
    if scheduler:
        try:
            return Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as e:
            raise InputError(f"cannot reach the dask scheduler at {scheduler} ({e}); start "
                             "one with 'dask scheduler' and workers with "
                             "'dask worker ADDRESS'") from None
    if not workers or workers < 1:
        raise InputError(f"--workers must be 1 or more, got {workers}")
    cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                           dashboard_address=None)
    return Client(cluster)


class ClusterRunner:
    """Runs ``super_resolve`` on a cluster, plane by plane, with the engine's signature.

    Parameters
    ----------
    client
        A ``distributed.Client`` (see :func:`start_cluster`).
    model
        Bundled model name or checkpoint path (a :class:`DanModel` saved to a file works too:
        its ``source`` must be that file).
    max_in_flight
        Planes submitted but not yet written; default two per worker.
    """

    def __init__(self, client, model: str | os.PathLike | DanModel,
                 max_in_flight: int | None = None):
        self.client = client
        self.model = load_model(model)
        spec = model if not isinstance(model, DanModel) else (model.source or "")
        spec = os.fspath(spec)
        path = Path(spec).expanduser()
        if path.is_file():
            payload = path.read_bytes()
            self.model_key = "sha256:" + hashlib.sha256(payload).hexdigest()
            # one copy per worker, reused by every task; workers need no access to our files
            self._payload = client.scatter(payload, broadcast=True)
        elif spec and not isinstance(model, DanModel):
            self.model_key, self._payload = spec, None  # a bundled name: every worker has it
        else:
            raise InputError("a model for the cluster must be a bundled name or a checkpoint "
                             "file (save an in-memory model with model.save(path) first)")
        n = max(1, len(client.scheduler_info().get("workers", {})))
        self.n_workers = n
        self.max_in_flight = int(max_in_flight or 2 * n)
        # load the model on every worker now, so the first planes do not all wait for it
        self.worker_pids = client.gather(
            [client.submit(_warm, self.model_key, self._payload, pure=False, workers=[w])
             for w in client.scheduler_info().get("workers", {})])

    def super_resolve(self, image, *, channel_axis=None, tile_size="auto", tile_overlap="auto",
                      kernel_mode="global", kernel=None, device="auto", precision="auto",
                      out=None, on_plane: Callable[[int, int], Any] | None = None):
        """Like :func:`napari_dan.super_resolve` with ``out`` required; ``on_plane(done, total)``
        is called as planes are written. Returns an :class:`~napari_dan.engine.SRResult`."""
        from .engine import core

        t_start = time.perf_counter()
        if out is None:
            raise InputError("ClusterRunner.super_resolve needs out= (results are written "
                             "as they arrive)")
        st = core._setup(image, self.model, channel_axis, tile_size, tile_overlap, kernel_mode,
                         kernel, device, precision)
        lay = st.layout
        core._check_out(out, lay)
        est = st.user
        t0 = time.perf_counter()
        if st.mode == "global":
            est = _drive(core._global_estimate(st, core._Progress(None), {}))
        t_est = time.perf_counter() - t0
        spec = PlaneSpec(self.model_key, str(device), str(precision), lay, st.norm, st.mode,
                         None if est is None else est.code, st.tile, st.overlap)
        leads = core._leads(lay)
        pending: deque = deque()
        kernels: list = []
        centres: list = []
        done = 0
        try:
            for lead in leads + [None] * self.max_in_flight:
                if lead is not None:
                    plane = np.asarray(image[lay.plane_index(lead)])
                    pending.append((lead, self.client.submit(
                        process_plane, spec, lead, plane, self._payload, pure=False)))
                if pending and (len(pending) >= self.max_in_flight or lead is None):
                    lead_done, fut = pending.popleft()
                    result, ks, cs = fut.result()
                    fut.release()
                    out[lay.plane_index(lead_done)] = result
                    kernels.extend(ks)
                    centres.extend(cs)
                    done += 1
                    if on_plane is not None:
                        on_plane(done, len(leads))
        except BaseException:
            self.client.cancel([f for _, f in pending])
            raise
        if st.mode in ("per-plane", "per-tile"):
            ks = np.stack(kernels).astype(np.float32)
            kernel_ = ks.mean(0)
            cen = np.array(centres, np.float64).reshape(len(kernels), -1)
        else:
            kernel_ = est.kernel
            ks = kernel_[None].astype(np.float32)
            cen = core._image_centre(lay)
        kernel_ = (kernel_ / kernel_.sum()).astype(np.float32)
        meta = core._base_metadata(st)
        meta.update({"lazy": False, "cluster": {"workers": self.n_workers,
                                                "max_in_flight": self.max_in_flight},
                     "timing": {"estimate_s": t_est, "total_s": time.perf_counter() - t_start}})
        if est is not None and est.patches and st.mode == "global":
            meta["estimation_patches"] = [vars(p) for p in est.patches]
        if st.user is not None:
            meta["kernel_projection_error"] = st.user.projection_error
        return core.SRResult(out, kernel_, ks, cen, core._stats(kernel_), meta)

    def close(self) -> None:
        """Close the client (and the local cluster it started, if any)."""
        cluster = getattr(self.client, "cluster", None)
        self.client.close()
        if cluster is not None:
            cluster.close()
