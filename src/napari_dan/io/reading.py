"""Reading TIFF stacks block by block, with their metadata, never loading a large file whole;
every header claim is bounded before anything is allocated."""

from __future__ import annotations

import os
from itertools import product
from pathlib import Path

import numpy as np
import tifffile

from ..errors import InputError
from .blocks import BlockLayout
from .metadata import TiffMeta, _unit, micrometres

__all__ = ["TiffStack", "TiffArray", "open_tiff", "read_metadata", "read_tiff"]


class _Unsupported(ValueError):
    """A readable TIFF whose content napari-dan does not super-resolve (said as it is)."""


def _photometric(page) -> str:
    """The page's colour interpretation, as written back to the output: "minisblack",
    "miniswhite" (a grey image shown inverted: kept, so the output looks as the input does) or
    "rgb". A palette image is read as grey intensities: that is how ImageJ stores a grey image
    with a lookup table (the shared bead stack is one); the table is not copied. Other
    interpretations (CMYK, CIELab, ...) are refused: their values are not intensities."""
    p = int(page.photometric)
    if p in (1, 3, 4):  # minisblack, palette (ImageJ's LUT), transparency mask
        return "minisblack"
    if p == 0:
        return "miniswhite"
    if p == 2 or (p == 6 and int(page.compression) in (6, 7)):  # YCbCr JPEG is decoded to RGB
        return "rgb"
    name = getattr(page.photometric, "name", str(p))
    raise _Unsupported(f"photometric interpretation {name} is not supported; convert the image "
                       "to grey (minisblack) or RGB first")


def _err(path: Path, e: BaseException) -> InputError:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, _Unsupported):
        return InputError(f"{path}: {msg}")
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


def _check_imagej_count(path: Path, meta: TiffMeta) -> None:
    """An ImageJ header states how many images the file holds; when tifffile cannot find them
    all (a truncated file) it falls back to the first page alone, which would be processed as a
    one-plane image without a word. Refuse that."""
    if meta.kind != "imagej":
        return
    try:
        claimed = int(meta.imagej.get("images", 1))
    except (TypeError, ValueError):
        return
    plane = 1
    for ax, n in zip(meta.axes, meta.shape, strict=True):
        if ax in "YXS":
            plane *= n
    held = int(np.prod(meta.shape)) // max(plane, 1)
    if claimed > held:
        raise InputError(f"{path}: not a readable TIFF (its ImageJ header says {claimed} images "
                         f"but the file holds {held}; truncated or damaged)")


def _first_ifd(image: dict) -> int | None:
    """The first IFD an OME Image element's TiffData points to (None: it does not say)."""
    td = image.get("Pixels", {}).get("TiffData") if isinstance(image, dict) else None
    td = [td] if isinstance(td, dict) else (td or [])
    ifds = []
    for t in td:
        try:
            ifds.append(int(t.get("IFD", 0)) if isinstance(t, dict) else 0)
        except (TypeError, ValueError):
            return None
    return min(ifds) if ifds else None


def _ome_image(images: list, tif: tifffile.TiffFile, index: int) -> dict:
    """The OME Image element that describes image series ``index`` of ``tif``: the same
    position when every Image became a series, else the Image whose data start at the series'
    first page, else the one of the same name; {} when none can be told (no metadata is better
    than another image's)."""
    all_series = tif.series
    if len(images) == len(all_series):
        return images[index]
    series = all_series[index]
    page = series.pages[0] if len(series.pages) else None
    first = getattr(page, "index", None)
    if first is not None and getattr(page, "parent", tif) is tif:
        hits = [im for im in images if _first_ifd(im) == first]
        if len(hits) == 1:
            return hits[0]
    if series.name:
        hits = [im for im in images if isinstance(im, dict) and im.get("Name") == series.name]
        if len(hits) == 1:
            return hits[0]
    return {}


def _ome_meta(tif: tifffile.TiffFile, index: int) -> tuple[dict, dict, str | None, list | None]:
    """What the OME-XML says about image series ``index``: the Pixels attributes kept for the
    output, physical sizes, the X/Y unit and the channel names."""
    try:
        d = tifffile.xml2dict(tif.ome_metadata)["OME"]
    except Exception:  # noqa: BLE001  (damaged XML: fall back to the plain-TIFF metadata)
        return {}, {}, None, None
    images = d.get("Image", {})
    images = images if isinstance(images, list) else [images]
    image = _ome_image(images, tif, index)
    image = image if isinstance(image, dict) else {}
    pix = image.get("Pixels", {})
    keep = {k: pix[k] for k in ("PhysicalSizeZUnit", "TimeIncrementUnit") if k in pix}
    sizes, unit = {}, None
    for ax in "XYZ":
        v = pix.get(f"PhysicalSize{ax}")
        if v is not None:
            sizes[ax] = float(v)
    # each axis has its own unit (OME's default: µm); TiffMeta has one for X and Y, X's
    ux, uy = (str(pix.get(f"PhysicalSize{ax}Unit", "µm")) for ax in "XY")
    for ax, u in (("X", ux), ("Y", uy)):
        if ax in sizes and _unit(u) is None:  # no size ("pixel"): written back as it was
            keep[f"PhysicalSize{ax}Unit"] = u
    if "X" in sizes:
        unit = _unit(ux)
    if "Y" in sizes and _unit(uy) != _unit(ux) and "PhysicalSizeYUnit" not in keep:
        y_um, x_um = micrometres(sizes["Y"], uy), micrometres(1.0, ux)
        if y_um is not None and x_um:
            sizes["Y"] = y_um / x_um  # Y in X's unit (100 nm and 0.1 µm pixels are square)
        else:  # not convertible: Y keeps its own unit, in and out
            keep["PhysicalSizeYUnit"] = uy
    if pix.get("TimeIncrement") is not None:
        sizes["T"] = float(pix["TimeIncrement"])
    ch = pix.get("Channel")
    ch = [ch] if isinstance(ch, dict) else (ch or [])
    names = [str(c.get("Name", "")) for c in ch] if ch and all("Name" in c for c in ch) else None
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
            self.meta = self._parse(self._tif, self._series, series)
            self.meta.series = series
            self.meta.series_shapes = [tuple(int(v) for v in s.shape) for s in all_series]
            _check_imagej_count(self.path, self.meta)
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
    def _parse(tif: tifffile.TiffFile, series, index: int = 0) -> TiffMeta:
        """The metadata of ``series``, image series ``index`` of ``tif``."""
        axes = series.axes
        page = series.pages[0]
        meta = TiffMeta(shape=tuple(int(n) for n in series.shape), dtype=np.dtype(series.dtype),
                        axes=axes)
        if "Y" not in axes or "X" not in axes:
            raise ValueError(f"axes {axes!r} have no Y and X")
        if 0 in meta.shape:
            raise ValueError(f"the image is empty: shape {meta.shape}, axes {axes}")
        meta.photometric = _photometric(page)
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
            keep, sizes, unit, names = _ome_meta(tif, index)
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
                         else f"{p}: is not a regular file (a pipe, socket or device)"
                         if p.exists() else f"{p}: no such file")
    return TiffStack(p, series)


def read_tiff(path: str | os.PathLike) -> tuple[np.ndarray, TiffMeta]:
    """The whole first series of a TIFF and its metadata."""
    with open_tiff(path) as stack:
        return stack.read(), stack.meta
