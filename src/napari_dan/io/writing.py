"""Writing TIFF stacks block by block into a hidden partial file that is renamed into place only
when complete, with the source's flavour of metadata; output file names."""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import replace
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..errors import InputError
from .blocks import BlockLayout
from .metadata import _IJ_DERIVED, TiffMeta
from .outputs import partial_path
from .reading import _key_ranges

__all__ = ["BIGTIFF_LIMIT", "StackWriter", "write_tiff", "tiff_stem"]

#: outputs larger than this (bytes) are written as BigTIFF; a classic TIFF cannot address 4 GiB
BIGTIFF_LIMIT = 2**32 - 2**25


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
                # X and Y in meta.unit, unless the reader kept an axis' own unit (one it could
                # not convert, or no length at all): every axis is written with its own unit
                if ax in "XY" and meta.unit and f"PhysicalSize{ax}Unit" not in meta.ome:
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


_STEM_RE = re.compile(r"\.(ome\.)?tiff?$", re.IGNORECASE)


def tiff_stem(path: str | os.PathLike) -> str:
    """File name without ``.tif``/``.tiff``/``.ome.tif``."""
    return _STEM_RE.sub("", Path(path).name)
