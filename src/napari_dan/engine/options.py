"""The one typed options object of a super-resolution run.

The widget (``_napari/request.py``), the CLI and batch (``batch.process_file``) and the dask
runner (``distributed.ClusterRunner``) all build an :class:`SROptions` and hand it to the engine;
``super_resolve(image, model, **settings)`` builds one from its keywords. So every setting can be
followed from where a user sets it to where the engine decides with it.

The kernel vocabulary, everywhere:

* ``kernel_mode``: where kernels are *estimated*: ``"global"`` (one for the array),
  ``"per-plane"``, ``"per-tile"``;
* ``kernel``: a *known* PSF instead (non-blind): a 2D array on the output grid, ``"spots"``
  (measured from isolated spots of the image), or an :class:`~napari_dan.imaging.psf.Optics`
  (the theoretical PSF of an objective, wavelength and pixel size). With a known kernel the mode is moot and the
  result's ``metadata["mode"]`` says ``"user kernel"``.

``iterations``: how many rounds of the DAN loop (Restorer, then Estimator) run before the image
is restored with the last round's kernel, the kernel the result reports. ``"settled"``: at most
the network's ``loop`` (4) rounds for napari-dan's models (``loop - 1`` for the authors'
checkpoints; :func:`.plan.default_iterations` says why), a patch (or tile) stopping after the
first round, from the second on, that moved its kernel by less than ``plan.SETTLED_L1``.
``"auto"`` (default): "settled" for napari-dan's models, exactly ``loop - 1`` rounds for the
authors' checkpoints (the image their released forward pass returns). An int: that many rounds
(``loop`` for napari-dan's models: all of them, the reference "settled" was measured against).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

__all__ = ["SROptions", "KERNEL_MODES", "KERNEL_SOURCES"]

#: where kernels are estimated (``kernel_mode``)
KERNEL_MODES = ("global", "per-plane", "per-tile")
#: what ``SROptions.kernel_source`` can be
KERNEL_SOURCES = ("estimated", "array", "spots", "optics")


@dataclass(frozen=True)
class SROptions:
    """Every setting of one run (see :func:`napari_dan.super_resolve` for each one's meaning).

    Attributes
    ----------
    channel_axis : int or None
    tile_size, tile_overlap : int or "auto"  (LR pixels)
    kernel_mode : one of :data:`KERNEL_MODES`
    kernel : None, a 2D array (PSF on the output grid), "spots" or an Optics
    device : "auto", "cpu", "cuda", "cuda:N", "mps"
    precision : "auto", "fp32", "fp16", "bf16"
    threads : int, "auto" or None
    runtime : "torch" or "openvino" (:mod:`.runtime`)
    compiled : bool
    residual : bool (keep the consistency check's residual map)
    iterations : int, "auto" or "settled" (estimation rounds before the image is restored)
    kernel_views : 1, 4, 8 or "auto" (mirror images of each estimation patch, kernels averaged)
    """

    channel_axis: int | None = None
    tile_size: int | str = "auto"
    tile_overlap: int | str = "auto"
    kernel_mode: str = "global"
    kernel: Any = None
    device: str = "auto"
    precision: str = "auto"
    threads: int | str | None = None
    runtime: str = "torch"
    compiled: bool = False
    residual: bool = False
    iterations: int | str = "auto"
    kernel_views: int | str = "auto"

    @classmethod
    def build(cls, options: SROptions | None = None, **settings) -> SROptions:
        """``options`` (or the defaults) with ``settings`` replacing fields by name; an unknown
        name is a ``TypeError`` naming it, as for a function's keyword."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)}; options are "
                            f"{', '.join(sorted(names))}")
        base = options if options is not None else cls()
        if not isinstance(base, SROptions):
            raise TypeError(f"options must be SROptions, got {type(base).__name__}")
        return replace(base, **settings) if settings else base

    @property
    def kernel_source(self) -> str:
        """"estimated" (blind), "array" (a PSF given), "spots" (measured from the image) or
        "optics" (the PSF of an objective)."""
        from ..imaging.psf import Optics

        if self.kernel is None:
            return "estimated"
        if isinstance(self.kernel, Optics):
            return "optics"
        if isinstance(self.kernel, str):
            return "spots" if self.kernel == "spots" else self.kernel
        return "array"

    def describe(self) -> dict:
        """JSON-friendly summary (the kernel array as its shape)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.kernel_source == "optics":
            out["kernel"] = {"optics": self.kernel.describe()}
        elif self.kernel is not None and not isinstance(self.kernel, str):
            out["kernel"] = f"array {tuple(np.shape(self.kernel))}"
        return out
