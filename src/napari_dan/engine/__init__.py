"""The engine: tiled, memory-bounded super-resolution of any array (numpy, dask, zarr, memmap).

``super_resolve(image, model, ...)`` is the one routine the widget, the CLI and dask call;
``super_resolve_iter`` is its generator form (yields ``(done, total)``, returns the result).
Building blocks for running planes elsewhere (e.g. on a cluster): ``plan = prepare(image, model,
...)``, ``restore_plane(plan, lead) -> PlaneResult`` for every lead in ``plan.leads``, then
``finish(plan, out, plane_results) -> SRResult``; ``super_resolve`` is exactly these steps.
Modules: :mod:`.core` (the routine), :mod:`.plan` (what is decided for the whole array),
:mod:`.estimation` (kernel estimation), :mod:`.restoration` (one plane), :mod:`.result`
(SRResult, finish), :mod:`.progress` (progress and cancel), :mod:`.options` (the typed settings
of a run), :mod:`.tiling` (tiles and blending), :mod:`.normalize` (axes, channels, dtypes),
:mod:`.kernel_modes` (estimation patches, user kernels), :mod:`.devices` (device, precision, OOM),
:mod:`.threads` (CPU threads), :mod:`.lazy` (dask in, lazy dask out). Design notes:
docs/engine.md.
"""

from .core import prepare, super_resolve, super_resolve_iter
from .devices import OutOfMemory, resolve_device, resolve_precision
from .options import KERNEL_MODES, SROptions
from .plan import Plan, PlaneResult, spot_psf
from .restoration import restore_plane
from .result import SRResult, finish

__all__ = ["super_resolve", "super_resolve_iter", "SRResult", "prepare", "restore_plane",
           "finish", "Plan", "PlaneResult", "OutOfMemory", "KERNEL_MODES", "resolve_device",
           "resolve_precision", "spot_psf", "SROptions"]
