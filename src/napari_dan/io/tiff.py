"""TIFF stacks in and out, plane by plane, with their metadata.

Reading keeps what a microscopist needs from ImageJ hyperstacks (axes TZCYXS, Z spacing, unit,
frame interval, labels, display ranges), OME-TIFF (axes, physical sizes, channel names) and plain
TIFF (resolution tags, photometric). Large files are never loaded whole: a stack is cut into
*blocks* (one YX plane, with its channels where the model takes them together), read one at a time
from the TIFF pages (or straight from the file when the data are stored contiguously and
uncompressed), and written one at a time into an uncompressed contiguous output whose layout
tifffile lays down first. Outputs go to a hidden temporary file renamed into place only when every
block is written, so no truncated file ever carries a final name.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..errors import InputError
from .outputs import partial_path

__all__ = ["TiffMeta", "TiffStack", "TiffArray", "BlockLayout", "StackWriter", "open_tiff",
           "read_metadata", "read_tiff", "write_tiff", "write_kernels", "read_kernels",
           "scaled_metadata", "partial_path", "tiff_stem", "iter_blocks", "BIGTIFF_LIMIT"]

#: outputs larger than this (bytes) are written as BigTIFF; a classic TIFF cannot address 4 GiB
BIGTIFF_LIMIT = 2**32 - 2**25

# ImageJ keys that tifffile derives from the array shape itself when it writes a hyperstack
_IJ_DERIVED = {"ImageJ", "images", "channels", "slices", "frames", "hyperstack", "axes"}
# ImageJ keys measured in pixels of the X/Y grid: they scale with the image
_IJ_XY_PIXELS = {"xorigin", "yorigin"}
_UNIT_ALIASES = {"micron": "µm", "microns": "µm", "um": "µm", "\\u00B5m": "µm", "\\u00b5m": "µm",
                 "μm": "µm", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm"}


def _unit(u: Any) -> str | None:
    """A readable unit string ('µm' for the spellings ImageJ and OME use), or None."""
    if u is None:
        return None
    s = str(u).strip()
    if not s or s.lower() in ("pixel", "pixels", "none"):
        return None
    return _UNIT_ALIASES.get(s, _UNIT_ALIASES.get(s.lower(), s))


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


# --------------------------------------------------------------------------------------------
# reading


def _err(path: Path, e: BaseException) -> InputError:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, (IndexError, KeyError, EOFError)) or type(e).__name__ == "error":
        # tifffile's low-level failures on garbage say nothing useful to a person
        msg = f"damaged, truncated or not a TIFF ({type(e).__name__}: {msg})"
    if "imagecodecs" in msg:
        msg += " (install imagecodecs to read this compression)"
    return InputError(f"{path}: not a readable TIFF ({msg})")


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 2**40


def _check_fits(path: Path, nbytes: int, what: str) -> None:
    """A header can claim any size: refuse to allocate more than the machine's memory."""
    if nbytes > _memory_bytes():
        raise InputError(f"{path}: {what} would need {nbytes / 2**30:,.1f} GiB, more than this "
                         "machine's memory (a damaged header, or too large to read whole)")


#: a header may claim this much image data whatever the file's size; beyond it, the claim must
#: fit the file (uncompressed) or a generous compression ratio (compressed)
CLAIM_FLOOR, MAX_COMPRESSION_RATIO = 256 * 2**20, 5000


def _check_claim(path: Path, nbytes: int, compressed: bool) -> None:
    size = os.path.getsize(path)
    allowed = max(CLAIM_FLOOR, size * (MAX_COMPRESSION_RATIO if compressed else 1))
    if nbytes > allowed:
        raise InputError(f"{path}: not a readable TIFF (its header claims {nbytes:,} bytes of "
                         f"{'compressed ' if compressed else ''}image data in a file of "
                         f"{size:,} bytes; damaged)")


def _ome_meta(tif: tifffile.TiffFile, axes: str) -> tuple[dict, dict, str | None, list | None]:
    try:
        d = tifffile.xml2dict(tif.ome_metadata)["OME"]
    except Exception:  # noqa: BLE001  (damaged XML: fall back to the plain-TIFF metadata)
        return {}, {}, None, None
    image = d.get("Image", {})
    image = image[0] if isinstance(image, list) else image
    pix = image.get("Pixels", {})
    sizes, unit = {}, None
    for ax in "XYZ":
        v = pix.get(f"PhysicalSize{ax}")
        if v is not None:
            sizes[ax] = float(v)
            if ax == "X":
                unit = _unit(pix.get("PhysicalSizeXUnit", "µm"))
    if pix.get("TimeIncrement") is not None:
        sizes["T"] = float(pix["TimeIncrement"])
    ch = pix.get("Channel")
    ch = [ch] if isinstance(ch, dict) else (ch or [])
    names = [str(c.get("Name", "")) for c in ch] if ch and all("Name" in c for c in ch) else None
    keep = {k: pix[k] for k in ("PhysicalSizeZUnit", "TimeIncrementUnit") if k in pix}
    if image.get("Name"):
        keep["Name"] = image["Name"]
    return keep, sizes, unit, names


def read_metadata(path: str | os.PathLike) -> TiffMeta:
    """Axes, pixel sizes, units and channel names of a TIFF file (see :class:`TiffMeta`).

    Raises
    ------
    InputError
        The file is missing or not a readable TIFF; the message names the file.
    """
    with open_tiff(path) as stack:
        return stack.meta


class TiffStack:
    """An open TIFF series read block by block; use :func:`open_tiff` (a context manager)."""

    def __init__(self, path: str | os.PathLike, series: int = 0):
        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
            all_series = self._tif.series
            if not all_series:
                raise ValueError("the file holds no image")
            n = len(all_series)
            if isinstance(series, bool) or not isinstance(series, (int, np.integer)) \
                    or not -n <= series < n:
                raise InputError(f"{self.path}: has {n} image series (0 to {n - 1}); "
                                 f"series {series!r} does not exist")
            series = int(series) % n
            self._series = all_series[series]
            self.meta = self._parse(self._tif, self._series)
            self.meta.series = series
            self.meta.series_shapes = [tuple(int(v) for v in s.shape) for s in all_series]
            series = self._series
            page0 = series.pages[0] if len(series.pages) else None
            if page0 is None:
                raise ValueError("the first image has no pages")
            _check_claim(self.path, self.meta.nbytes, int(page0.compression) != 1)
            self._page_ndim = len(page0.shape)
            self._page_bytes = int(np.prod(page0.shape)) * np.dtype(self.meta.dtype).itemsize
            # contiguous uncompressed data are read straight from the file: no page objects,
            # and it also covers ImageJ files over 4 GB that store only their first IFD
            off = series.dataoffset
            self._offset = int(off) if off is not None else None
            if self._offset is not None:  # a header may claim more data than the file holds
                need = self._offset + self.meta.nbytes
                have = os.path.getsize(self.path)
                if need > have:
                    raise InputError(f"{self.path}: not a readable TIFF (its header describes "
                                     f"{need:,} bytes of image data but the file has {have:,}; "
                                     "truncated or damaged)")
            self._file_dtype = np.dtype(self.meta.dtype).newbyteorder(self._tif.byteorder)
            self._fd = os.open(self.path, os.O_RDONLY) if self._offset is not None else None
        except InputError:
            self.close()
            raise
        except Exception as e:  # noqa: BLE001  (anything tifffile raises means: unreadable)
            self.close()
            raise _err(self.path, e) from None

    # ---- metadata
    @staticmethod
    def _parse(tif: tifffile.TiffFile, series) -> TiffMeta:
        axes = series.axes
        page = series.pages[0]
        meta = TiffMeta(shape=tuple(int(n) for n in series.shape), dtype=np.dtype(series.dtype),
                        axes=axes)
        if "Y" not in axes or "X" not in axes:
            raise ValueError(f"axes {axes!r} have no Y and X")
        if 0 in meta.shape:
            raise ValueError(f"the image is empty: shape {meta.shape}, axes {axes}")
        meta.photometric = "rgb" if int(page.photometric) == 2 else "minisblack"
        meta.planar = int(page.planarconfig) == 2 and "S" in page.axes
        tags = page.tags
        if "XResolution" in tags and "YResolution" in tags:
            def _ratio(v):
                if isinstance(v, tuple):
                    return v[0] / v[1] if v[1] else 0.0
                return float(v)
            xr, yr = _ratio(tags["XResolution"].value), _ratio(tags["YResolution"].value)
            if xr > 0 and yr > 0:
                meta.resolution = (xr, yr)
        if "ResolutionUnit" in tags:
            meta.resolution_unit = int(tags["ResolutionUnit"].value)
        if tif.is_imagej and tif.imagej_metadata is not None:
            meta.kind = "imagej"
            ij = dict(tif.imagej_metadata)
            meta.imagej = ij
            meta.unit = _unit(ij.get("unit"))
            if meta.resolution:
                meta.pixel_size.update(X=1.0 / meta.resolution[0], Y=1.0 / meta.resolution[1])
            if ij.get("spacing") is not None:
                meta.pixel_size["Z"] = float(ij["spacing"])
            if ij.get("finterval") is not None:
                meta.pixel_size["T"] = float(ij["finterval"])
        elif tif.is_ome and tif.ome_metadata:
            keep, sizes, unit, names = _ome_meta(tif, axes)
            meta.kind = "ome"
            meta.ome, meta.unit, meta.channel_names = keep, unit, names
            meta.pixel_size.update(sizes)
        if meta.kind == "tiff" and meta.resolution and meta.resolution_unit == 3:
            # centimetre resolution tags are the one plain-TIFF case with a usable physical size
            meta.pixel_size.update(X=1e4 / meta.resolution[0], Y=1e4 / meta.resolution[1])
            meta.unit = "µm"
        if meta.kind == "imagej" and "C" in axes:
            labels = meta.imagej.get("Labels")
            n_c = meta.shape[axes.index("C")]
            if isinstance(labels, list) and len(labels) == n_c:
                meta.channel_names = [str(v) for v in labels]
        return meta

    # ---- data
    def layout(self, channel_axis: int | str | None = None) -> BlockLayout:
        """How this stack is cut into blocks (see :class:`BlockLayout`)."""
        return BlockLayout(self.meta.shape, self.meta.axes, self._page_ndim, channel_axis)

    def read_page(self, index: int) -> np.ndarray:
        """One TIFF page (page axes, e.g. YX, YXS or SYX) in native byte order."""
        try:
            if self._offset is not None:
                n = self._page_bytes
                buf = os.pread(self._fd, n, self._offset + index * n)
                if len(buf) != n:
                    raise ValueError(f"file ends inside image {index} (truncated?)")
                shape = self.meta.shape[len(self.meta.shape) - self._page_ndim:]
                a = np.frombuffer(buf, dtype=self._file_dtype).reshape(shape)
                return a.astype(self.meta.dtype.newbyteorder("="), copy=not a.dtype.isnative)
            page = self._series.pages[index]
            if page is None:
                raise ValueError(f"image {index} is missing")
            _check_fits(self.path, self._page_bytes, f"image {index}")
            a = page.asarray()
            return a.reshape(page.shape)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001
            raise _err(self.path, e) from None

    def read_block(self, layout: BlockLayout, i: int) -> np.ndarray:
        """Block ``i`` of ``layout`` with the axes ``layout.block_axes``."""
        pages = layout.block_pages(i)
        arrays = [self.read_page(p) for p in pages]
        out = arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=0)
        return out.reshape(layout.block_shape)

    def array(self) -> TiffArray:
        """A lazy, read-only array view of the series (reads only the pages an index needs)."""
        return TiffArray(self)

    def read(self) -> np.ndarray:
        """The whole series in memory (small files only)."""
        layout = self.layout()
        _check_fits(self.path, self.meta.nbytes, "the image")
        try:
            out = np.empty(self.meta.shape, dtype=self.meta.dtype.newbyteorder("="))
        except MemoryError:
            raise InputError(f"{self.path}: not enough memory to read the whole image "
                             f"({self.meta.nbytes / 2**30:,.1f} GiB)") from None
        flat = out.reshape((-1,) + layout.block_shape)
        for i in range(layout.n_blocks):
            flat[i] = self.read_block(layout, i)
        return out

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None
        if getattr(self, "_tif", None) is not None:
            self._tif.close()
            self._tif = None

    def __enter__(self) -> TiffStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _key_ranges(key, shape: tuple[int, ...]) -> tuple[list[range | int], tuple[int, ...]]:
    """Normalise a numpy basic index to one ``int`` or ``range`` per axis (and the result shape)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1:]
    if len(key) > len(shape):
        raise IndexError(f"too many indices ({len(key)}) for an array with {len(shape)} axes")
    key = key + (slice(None),) * (len(shape) - len(key))
    parts: list[range | int] = []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            parts.append(range(*k.indices(n)))
        elif isinstance(k, (int, np.integer)):
            if not -n <= k < n:
                raise IndexError(f"index {k} is out of bounds for an axis of size {n}")
            parts.append(int(k) % n)
        else:
            raise IndexError(f"only integers and slices can index a TIFF stack, got {k!r}")
    return parts, tuple(len(p) for p in parts if isinstance(p, range))


class TiffArray:
    """Read-only array view of a :class:`TiffStack` (``shape``, ``dtype``, ``ndim``, basic
    indexing): indexing reads only the pages it needs, so it can stand in for a numpy array of a
    file larger than memory (for ``super_resolve`` or ``dask.array.from_array``)."""

    def __init__(self, stack: TiffStack):
        self._stack = stack
        self.shape = tuple(stack.meta.shape)
        self.dtype = np.dtype(stack.meta.dtype).newbyteorder("=")
        self.ndim = len(self.shape)
        self._np = len(self.shape) - stack._page_ndim

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        parts, out_shape = _key_ranges(key, self.shape)
        outer, inner = parts[:self._np], parts[self._np:]
        inner_key = tuple(slice(p.start, None if p.stop < 0 else p.stop, p.step)
                          if isinstance(p, range) else p for p in inner)
        outer_lists = [list(p) if isinstance(p, range) else [p] for p in outer]
        page_shape = self.shape[self._np:] if self._np < len(self.shape) else ()
        chunks = []
        for idx in product(*outer_lists):
            page = int(np.ravel_multi_index(idx, self.shape[:self._np])) if self._np else 0
            chunks.append(self._stack.read_page(page).reshape(page_shape)[inner_key])
        res = np.stack(chunks) if chunks else np.empty((0,), self.dtype)
        return res.reshape(out_shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self[...]
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        return f"TiffArray({self._stack.path.name!r}, shape={self.shape}, dtype={self.dtype})"


def open_tiff(path: str | os.PathLike, series: int = 0) -> TiffStack:
    """Open one image series of a TIFF for block-wise reading (``with open_tiff(p) as stack:``).

    ``series`` picks the image series of a multi-series file (``stack.meta.series_count`` says
    how many there are).

    Raises
    ------
    InputError
        Missing, damaged or unsupported file; the message names it.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: is a directory, not a TIFF file" if p.is_dir()
                         else f"{p}: no such file")
    return TiffStack(p, series)


def read_tiff(path: str | os.PathLike) -> tuple[np.ndarray, TiffMeta]:
    """The whole first series of a TIFF and its metadata."""
    with open_tiff(path) as stack:
        return stack.read(), stack.meta


# --------------------------------------------------------------------------------------------
# blocks


class BlockLayout:
    """Cut a series into blocks: everything but Y, X and the channel axis is looped over.

    A block is what one call of the engine sees: one YX plane, plus the channel axis where the
    model takes channels together (RGB samples ``S`` always stay in their page). Blocks are
    numbered in C order of the loop axes; each is made of whole TIFF pages, so a block is read
    from and written to its own pages only.

    Parameters
    ----------
    shape, axes
        Series shape and axes letters.
    page_ndim
        Number of trailing axes stored inside one TIFF page (2 for YX, 3 for YXS/SYX).
    channel_axis
        Index (negative allowed) or letter of the axis that holds the model's channels; must be
        ``S`` or an axis stored across pages. ``None``: ``S`` when present, else no channel axis.
    """

    def __init__(self, shape: tuple[int, ...], axes: str, page_ndim: int,
                 channel_axis: int | str | None = None):
        self.shape, self.axes, self.page_ndim = tuple(shape), axes, page_ndim
        nd = len(shape)
        in_page = set(range(nd - page_ndim, nd))
        if channel_axis is None:
            c = axes.index("S") if "S" in axes else None
        elif isinstance(channel_axis, str):
            if channel_axis not in axes:
                raise InputError(f"no axis {channel_axis!r} in axes {axes!r}")
            c = axes.index(channel_axis)
        else:
            if not -nd <= int(channel_axis) < nd:
                raise InputError(f"channel axis {channel_axis} is out of range for an image with "
                                 f"{nd} axes ({axes}, shape {shape})")
            c = int(channel_axis) % nd
        if c is not None and axes[c] in "YX":
            raise InputError(f"channel axis {c} is the {axes[c]} axis of {axes!r} (shape "
                             f"{shape}); pick the axis that holds the channels")
        for a in in_page:
            if axes[a] not in "YX" and a != c:
                raise InputError(f"axis {axes[a]!r} of {axes!r} is stored inside each TIFF page "
                                 "and must be the channel axis")
        self.channel = c
        self.block_axes_idx = [a for a in range(nd) if a in in_page or a == c]
        self.loop_idx = [a for a in range(nd) if a not in self.block_axes_idx]
        self.loop_shape = tuple(shape[a] for a in self.loop_idx)
        self.block_shape = tuple(shape[a] for a in self.block_axes_idx)
        self.block_axes = "".join(axes[a] for a in self.block_axes_idx)
        self.n_blocks = int(np.prod(self.loop_shape)) if self.loop_shape else 1
        self.page_level = list(range(nd - page_ndim))
        self.page_level_shape = tuple(shape[a] for a in self.page_level)

    @property
    def block_channel_axis(self) -> int | None:
        """Position of the channel axis inside a block (for ``super_resolve(channel_axis=)``)."""
        return None if self.channel is None else self.block_axes_idx.index(self.channel)

    def loop_index(self, i: int) -> tuple[int, ...]:
        if not self.loop_shape:
            return ()
        return tuple(int(v) for v in np.unravel_index(i, self.loop_shape))

    def block_pages(self, i: int) -> list[int]:
        """Page numbers that make block ``i``, in the order they stack along its channel axis."""
        li = dict(zip(self.loop_idx, self.loop_index(i), strict=True))
        ranges = [range(self.shape[a]) if a == self.channel else [li[a]] for a in self.page_level]
        if not self.page_level:
            return [0]
        return [int(np.ravel_multi_index(idx, self.page_level_shape)) for idx in product(*ranges)]

    def scaled(self, s: int) -> BlockLayout:
        """The same layout for the output grid (Y and X times ``s``)."""
        shape = tuple(n * s if ax in "YX" else n
                      for ax, n in zip(self.axes, self.shape, strict=True))
        return BlockLayout(shape, self.axes, self.page_ndim, self.channel)


# --------------------------------------------------------------------------------------------
# writing


def scaled_metadata(meta: TiffMeta, s: int) -> TiffMeta:
    """Metadata of the ``s``-times super-resolved image: Y and X pixel sizes divided by ``s``,
    resolution tags multiplied by ``s``, everything else (Z spacing, frame interval, channel
    names, display ranges) unchanged."""
    out = replace(meta, shape=tuple(n * s if ax in "YX" else n
                                    for ax, n in zip(meta.axes, meta.shape, strict=True)),
                  pixel_size=dict(meta.pixel_size), imagej=dict(meta.imagej), ome=dict(meta.ome))
    for ax in "XY":
        if ax in out.pixel_size:
            out.pixel_size[ax] = out.pixel_size[ax] / s
    if meta.resolution:
        out.resolution = (meta.resolution[0] * s, meta.resolution[1] * s)
    for k in _IJ_XY_PIXELS & set(out.imagej):
        try:
            out.imagej[k] = float(out.imagej[k]) * s
        except (TypeError, ValueError):
            pass
    return out


def _write_kwargs(meta: TiffMeta) -> dict:
    """tifffile.imwrite keywords that reproduce ``meta``'s flavour of metadata."""
    kw: dict[str, Any] = {"photometric": meta.photometric}
    if meta.planar:
        kw["planarconfig"] = "separate"
    if meta.resolution:
        kw["resolution"] = meta.resolution
        kw["resolutionunit"] = meta.resolution_unit
    if meta.kind == "imagej":
        md = {k: v for k, v in meta.imagej.items() if k not in _IJ_DERIVED and v is not None}
        md["axes"] = meta.axes
        if "Z" in meta.pixel_size:
            md["spacing"] = meta.pixel_size["Z"]
        kw.update(imagej=True, metadata=md)
    elif meta.kind == "ome":
        md: dict[str, Any] = {"axes": meta.axes, **meta.ome}
        for ax in "XYZ":
            if ax in meta.pixel_size:
                md[f"PhysicalSize{ax}"] = meta.pixel_size[ax]
                if ax in "XY" and meta.unit:
                    md[f"PhysicalSize{ax}Unit"] = meta.unit
        if "T" in meta.pixel_size:
            md["TimeIncrement"] = meta.pixel_size["T"]
        if meta.channel_names:
            md["Channel"] = {"Name": list(meta.channel_names)}
        kw.update(ome=True, metadata=md)
    else:
        kw["metadata"] = {"axes": meta.axes}
    return kw


class StackWriter:
    """Write a TIFF block by block into ``partial_path(path)``; rename on :meth:`commit`.

    The file is laid out first by tifffile (uncompressed, contiguous, the metadata of ``meta``),
    so blocks can be written in any order with ``os.pwrite`` and memory stays at one block.
    Leaving the ``with`` block without :meth:`commit` (an error, Ctrl-C) deletes the partial file.

    Parameters
    ----------
    path
        Final file name.
    meta
        Metadata of the output (e.g. from :func:`scaled_metadata`).
    layout
        Block layout of the output (``input_layout.scaled(s)``).
    bigtiff
        True/False, or None to use BigTIFF only when the output needs it (over ~4 GiB).
    """

    def __init__(self, path: str | os.PathLike, meta: TiffMeta, layout: BlockLayout,
                 bigtiff: bool | None = None):
        self.path = Path(path)
        self.tmp = partial_path(self.path)
        self.meta, self.layout = meta, layout
        self._dtype = np.dtype(meta.dtype).newbyteorder("<")
        if tuple(layout.shape) != tuple(meta.shape):
            raise ValueError(f"layout shape {layout.shape} != metadata shape {meta.shape}")
        if bigtiff is None:
            bigtiff = meta.nbytes > BIGTIFF_LIMIT
        self._fd: int | None = None
        self._committed = False
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        try:  # anything failing here (an unsupported dtype, a full disk) leaves no partial file
            with warnings.catch_warnings():
                # "nonconformant BigTIFF ImageJ": known and documented (docs/cli.md)
                warnings.simplefilter("ignore", UserWarning)
                tifffile.imwrite(self.tmp, None, shape=meta.shape, dtype=self._dtype,
                                 byteorder="<", bigtiff=bigtiff, **_write_kwargs(meta))
            with tifffile.TiffFile(self.tmp) as tif:
                s = tif.series[0]
                if s.dataoffset is None or tuple(s.shape) != tuple(meta.shape):
                    raise InputError(f"{self.path.name}: cannot lay out a {meta.dtype} "
                                     f"{meta.axes} image of shape {meta.shape} for writing "
                                     "block by block")
                self._offset = int(s.dataoffset)
            self._page_shape = meta.shape[len(meta.shape) - layout.page_ndim:]
            self._page_bytes = int(np.prod(self._page_shape)) * self._dtype.itemsize
            self._fd = os.open(self.tmp, os.O_WRONLY)
        except BaseException:
            self.abort()
            raise

    def write_block(self, i: int, data: np.ndarray) -> None:
        """Write block ``i`` (shape ``layout.block_shape``, cast to the output dtype)."""
        data = np.asarray(data)
        if data.shape != self.layout.block_shape:
            raise ValueError(f"block {i} has shape {data.shape}, "
                             f"expected {self.layout.block_shape}")
        pages = self.layout.block_pages(i)
        flat = np.ascontiguousarray(data, dtype=self._dtype)
        flat = flat.reshape((len(pages),) + self._page_shape)
        for j, p in enumerate(pages):
            self._write_page(p, flat[j])

    # array-like face, so the writer can be handed to ``super_resolve(out=...)``
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.meta.shape)

    @property
    def ndim(self) -> int:
        return len(self.meta.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._dtype).newbyteorder("=")

    def __setitem__(self, key, value) -> None:
        """Write whole pages: ``key`` may index any axis stored across pages (ints or slices)
        but must take every pixel of the axes inside a page."""
        parts, out_shape = _key_ranges(key, self.shape)
        npl = len(self.shape) - self.layout.page_ndim
        for p, n in zip(parts[npl:], self.shape[npl:], strict=True):
            if not (isinstance(p, range) and p == range(n)):
                raise IndexError("StackWriter writes whole TIFF pages; index only the axes "
                                 f"before the last {self.layout.page_ndim}")
        value = np.broadcast_to(np.asarray(value), out_shape)
        outer = [list(p) if isinstance(p, range) else [p] for p in parts[:npl]]
        flat = np.ascontiguousarray(value, dtype=self._dtype).reshape((-1,) + self._page_shape)
        for j, idx in enumerate(product(*outer)):
            page = int(np.ravel_multi_index(idx, self.shape[:npl])) if npl else 0
            self._write_page(page, flat[j])

    def _write_page(self, page: int, data: np.ndarray) -> None:
        buf = memoryview(np.ascontiguousarray(data)).cast("B")
        pos = self._offset + page * self._page_bytes
        while buf:  # pwrite may write less than asked
            n = os.pwrite(self._fd, buf, pos)
            buf, pos = buf[n:], pos + n

    def commit(self) -> Path:
        """Flush, close and rename to the final name."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        os.replace(self.tmp, self.path)
        self._committed = True
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._committed:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> StackWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.abort()


def write_tiff(path: str | os.PathLike, data: np.ndarray, meta: TiffMeta | None = None) -> Path:
    """Write a whole array with ``meta``'s metadata flavour (atomically, via a partial file).

    Without ``meta`` the axes are guessed (``...YX``, or ``...YXS`` for a trailing 3/4 axis of a
    uint8 array written as RGB).
    """
    data = np.asarray(data)
    if meta is None:
        rgb = data.ndim >= 3 and data.shape[-1] in (3, 4) and data.dtype == np.uint8
        axes = ("Q" * (data.ndim - (3 if rgb else 2))) + ("YXS" if rgb else "YX")
        axes = axes.replace("Q", "Z", 1) if axes.startswith("Q") and axes.count("Q") == 1 else axes
        meta = TiffMeta(shape=data.shape, dtype=data.dtype, axes=axes,
                        photometric="rgb" if rgb and data.shape[-1] == 3 else "minisblack")
    else:
        meta = replace(meta, shape=tuple(data.shape), dtype=data.dtype)
    page_ndim = 3 if ("S" in meta.axes) else 2
    layout = BlockLayout(meta.shape, meta.axes, page_ndim)
    with StackWriter(path, meta, layout) as w:
        flat = data.reshape((-1,) + layout.block_shape)
        for i in range(layout.n_blocks):
            w.write_block(i, flat[i])
        return w.commit()


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
    resolution tags so that ImageJ/napari show the kernel at its physical scale.
    """
    k = np.asarray(kernels, dtype=np.float32)
    final = Path(path)
    tmp = partial_path(final)
    kw: dict[str, Any] = {}
    if pixel_size:
        res = 1.0 / pixel_size
        if unit in ("µm", "um"):  # TIFF knows centimetres: store pixels per cm
            res, kw["resolutionunit"] = res * 1e4, 3
        kw["resolution"] = (res, res)
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


_STEM_RE = re.compile(r"\.(ome\.)?tiff?$", re.IGNORECASE)


def tiff_stem(path: str | os.PathLike) -> str:
    """File name without ``.tif``/``.tiff``/``.ome.tif``."""
    return _STEM_RE.sub("", Path(path).name)


def iter_blocks(stack: TiffStack, layout: BlockLayout) -> Iterator[tuple[int, np.ndarray]]:
    """(index, block) for every block of ``stack`` in order, one in memory at a time."""
    for i in range(layout.n_blocks):
        yield i, stack.read_block(layout, i)
