"""From "this layer, these choices" to one engine call: which pixels, which axes, where results go.

Nothing here runs a network. :func:`build_request` checks the layer and the options and raises
:class:`~napari_dan.errors.InputError` with a message the widget shows as it is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.options import KERNEL_MODES as KERNEL_MODES_ENGINE
from ..engine.options import SROptions
from ..errors import InputError
from ..io import micrometres

__all__ = ["KERNEL_MODES", "SCOPES", "RunOptions", "RunRequest", "build_request", "model_id",
           "psf_from_layer", "stated_pixel", "spatial_axes"]

# label shown in the widget -> value understood here ("psf": a PSF taken from another layer)
KERNEL_MODES = {"global (one kernel)": "global", "per plane": "per-plane",
                "per tile (PSF map)": "per-tile", "PSF from layer (non-blind)": "psf",
                "PSF from spots (non-blind)": "spots", "PSF from optics (non-blind)": "optics"}
SCOPES = {"current plane": "plane", "whole stack": "stack"}


@dataclass
class RunOptions:
    """What the user chose in the widget (plain values, no Qt)."""

    model: Any                                  # DanModel, bundled name or checkpoint path
    tile_size: int | str = "auto"
    tile_overlap: int | str = "auto"
    kernel_mode: str = "global"  # "global" | "per-plane" | "per-tile" | "psf" | "spots" | "optics"
    psf: np.ndarray | None = None               # the PSF for kernel_mode "psf"
    psf_name: str | None = None
    device: str = "auto"
    precision: str = "auto"
    scope: str = "plane"                        # "plane" | "stack" (nD layers only)
    channel_axis: int | str | None = "auto"     # "auto": RGB layers -> last axis, others none
    residual: bool = False                      # add the consistency check's residual map
    pixel_size: float | None = None             # input pixel size in µm typed by the user
    optics: Any = None          # kernel_mode "optics": an Optics (its pixel size filled here)
    #: kernel_mode "psf": the pixel size the PSF layer states itself (:func:`stated_pixel`) and
    #: the model's scale, to put a PSF given on another grid onto the output grid
    psf_pixel: tuple[float, str | None] | None = None
    model_scale: int | None = None


@dataclass
class RunRequest:
    """Everything needed to call the engine once and to place its results on the source's grid.

    Axis numbers refer to the source layer's *data*; for an RGB layer the colour axis is the last
    data axis and is not a layer (world) axis, so every other axis has the same number in both.
    """

    image: Any                                  # what the engine gets (numpy or dask)
    options: SROptions                          # the engine settings of this run
    source_name: str
    rgb: bool
    data_ndim: int                              # of the source layer's data
    data_shape: tuple[int, ...]                 # of the source layer's data (level 0)
    layer_ndim: int                             # of the source layer (world axes it spans)
    spatial: tuple[int, int]                    # the two spatial axes (data = layer numbering)
    channel_axis: int | None                    # in the source data, None when there is none
    other_axes: tuple[int, ...]                 # non-spatial, non-channel layer axes (planes)
    plane: dict[int, int]                       # plane scope: axis -> index; empty for whole stack
    layer_scale: np.ndarray
    layer_translate: np.ndarray
    units: tuple | None
    display: dict                               # colormap, contrast limits, blending, ...
    params: dict                                # what decides "same run again" (replace) or not
    notes: list[str] = field(default_factory=list)
    #: (input pixel size, unit, where it came from) for physical widths, when known
    pixel: tuple[float, str, str] | None = None
    #: the rest of the source layer's placement, copied to every result layer: the linear part
    #: of its rotate and shear (the matrix R @ Sh napari applies after the scale) and its
    #: affine ((n+1) x (n+1)); None when they are the identity
    layer_linear: np.ndarray | None = None
    layer_affine: np.ndarray | None = None
    #: an id kept in the source layer's metadata: a re-run replaces only results of the same
    #: layer, not of another one that happens to have the same name
    source_id: str = ""

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape)


def model_id(model: Any) -> str:
    """A stable name for a model choice: bundled name, checkpoint path or the model's name."""
    if isinstance(model, str):
        return model
    src = getattr(model, "source", None)
    return str(src or getattr(model, "name", None) or repr(model))


def _layer_kind(layer: Any) -> str:
    return type(layer).__name__.lower()


def psf_from_layer(layer: Any, dims_point: Any = None) -> np.ndarray:
    """The 2D PSF held by an image layer (the current plane when the layer has more axes)."""
    if layer is None:
        raise InputError("kernel mode 'PSF from layer' needs a PSF layer; open or choose an image "
                         "layer that holds the PSF on the high-resolution grid")
    if _layer_kind(layer) != "image":
        raise InputError(f"PSF layer {layer.name!r} is a {_layer_kind(layer)} layer; the PSF must "
                         "be an image layer")
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if getattr(layer, "rgb", False):
        raise InputError(f"PSF layer {layer.name!r} is RGB; a PSF must be a single-channel image")
    if data.ndim > 2:
        idx = _plane_index(layer, dims_point, range(data.ndim - 2))
        data = data[tuple(idx[a] for a in range(data.ndim - 2))]
    psf = np.asarray(data, dtype=np.float32)
    if psf.ndim != 2 or psf.size == 0:
        raise InputError(f"PSF layer {layer.name!r} is not a 2D image")
    if psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
        raise InputError(f"PSF layer {layer.name!r} is {psf.shape[0]} x {psf.shape[1]} px; a PSF "
                         "needs odd sides (its centre on the middle pixel): crop one row or "
                         "column")
    return psf


def _layer_pixel(layer: Any, spatial: tuple[int, int]) -> tuple[float, str] | None:
    """The layer's own physical pixel size (scale and units of its x axis), if it has one."""
    ax = spatial[1]
    units = tuple(getattr(layer, "units", ()) or ())
    unit = None
    if units:
        u = units[ax]
        text = f"{u:~P}" if hasattr(u, "dimensionality") else str(u)
        unit = None if text in ("px", "pixel", "") else text
    size = float(np.asarray(layer.scale, dtype=float)[ax])
    if unit is None or not square_pixels(layer.scale, spatial):
        return None
    return size, unit


def stated_pixel(layer: Any, spatial: tuple[int, int] | None = None
                 ) -> tuple[float, str | None] | None:
    """The pixel size a layer states itself: its x scale, with its unit when physical, if its
    pixels are square and its scale is not 1 or its units are physical; else None (a layer
    at scale 1 in pixels says nothing about its grid)."""
    n = int(layer.ndim)
    spatial = spatial or (n - 2, n - 1)
    if not square_pixels(layer.scale, spatial):
        return None
    own = _layer_pixel(layer, spatial)
    if own is not None:
        return own
    size = float(np.asarray(layer.scale, dtype=float)[spatial[1]])
    return (size, None) if abs(size - 1.0) > 1e-12 else None


def _size_text(size: float, unit: str | None) -> str:
    return f"{size:.4g} {unit}" if unit else f"{size:.4g} (world units)"


def _psf_on_output_grid(psf: np.ndarray, options: RunOptions, layer: Any,
                        spatial: tuple[int, int], notes: list[str]) -> np.ndarray:
    """The PSF on the output grid: resampled (:func:`~napari_dan.model.kernels.regrid_kernel`)
    when the PSF layer and the source layer both state a pixel size and the PSF's differs from
    the output grid's (the source's / the model scale) by more than 2%; otherwise as given
    (taken to be on the output grid)."""
    src = stated_pixel(layer, spatial)
    if options.psf_pixel is None or src is None or not options.model_scale:
        return psf
    (old, old_unit), (out, out_unit) = options.psf_pixel, (src[0] / options.model_scale, src[1])
    if old_unit and out_unit:  # both physical: compare in µm (0.107 µm against 214 nm)
        a, b = micrometres(old, old_unit), micrometres(out, out_unit)
        if a is None or b is None:
            if old_unit != out_unit:
                notes.append(f"PSF layer {options.psf_name!r} has pixels of {old:.4g} {old_unit}, "
                             f"the output grid {out:.4g} {out_unit}: units not compared, the "
                             "PSF is used as it is")
                return psf
            a, b = old, out
    else:  # at least one in world units: napari draws both in the same world coordinates
        a, b = old, out
    if abs(a / b - 1) <= 0.02:
        return psf
    from ..model.kernels import regrid_kernel

    notes.append(f"PSF layer {options.psf_name!r} has {_size_text(old, old_unit)} pixels; "
                 f"resampled to the output grid's {_size_text(out, out_unit)}")
    try:
        return regrid_kernel(psf, a / b)
    except ValueError as exc:  # e.g. a PSF layer of zeros
        raise InputError(f"PSF layer {options.psf_name!r} could not be resampled: {exc}") from None


def spatial_axes(ndim: int, channel_axis: int | None) -> tuple[int, int]:
    """The two spatial axes of a layer's data: the last two, or the two before a channel axis
    that is the last (the engine's rule, ``engine.normalize.analyse``, for the layer's axes)."""
    return (ndim - 3, ndim - 2) if channel_axis == ndim - 1 else (ndim - 2, ndim - 1)


def square_pixels(scale, spatial: tuple[int, int]) -> bool:
    """The layer's pixels are square (within 1%): a kernel's width in pixels then has one
    physical size. Otherwise no physical width is given (it would need both axes)."""
    sy, sx = (abs(float(np.asarray(scale, dtype=float)[a])) for a in spatial)
    return abs(sy - sx) <= 0.01 * max(sy, sx)


def file_pixel(layer: Any) -> tuple[float, str] | None:
    """The pixel size the layer's source TIFF states (napari's own TIFF reader drops it)."""
    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or not str(path).lower().endswith((".tif", ".tiff")):
        return None
    from ..io import read_metadata

    try:
        px, unit = read_metadata(path).spatial_pixel_size()
    except (InputError, OSError, ValueError):
        return None
    return (float(px), unit) if px else None


def _plane_index(layer: Any, dims_point: Any, axes) -> dict[int, int]:
    """Data index along ``axes`` of the plane the dims slider shows (0 without a viewer)."""
    shape = layer.data[0].shape if getattr(layer, "multiscale", False) else layer.data.shape
    if dims_point is None:
        coords = np.zeros(layer.ndim)
    else:
        coords = np.asarray(layer.world_to_data(np.asarray(dims_point, dtype=float)))
    return {a: int(np.clip(np.round(coords[a]), 0, shape[a] - 1)) for a in axes}


def _displayed_axes(layer: Any, dims_point: Any, displayed: Any) -> tuple[int, ...] | None:
    """The layer's axes (its own numbering) that the viewer displays, or None when unknown."""
    if displayed is None or dims_point is None:
        return None
    lead = len(dims_point) - int(layer.ndim)  # the viewer has these world axes before the layer's
    return tuple(sorted(int(a) - lead for a in displayed if int(a) - lead >= 0))


def build_request(layer: Any, options: RunOptions, dims_point: Any = None,
                  displayed: Any = None) -> RunRequest:
    """Check ``layer`` and ``options`` and say exactly what one engine call will process.

    Parameters
    ----------
    layer : napari.layers.Image
        The source layer (anything else raises :class:`InputError` with a message).
    options : RunOptions
        The widget's choices.
    dims_point : sequence of float, optional
        ``viewer.dims.point``: picks the plane in "current plane" scope.
    displayed : sequence of int, optional
        ``viewer.dims.displayed``: "current plane" needs the Y, X plane on screen (a 3D view or
        a transposed Z, X view does not say which Y, X plane is meant).

    Raises
    ------
    InputError
        No layer, a layer that is not an image, an empty image, or a channel axis that does not fit.
    """
    if layer is None:
        raise InputError("no image layer chosen: open an image (File > Open, or File > Open Sample "
                         "> DAN blind super-resolution) and choose it in 'Image'")
    kind = _layer_kind(layer)
    if kind != "image":
        raise InputError(f"layer {layer.name!r} is a {kind} layer; DAN super-resolves pixel "
                         "images: choose an image layer")
    notes: list[str] = []
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
        notes.append("multiscale layer: the full-resolution level was used")
    if data.size == 0 or any(n == 0 for n in data.shape):
        raise InputError(f"layer {layer.name!r} is empty (shape {tuple(data.shape)}); "
                         "nothing to super-resolve")
    rgb = bool(getattr(layer, "rgb", False))
    ndim = data.ndim

    # channel axis, in the data's numbering
    ca = options.channel_axis
    if rgb:
        if ca not in ("auto", None, -1, ndim - 1):
            notes.append("RGB layer: its colour axis (the last) is the channel axis")
        channel_axis: int | None = ndim - 1  # RGBA: the engine upsamples alpha on its own
    elif ca in ("auto", None):
        channel_axis = None
    else:
        try:
            c = int(ca)
        except (TypeError, ValueError):
            raise InputError(f"channel axis must be 'auto' or an axis number, got {ca!r}") from None
        if not -ndim <= c < ndim:
            raise InputError(f"channel axis {c} does not exist: layer {layer.name!r} has {ndim} "
                             f"axes (shape {tuple(data.shape)})")
        channel_axis = c % ndim
    spatial = spatial_axes(ndim, channel_axis)
    if spatial[0] < 0 or channel_axis in spatial:
        raise InputError(f"layer {layer.name!r} (shape {tuple(data.shape)}) has no two spatial "
                         f"axes besides channel axis {channel_axis}; choose another channel axis")
    layer_ndim = int(layer.ndim)
    other = tuple(a for a in range(layer_ndim) if a not in spatial and a != channel_axis)

    plane: dict[int, int] = {}
    image = data
    engine_ca = channel_axis
    if other and options.scope == "plane":
        shown = _displayed_axes(layer, dims_point, displayed)
        if shown is not None and shown != tuple(sorted(spatial)):
            if len(shown) > 2:
                view = "the layer in 3D"
            else:
                view = "the plane of axes " + " and ".join(str(a) for a in shown)
            raise InputError(
                f"'current plane' super-resolves the Y, X plane (axes {spatial[0]} and "
                f"{spatial[1]} of layer {layer.name!r}) under the sliders, but the viewer shows "
                f"{view}: switch to the 2D view of that plane (toggle 2D/3D, or the 'transpose' "
                "button until Y and X are shown) or choose 'whole stack'")
        plane = _plane_index(layer, dims_point, other)
        image = data[tuple(slice(plane[a], plane[a] + 1) if a in plane else slice(None)
                           for a in range(ndim))]
        image = np.squeeze(np.asarray(image), axis=other)
        if engine_ca is not None:
            engine_ca -= sum(1 for a in other if a < engine_ca)
    elif options.scope not in ("plane", "stack"):
        raise InputError(f"scope must be 'plane' or 'stack', got {options.scope!r}")
    if rgb:  # the engine finds the colour axis itself: RGB(A) for every model (alpha kept out)
        engine_ca = None

    pixel = None
    if not options.pixel_size and not square_pixels(layer.scale, spatial):
        notes.append("the layer's pixels are not square (scale "
                     f"{float(layer.scale[spatial[0]]):.4g} x {float(layer.scale[spatial[1]]):.4g}): "
                     "kernel widths are given in pixels only")
    if options.pixel_size:
        if not np.isfinite(options.pixel_size) or options.pixel_size <= 0:
            raise InputError(f"the pixel size must be positive, got {options.pixel_size}")
        pixel = (float(options.pixel_size), "µm", "typed in")
    elif _layer_pixel(layer, spatial) is not None:
        pixel = (*_layer_pixel(layer, spatial), "layer")
    elif file_pixel(layer) is not None:
        pixel = (*file_pixel(layer), "file")
        notes.append(f"pixel size {pixel[0]:.4g} {pixel[1]} from {Path(layer.source.path).name} "
                     "(the layer has none)")

    mode = options.kernel_mode
    # the widget's one "Kernel" choice -> the engine's kernel_mode (estimated) or kernel (known)
    if mode == "psf":
        if options.psf is None:
            raise InputError("kernel mode 'PSF from layer' needs a PSF layer; choose one in 'PSF'")
        kernel_mode, kernel = "global", _psf_on_output_grid(
            np.asarray(options.psf, dtype=np.float32), options, layer, spatial, notes)
    elif mode == "spots":
        kernel_mode, kernel = "global", "spots"
    elif mode == "optics":
        if options.optics is None:
            raise InputError("kernel mode 'PSF from optics' needs the objective's NA and the "
                             "emission wavelength")
        um = micrometres(pixel[0], pixel[1]) if pixel is not None else None
        if um is None:
            raise InputError("'PSF from optics' needs the input pixel size in µm: the layer and "
                             "its file state none" + (f" in a length unit ({pixel[0]:g} "
                                                       f"{pixel[1]})" if pixel else "")
                             + "; type it into 'Pixel size'")
        kernel_mode, kernel = "global", replace(options.optics, pixel_size=um)
    elif mode in KERNEL_MODES_ENGINE:
        kernel_mode, kernel = mode, None
    else:
        raise InputError(f"unknown kernel mode {mode!r}; use global, per-plane, per-tile, psf, "
                         "spots or optics")
    engine_options = SROptions(channel_axis=engine_ca, tile_size=options.tile_size,
                               tile_overlap=options.tile_overlap, kernel_mode=kernel_mode,
                               kernel=kernel, device=options.device, precision=options.precision,
                               threads="auto", residual=bool(options.residual))
    if mode == "per-plane" and not (other and options.scope == "stack"):
        notes.append("one plane only: 'per plane' is the same as 'global' here")

    linear, affine = _placement(layer)

    display = {"blending": layer.blending, "opacity": float(layer.opacity)}
    if not rgb:
        display.update(colormap=layer.colormap, gamma=float(layer.gamma))
    display["contrast_limits"] = [float(v) for v in layer.contrast_limits]

    params = {"model": model_id(options.model), "tile_size": options.tile_size,
              "tile_overlap": options.tile_overlap, "kernel_mode": mode,
              "psf": options.psf_name if mode == "psf" else kernel.describe()
              if mode == "optics" else None, "precision": options.precision,
              "scope": "stack" if (other and options.scope == "stack") else "plane",
              "residual": bool(options.residual),
              "plane": {str(a): i for a, i in plane.items()}, "channel_axis": channel_axis}
    return RunRequest(
        image=image, options=engine_options, source_name=layer.name, rgb=rgb, data_ndim=ndim,
        data_shape=tuple(int(n) for n in data.shape),
        layer_ndim=layer_ndim, spatial=spatial, channel_axis=channel_axis, other_axes=other,
        plane=plane, layer_scale=np.asarray(layer.scale, dtype=float),
        layer_translate=np.asarray(layer.translate, dtype=float),
        units=tuple(getattr(layer, "units", ()) or ()) or None, display=display, params=params,
        notes=notes, pixel=pixel, layer_linear=linear, layer_affine=affine,
        source_id=_source_id(layer))


SOURCE_ID = "napari_dan_source_id"  # key in a source layer's metadata


def _source_id(layer) -> str:
    """The layer's id for re-runs, made and kept in its metadata on its first run."""
    md = getattr(layer, "metadata", None)
    if not isinstance(md, dict):
        return ""
    if not isinstance(md.get(SOURCE_ID), str):
        md[SOURCE_ID] = uuid.uuid4().hex
    return md[SOURCE_ID]


def _placement(layer) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(R @ Sh, affine matrix) of the layer, each None when it is the identity."""
    n = int(getattr(layer, "ndim", 2))
    linear = affine = None
    rotate, shear = getattr(layer, "rotate", None), getattr(layer, "shear", None)
    if rotate is not None or shear is not None:
        from napari.utils.transforms import CompositeAffine

        m = CompositeAffine(rotate=rotate, shear=shear, ndim=n).linear_matrix
        if not np.allclose(m, np.eye(n)):
            linear = np.asarray(m, dtype=float)
    a = getattr(layer, "affine", None)
    if a is not None:
        am = np.asarray(getattr(a, "affine_matrix", a), dtype=float)
        if not np.allclose(am, np.eye(len(am))):
            affine = am
    return linear, affine
