"""napari writer: an image layer as TIFF that keeps its pixel size (and the kernel statistics).

napari's own TIFF export drops the layer's scale, so a super-resolved layer saved with it would
claim the LR pixel size of its source in Fiji. This writer stores the layer's scale as the
physical pixel size: ImageJ hyperstack metadata (resolution tags + unit + Z spacing) for the
dtypes ImageJ reads (uint8, uint16, float32), OME-TIFF otherwise. The writing itself is
:func:`napari_dan.io.write_tiff` (atomic, via a partial file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import TiffMeta, write_tiff

__all__ = ["write_tiff_layer", "layer_tiff_meta"]

_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)


def _unit_text(units: Any, axis: int) -> str | None:
    if not units:
        return None
    u = units[axis]
    text = f"{u:~P}" if hasattr(u, "dimensionality") else str(u)
    return None if text in ("px", "pixel", "") else text


def layer_tiff_meta(data: np.ndarray, meta: dict) -> TiffMeta:
    """TIFF metadata for a layer's data given napari's layer attributes ``meta`` (scale, units,
    rgb, metadata): axes letters, pixel size and unit."""
    rgb = bool(meta.get("rgb", False))
    nd = data.ndim - (1 if rgb else 0)
    if nd > 5:
        raise InputError(f"a {nd}D layer cannot be written as TIFF (at most T, Z, C, Y, X)")
    lead = nd - 2
    own = (meta.get("metadata") or {}).get("napari_dan", {})
    channel = (own.get("params") or {}).get("channel_axis")
    if channel is not None and not rgb and 0 <= channel < lead:
        rest = iter("TZ"[3 - lead:])  # the plane axes, innermost Z (lead <= 3 here)
        letters = ["C" if a == channel else next(rest) for a in range(lead)]
    else:
        letters = list("TZC"[:lead]) if lead == 3 else list("TZ"[2 - lead:])
    axes = "".join(letters) + "YX" + ("S" if rgb else "")
    scale = np.asarray(meta.get("scale", np.ones(nd)), dtype=float)
    units = meta.get("units")
    unit = _unit_text(units, nd - 1)
    pixel_size = {"Y": float(scale[nd - 2]), "X": float(scale[nd - 1])}
    if "Z" in letters:
        pixel_size["Z"] = float(scale[letters.index("Z")])
    ks = own.get("kernel_stats") or {}
    hr_grid = {"super-resolved": 1, "kernel": 1, "spots PSF": 1, "residual": own.get("scale")}
    if unit is None and ks.get("unit") and ks.get("pixel_size") and hr_grid.get(own.get("kind")):
        # a result of a layer without units whose physical pixel size the plugin knew (typed in,
        # or from the source's TIFF, which napari's reader drops): keep that, not "pixel"
        # (the plane spacing is not known in that unit, so it is left out)
        px = float(ks["pixel_size"]) * float(hr_grid[own["kind"]])
        unit, pixel_size = ks["unit"], {"Y": px, "X": px}
    photometric = "rgb" if rgb and data.shape[-1] == 3 else "minisblack"
    dtype = np.dtype(data.dtype)
    if dtype in [np.dtype(d) for d in _IMAGEJ_DTYPES] and not (rgb and dtype != np.uint8):
        # ImageJ's metadata is ASCII and spells micrometres "micron"
        ij = {"unit": {"µm": "micron"}.get(unit, (unit or "pixel").replace("µ", "u"))}
        info = {k: v for k, v in own.items() if k in ("model", "mode", "kernel_summary", "source")}
        if info:
            ij["Info"] = json.dumps(info, default=str)
        return TiffMeta(shape=data.shape, dtype=dtype, axes=axes, kind="imagej",
                        pixel_size=pixel_size, unit=unit, photometric=photometric,
                        resolution=(1.0 / pixel_size["X"], 1.0 / pixel_size["Y"]),
                        resolution_unit=1, imagej=ij)
    return TiffMeta(shape=data.shape, dtype=dtype, axes=axes, kind="ome", pixel_size=pixel_size,
                    unit=unit, photometric=photometric)


def write_tiff_layer(path: str, data: Any, meta: dict) -> list[str]:
    """napari single-layer writer: ``data`` and ``meta`` of an image layer -> ``path``."""
    arr = np.asarray(data[0] if meta.get("multiscale") else data)
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff"):
        p = p.with_suffix(".tif")
    return [str(write_tiff(p, arr, layer_tiff_meta(arr, meta)))]
