"""Kernel files: estimated kernels as a float32 TIFF with their statistics as a JSON
description, at the output grid's physical scale."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..errors import InputError
from .metadata import micrometres
from .outputs import partial_path
from .reading import _err

__all__ = ["write_kernels", "read_kernels"]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def write_kernels(path: str | os.PathLike, kernels: np.ndarray, info: dict,
                  pixel_size: float | None = None, unit: str | None = None) -> Path:
    """Write estimated kernels as float32 TIFF, ``info`` (statistics etc.) as JSON description.

    ``kernels`` is (k, k) or (N, k, k); ``pixel_size`` (the HR pixel, in ``unit``) goes into the
    resolution tags, in pixels per centimetre, so that ImageJ/napari show the kernel at its
    physical scale; a unit that is not a length (or none) writes no resolution tags.
    """
    k = np.asarray(kernels, dtype=np.float32)
    final = Path(path)
    tmp = partial_path(final)
    kw: dict[str, Any] = {}
    um = micrometres(pixel_size, unit) if pixel_size else None
    # TIFF knows centimetres (and inches): store pixels per cm, whatever the length unit, when
    # a TIFF rational (32-bit numerator and denominator) can hold it; an absurd pixel size read
    # from a file (0.00001 nm) would otherwise fail the whole file (its size stays in ``info``)
    if um and 2.0**-32 < 1e4 / um < 2.0**32 - 1:
        kw.update(resolution=(1e4 / um, 1e4 / um), resolutionunit=3)
    # not a length (or none): no resolution tags, rather than a size in a unit it is not
    desc = json.dumps(info, default=_json_default, allow_nan=False) if info else None
    try:
        tifffile.imwrite(tmp, k, photometric="minisblack", description=desc, metadata=None, **kw)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def read_kernels(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Kernels and their JSON description from a file written by :func:`write_kernels`."""
    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            desc = tif.pages[0].description
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001  (anything tifffile raises means: unreadable)
        raise _err(Path(path), e) from None
    try:
        info = json.loads(desc) if desc else {}
    except json.JSONDecodeError:
        info = {}
    return data, info
