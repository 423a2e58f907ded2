"""Super-resolve the planes of a stack on a dask.distributed cluster.

The client (the CLI process) reads the stack, decides everything that concerns the whole array
once (value normalisation, tile size and overlap, and in ``global`` mode the kernel code, from the
same few planes as the local engine), then sends planes to the workers and writes the results in
plane order into one output. Only a bounded number of planes is in flight (default two per
worker), so the client's memory stays at a few planes whatever the stack size.

Each worker process loads the model once and keeps it (a module-level cache keyed by the model's
name or checkpoint digest); a checkpoint file is broadcast to the workers as bytes, so the
workers need not see the client's file system. The client and the workers use the engine's
public building blocks, the very steps ``super_resolve`` is made of: the client calls
:func:`~napari_dan.engine.prepare` and sends the resulting plan (a few kB: it pickles without
the model and the input) with every plane; a worker attaches its model and calls
:func:`~napari_dan.engine.restore_plane` for each plane it gets; the client gathers the results
with :func:`~napari_dan.engine.finish`. So a cluster run gives exactly the bytes of a local run
with the same options (tested with a two-process ``LocalCluster``).

Requires the ``distributed`` package (``pip install napari-dan[distributed]``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .engine import Plan, PlaneResult, SROptions, finish, prepare, restore_plane
from .errors import InputError
from .model import DanModel, load_model

__all__ = ["ClusterRunner", "process_plane", "start_cluster"]


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


def process_plane(model_key: str, plan: Plan, lead: tuple[int, ...], plane: np.ndarray,
                  payload: bytes | None = None) -> PlaneResult:
    """Super-resolve one plane with the client's plan; runs on a worker.

    ``plan`` arrives without its model (see :meth:`~napari_dan.engine.Plan.attach`): the worker's
    cached model for ``model_key`` (a bundled name, or ``"sha256:<digest>"`` of the checkpoint
    bytes in ``payload``) is attached, with device and precision resolved on this worker.
    """
    return restore_plane(plan.attach(_worker_model(model_key, payload)), lead, plane)


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
        Bundled model name or checkpoint path; a :class:`DanModel` works too when it was
        loaded by a bundled name or from (or saved to) a file, its ``source``.
    max_in_flight
        Planes submitted but not yet written; default two per worker.
    """

    def __init__(self, client, model: str | os.PathLike | DanModel,
                 max_in_flight: int | None = None):
        self.client = client
        self.model = load_model(model)
        spec = model if not isinstance(model, DanModel) else (model.source or "")
        spec = os.fspath(spec)
        bundled = isinstance(model, DanModel) and spec.startswith("bundled:")
        if bundled:  # load_model("dan-x2-gray") passed on: every worker has that model too
            spec = spec.split(":", 1)[1]
        path = Path(spec).expanduser()
        if path.is_file() and not bundled:
            payload = path.read_bytes()
            self.model_key = "sha256:" + hashlib.sha256(payload).hexdigest()
            # one copy per worker, reused by every task; workers need no access to our files
            self._payload = client.scatter(payload, broadcast=True)
        elif spec and (bundled or not isinstance(model, DanModel)):
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

    def super_resolve(self, image, options: SROptions | None = None, *, out=None,
                      on_plane: Callable[[int, int], Any] | None = None, **settings):
        """Like :func:`napari_dan.super_resolve` with ``out`` required; ``on_plane(done, total)``
        is called as planes are written. Returns an :class:`~napari_dan.engine.SRResult`.
        ``threads`` and ``compiled`` are each worker's own business and not used here."""
        if out is None:
            raise InputError("ClusterRunner.super_resolve needs out= (results are written "
                             "as they arrive)")
        plan = prepare(image, self.model, SROptions.build(options, **settings))
        lay = plan.layout
        plan.check_out(out)
        leads = plan.leads
        pending: deque = deque()
        parts: list[PlaneResult] = []
        try:
            for lead in leads + [None] * self.max_in_flight:
                if lead is not None:
                    pending.append(self.client.submit(
                        process_plane, self.model_key, plan, lead, plan.read_plane(lead),
                        self._payload, pure=False))
                if pending and (len(pending) >= self.max_in_flight or lead is None):
                    fut = pending.popleft()
                    part = fut.result()
                    fut.release()
                    out[lay.plane_index(part.lead)] = part.plane
                    part.plane = None  # written; only its kernels are kept
                    parts.append(part)
                    if on_plane is not None:
                        on_plane(len(parts), len(leads))
        except BaseException:
            self.client.cancel(list(pending))
            raise
        return finish(plan, out, parts, cluster={"workers": self.n_workers,
                                                 "max_in_flight": self.max_in_flight})

    def close(self) -> None:
        """Close the client (and the local cluster it started, if any)."""
        cluster = getattr(self.client, "cluster", None)
        self.client.close()
        if cluster is not None:
            cluster.close()
