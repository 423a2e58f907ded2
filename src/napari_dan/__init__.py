"""napari-dan: blind super-resolution with DAN (deep alternating network) for napari.

Public API::

    import napari_dan
    napari_dan.list_models()
    model = napari_dan.load_model("dan-x4-rgb")        # bundled name or checkpoint path
    result = napari_dan.super_resolve(image, model)     # numpy/dask in, result.image / result.kernel

The core (model, engine, io, training) imports neither napari nor Qt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import Cancelled, CheckpointError, DanError, InputError, UnknownModelError
from .imaging.psf import Optics
from .model import DanModel, list_models, load_model
from .model.kernels import kernel_stats

__version__ = "0.1.0"

__all__ = ["load_model", "list_models", "super_resolve", "SRResult", "DanModel", "kernel_stats",
           "Optics",
           "DanError", "CheckpointError", "UnknownModelError", "InputError", "Cancelled",
           "__version__"]

if TYPE_CHECKING:
    from .engine import SRResult, super_resolve


def __getattr__(name: str):
    # the engine is imported on first use so that `import napari_dan` stays light
    if name in ("super_resolve", "SRResult"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'napari_dan' has no attribute {name!r}")
