"""The engine: tiled, memory-bounded super-resolution of any array (numpy, dask, zarr, memmap).

``super_resolve(image, model, ...)`` is the one routine the widget, the CLI and dask call;
``super_resolve_iter`` is its generator form (yields ``(done, total)``, returns the result).
Modules: :mod:`.core` (the routine), :mod:`.tiling` (tiles and blending), :mod:`.normalize` (axes,
channels, dtypes), :mod:`.kernels` (kernel modes), :mod:`.devices` (device, precision, OOM),
:mod:`.lazy` (dask in, lazy dask out). Design notes: docs/engine.md.
"""

from .core import SRResult, super_resolve, super_resolve_iter
from .devices import OutOfMemory, resolve_device, resolve_precision
from .kernels import KERNEL_MODES

__all__ = ["super_resolve", "super_resolve_iter", "SRResult", "OutOfMemory", "KERNEL_MODES",
           "resolve_device", "resolve_precision"]
