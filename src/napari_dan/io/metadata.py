"""What a TIFF file says about its image: :class:`TiffMeta` (axes, pixel sizes, units, channel
names, ImageJ / OME / plain-TIFF flavour) and how it changes when the image is super-resolved
(:func:`scaled_metadata`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["IJ_INPUT_GRID_SHAPES", "TiffMeta", "scaled_metadata", "micrometres"]

# ImageJ keys that tifffile derives from the array shape itself when it writes a hyperstack
_IJ_DERIVED = {"ImageJ", "images", "channels", "slices", "frames", "hyperstack", "axes"}
# ImageJ keys measured in pixels of the X/Y grid: they scale with the image
_IJ_XY_PIXELS = {"xorigin", "yorigin"}
#: ImageJ keys holding shapes on the input's pixel grid (binary ROI and overlay records): on the
#: super-resolved grid they would mark the wrong region, so the output leaves them out
IJ_INPUT_GRID_SHAPES = ("ROI", "Overlays")
_UNIT_ALIASES = {"micron": "µm", "microns": "µm", "um": "µm", "\\u00B5m": "µm", "\\u00b5m": "µm",
                 "μm": "µm"}
# the spelled-out names, singular and plural, American and British (looked up in lower case)
for _short, _stem in (("µm", "micro"), ("nm", "nano"), ("mm", "milli"), ("cm", "centi"),
                      ("m", "")):
    for _end in ("meter", "meters", "metre", "metres"):
        _UNIT_ALIASES[_stem + _end] = _short
del _short, _stem, _end


def _unit(u: Any) -> str | None:
    """A readable unit string ('µm' for the spellings ImageJ and OME use), or None."""
    if u is None:
        return None
    s = str(u).strip()
    if not s or s.lower() in ("pixel", "pixels", "none"):
        return None
    return _UNIT_ALIASES.get(s, _UNIT_ALIASES.get(s.lower(), s))


_MICROMETRES = {"µm": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def micrometres(value: float | None, unit: Any) -> float | None:
    """``value`` in ``unit`` (any spelling :func:`_unit` reads: µm, um, micron, nm, mm, cm, m)
    as micrometres; None when either is unknown or not a length."""
    u = _unit(unit)
    if value is None or u is None or u.replace("μ", "µ") not in _MICROMETRES:
        return None
    return float(value) * _MICROMETRES[u.replace("μ", "µ")]


@dataclass
class TiffMeta:
    """What a TIFF file says about its first image series.

    Attributes
    ----------
    shape, dtype, axes
        Shape, data type and tifffile axes letters of the series (Y and X always present; ``S`` for
        RGB samples, ``C`` channels, ``Z``, ``T``; ``Q``/``I`` for unlabelled leading axes).
    kind : str
        ``"imagej"``, ``"ome"`` or ``"tiff"``: the metadata flavour, which the output keeps.
    pixel_size : dict
        Physical size per axis letter where known (``X``, ``Y``, ``Z``; ``T``: frame interval).
    unit : str or None
        Spatial unit of ``pixel_size`` (None when the file gives none).
    channel_names : list of str or None
        OME channel names (or ImageJ labels when there is one per channel).
    photometric : str
        ``"rgb"`` or ``"minisblack"``.
    resolution : tuple or None
        The X and Y resolution tags (pixels per ``resolution_unit``), as stored.
    resolution_unit : int
        TIFF ResolutionUnit (1 none, 2 inch, 3 cm).
    imagej : dict
        The ImageJ metadata, kept to be written back (empty for other kinds).
    ome : dict
        OME Pixels attributes kept to be written back (empty for other kinds).
    series : int
        Which image series of the file this is (0 unless asked for another).
    series_shapes : list of tuple
        Shapes of all the file's image series (more than one: a multi-series file).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    kind: str = "tiff"
    pixel_size: dict[str, float] = field(default_factory=dict)
    unit: str | None = None
    channel_names: list[str] | None = None
    photometric: str = "minisblack"
    planar: bool = False
    resolution: tuple[float, float] | None = None
    resolution_unit: int = 1
    imagej: dict = field(default_factory=dict)
    ome: dict = field(default_factory=dict)
    series: int = 0
    series_shapes: list[tuple[int, ...]] = field(default_factory=list)

    @property
    def series_count(self) -> int:
        """How many image series the file holds (this metadata describes ``series``)."""
        return max(1, len(self.series_shapes))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def spatial_pixel_size(self) -> tuple[float | None, str | None]:
        """X pixel size and unit where the file states a physical one, else (None, None)."""
        px = self.pixel_size.get("X")
        return (px, self.unit) if px is not None and self.unit else (None, None)

    def to_dict(self) -> dict:
        """JSON-friendly summary (for layer metadata, logs and the kernel description)."""
        return {"axes": self.axes, "shape": list(self.shape), "dtype": str(np.dtype(self.dtype)),
                "kind": self.kind, "pixel_size": dict(self.pixel_size), "unit": self.unit,
                "channel_names": self.channel_names, "photometric": self.photometric}


def scaled_metadata(meta: TiffMeta, s: int) -> TiffMeta:
    """Metadata of the ``s``-times super-resolved image: Y and X pixel sizes divided by ``s``,
    resolution tags multiplied by ``s``, ImageJ ROI and overlays left out (they are drawn on
    the input's pixel grid, see :data:`IJ_INPUT_GRID_SHAPES`), everything else (Z spacing,
    frame interval, channel names, display ranges) unchanged."""
    out = replace(meta, shape=tuple(n * s if ax in "YX" else n
                                    for ax, n in zip(meta.axes, meta.shape, strict=True)),
                  pixel_size=dict(meta.pixel_size), imagej=dict(meta.imagej), ome=dict(meta.ome))
    for ax in "XY":
        if ax in out.pixel_size:
            out.pixel_size[ax] = out.pixel_size[ax] / s
    if meta.resolution:
        out.resolution = (meta.resolution[0] * s, meta.resolution[1] * s)
    for k in IJ_INPUT_GRID_SHAPES:
        out.imagej.pop(k, None)
    for k in _IJ_XY_PIXELS & set(out.imagej):
        try:
            out.imagej[k] = float(out.imagej[k]) * s
        except (TypeError, ValueError):
            pass
    return out
