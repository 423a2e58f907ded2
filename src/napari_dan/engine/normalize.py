"""What the input is (axes, channels, dtype) and how its values map to the network's [0, 1] and back.

Axes
----
- The two spatial axes are the last two axes that are not the channel axis.
- RGB/RGBA: the channel axis is the last axis and has 3 or 4 entries. Without ``channel_axis``
  a last axis of 3 or 4 (on an array of 3 or more dimensions) is taken as RGB(A), as napari does;
  so is a ``channel_axis`` given for such an axis with a 3-channel (colour) model. Alpha never
  goes through the network: it is upsampled with bicubic interpolation.
- Any other ``channel_axis``: independent channels (fluorescence), each run as a grey image;
  with a 1-channel model this includes a last axis of 3 or 4 given as ``channel_axis`` (a
  fourth channel is then a channel, not alpha).
- All remaining leading axes (Z, T, ...) are processed one plane at a time.

Channels and the model
----------------------
- 1-channel model: grey images directly; RGB and multichannel planes channel by channel (the
  channels are the batch of one network call).
- 3-channel model: RGB directly; grey images and each independent channel are replicated to three
  channels and the three outputs averaged back.

Values
------
- uint8: divided by 255 (the photo models' training domain), no stretching; except for the
  microscopy models (trained on fields normalised by their own percentiles), where 8-bit data
  is treated like any other dtype.
- Every other dtype (uint16, other ints, float16/32/64): an affine map sending the 0.1 and 99.9
  percentiles to 0 and 1; values outside are kept (not clipped), so bright spots survive. The
  percentiles are computed per plane (subsampled to about 1 Mpx), jointly over the colours a
  3-channel model sees together and per channel otherwise; every tile of a plane shares its
  plane's map (no seams). Each plane of a stack gets its own map, in every kernel mode: each
  plane is then seen as the network was trained (a field by its own range). One map for the
  stack would put a dim plane of a z-stack whose focus is 50x brighter at a fiftieth of the
  unit range, where the network's small absolute errors become large relative ones. The map
  is inverted on the output, so intensities between planes keep their ratios.
- Output dtype = input dtype: integers are rounded and clipped to their range (64-bit ones
  exactly to their maximum), floats clipped to their dtype's finite range, so an output never
  holds Inf. Network inputs are limited to +-1e6 times the percentile range (``UNIT_LIMIT``):
  only a value a million times brighter than the image's 99.9th percentile is affected, and
  it keeps the network's arithmetic finite. Values near float32's limit (1e30 and beyond) are
  mapped in float64.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

__all__ = ["Layout", "analyse", "Normalisation", "compute_normalisation", "LOW_PERCENTILE",
           "HIGH_PERCENTILE", "SPARSE_RANGE", "MIN_SIDE", "FEW_LEVELS", "few_levels_warning",
           "colour_model_warning"]

LOW_PERCENTILE, HIGH_PERCENTILE = 0.1, 99.9
#: the unit range reaches at least 1/SPARSE_RANGE of the way from the low percentile to the
#: brightest value (sparse fields, where the 99.9th percentile is still background)
SPARSE_RANGE = 50.0
#: network inputs are limited to this many times the 0.1-99.9 percentile range (a few extreme
#: values, e.g. 3e38 in a float image, would otherwise overflow inside the network)
UNIT_LIMIT = 1e6
#: values or ranges beyond this are mapped in float64 (float32 would overflow near 3.4e38)
WIDE_VALUES = 1e30
MIN_SIDE = 4  # below this a "spatial" axis is almost certainly not one
#: a last axis this short on an array of 3+ dimensions, much shorter than the axis before it,
#: more likely holds channels than pixels: a warning says how it was read
FEW_CHANNELS_SIDE = 8


@dataclass
class Layout:
    """Axes of the input and how its channels are fed to the network."""

    shape: tuple[int, ...]
    dtype: np.dtype
    channel_axis: int | None
    spatial_axes: tuple[int, int]
    lead_axes: tuple[int, ...]
    channels: int  # 0 = no channel axis
    rgb: bool
    alpha: bool
    in_nc: int
    scale: int
    handling: str = ""
    lead_shape: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.lead_shape = tuple(self.shape[a] for a in self.lead_axes)

    @property
    def height(self) -> int:
        return self.shape[self.spatial_axes[0]]

    @property
    def width(self) -> int:
        return self.shape[self.spatial_axes[1]]

    @property
    def n_planes(self) -> int:
        return int(np.prod(self.lead_shape)) if self.lead_shape else 1

    @property
    def colour_channels(self) -> int:
        """Channels that go through the network (alpha excluded)."""
        return 3 if self.rgb else max(self.channels, 1)

    @property
    def batch(self) -> int:
        """Images per network call for one plane."""
        if self.rgb and self.in_nc == 3:
            return 1
        return self.colour_channels

    @property
    def out_shape(self) -> tuple[int, ...]:
        s = list(self.shape)
        for a in self.spatial_axes:
            s[a] *= self.scale
        return tuple(s)

    def plane_index(self, lead: tuple[int, ...]) -> tuple:
        """Index into the input (or output) that selects one plane."""
        idx: list = [slice(None)] * len(self.shape)
        for a, i in zip(self.lead_axes, lead, strict=True):
            idx[a] = i
        return tuple(idx)

    def plane_to_hwc(self, plane: np.ndarray) -> np.ndarray:
        """The plane as (H, W, C) (C=1 without a channel axis)."""
        if self.channel_axis is None:
            return plane[..., None]
        # axes left after removing the lead axes keep their order
        rest = [a for a in range(len(self.shape)) if a not in self.lead_axes]
        c = rest.index(self.channel_axis)
        return np.moveaxis(plane, c, -1)

    def hwc_to_plane(self, hwc: np.ndarray) -> np.ndarray:
        if self.channel_axis is None:
            return hwc[..., 0]
        rest = [a for a in range(len(self.shape)) if a not in self.lead_axes]
        return np.moveaxis(hwc, -1, rest.index(self.channel_axis))


def analyse(image, channel_axis: int | None, in_nc: int, scale: int) -> Layout:
    """Check the input and describe its axes; raises :class:`InputError` with what to change."""
    shape = getattr(image, "shape", None)
    dtype = getattr(image, "dtype", None)
    if shape is None or dtype is None:
        try:
            arr = np.asarray(image)
        except Exception:  # noqa: BLE001 - anything unconvertible is a caller error
            raise InputError(f"cannot use a {type(image).__name__} as an image; pass a numpy, "
                             "dask or zarr array") from None
        shape, dtype = arr.shape, arr.dtype
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        raise InputError("the image is boolean (a mask); convert it to uint8 (0/255) or float "
                         "first if you really want to super-resolve it")
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise InputError(f"images of dtype {dtype} are not supported; use an integer or float "
                         "array")
    if len(shape) == 0:
        raise InputError("the image is a single number (0-d); pass a 2D array or more")
    if len(shape) == 1:
        raise InputError(f"the image is 1-D (shape {shape}); super-resolution needs two spatial "
                         "axes")
    if 0 in shape:
        raise InputError(f"the image is empty (shape {shape})")
    ndim = len(shape)
    if channel_axis is not None:
        if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
            raise InputError(f"channel_axis must be an int or None, got {channel_axis!r}")
        if not -ndim <= channel_axis < ndim:
            raise InputError(f"channel_axis={channel_axis} is outside the image's {ndim} axes "
                             f"(shape {shape})")
        ch = int(channel_axis) % ndim
        if ndim < 3:
            raise InputError(f"channel_axis={channel_axis} leaves fewer than two spatial axes "
                             f"in an image of shape {shape}")
    elif ndim >= 3 and shape[-1] in (3, 4):
        ch = ndim - 1
    else:
        ch = None
    auto = channel_axis is None
    rest = [a for a in range(ndim) if a != ch]
    spatial = (rest[-2], rest[-1])
    lead = tuple(rest[:-2])
    h, w = shape[spatial[0]], shape[spatial[1]]
    if min(h, w) < MIN_SIDE:
        hint = ""
        if ch is None and ndim >= 3 and shape[-1] < MIN_SIDE:
            hint = "; if the last axis holds channels, pass channel_axis"
        raise InputError(f"the spatial axes are {h} x {w} pixels (shape {shape}); at least "
                         f"{MIN_SIDE} pixels per axis are needed{hint}")
    if ch is None and ndim >= 3 and w <= FEW_CHANNELS_SIDE and h >= 4 * w:
        warnings.warn(f"the image's last axis ({w} entries, shape {shape}) is read as X, so its "
                      f"planes are {h} x {w} pixels; if that axis holds channels, pass "
                      "channel_axis=-1", UserWarning, stacklevel=5)
    channels = shape[ch] if ch is not None else 0
    # RGB(A): a last axis of 3 or 4 found by itself, or given to a colour (3-channel) model; a
    # channel axis given to a 1-channel model means independent channels (fluorescence), each
    # with its own value map, a 4th one through the network too (not upsampled as alpha)
    rgb = ch == ndim - 1 and channels in (3, 4) and (auto or in_nc == 3)
    layout = Layout(shape, dtype, ch, spatial, lead, channels, rgb, rgb and channels == 4,
                    int(in_nc), int(scale))
    if rgb and in_nc == 3:
        handling = "RGB through the 3-channel model"
    elif rgb:
        handling = "RGB channel by channel (1-channel model)"
    elif channels and in_nc == 1:
        handling = f"{channels} channels one by one (1-channel model)"
    elif channels:
        handling = (f"{channels} channels one by one, each replicated to 3 and averaged back "
                    "(3-channel model)")
    elif in_nc == 3:
        handling = "grey replicated to 3 channels, outputs averaged back (3-channel model)"
    else:
        handling = "grey through the 1-channel model"
    if layout.alpha:
        handling += "; alpha upsampled bicubically, not through the network"
    layout.handling = handling
    return layout


@dataclass
class Normalisation:
    """Per-channel affine map ``unit = (value - lo) / (hi - lo)`` (arrays of the colour channels)."""

    lo: np.ndarray
    hi: np.ndarray
    method: str
    flat: bool = False  # every channel was one value (given a unit range to divide by)

    @property
    def wide(self) -> bool:
        """True when the values are too large for float32 arithmetic (near float32's limit):
        the affine map is then computed in float64."""
        return bool(max(np.max(np.abs(self.lo)), np.max(np.abs(self.hi)),
                        np.max(self.hi - self.lo)) > WIDE_VALUES)

    def to_unit(self, hwc: np.ndarray) -> np.ndarray:
        """Raw (H, W, C) -> float32 network units, limited to +-:data:`UNIT_LIMIT`."""
        c = hwc.shape[-1]
        if self.wide:
            u = ((hwc.astype(np.float64) - self.lo[:c]) / (self.hi[:c] - self.lo[:c])
                 ).astype(np.float32)
        else:
            lo = self.lo[:c].astype(np.float32)
            u = (hwc.astype(np.float32) - lo) * (1 / (self.hi[:c] - self.lo[:c])).astype(np.float32)
        return np.clip(u, -UNIT_LIMIT, UNIT_LIMIT, out=u)

    def from_unit(self, hwc: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Inverse map and cast; works in place on a float32 ``hwc`` (an HR plane is large)."""
        c = hwc.shape[-1]
        if self.wide:
            x = hwc.astype(np.float64) * (self.hi[:c] - self.lo[:c]) + self.lo[:c]
            return cast(x, dtype, inplace=True)
        x = hwc if hwc.dtype == np.float32 else hwc.astype(np.float32)
        x *= (self.hi[:c] - self.lo[:c]).astype(np.float32)
        x += self.lo[:c].astype(np.float32)
        return cast(x, dtype, inplace=True)

    def to_dict(self) -> dict:
        return {"method": self.method, "low": self.lo.tolist(), "high": self.hi.tolist()}


#: an integer image whose 0.1-99.9 percentile range spans fewer grey levels than this gets a
#: warning: the result keeps the input's dtype, so it is rounded to those few levels
FEW_LEVELS = 16


def few_levels_warning(layout: Layout, norm: Normalisation) -> str | None:
    """A warning for integer images that span only a few grey levels (None otherwise): the
    result is rounded to the same integers, so its finer values are lost in visible steps."""
    if norm.flat:
        return (f"the image is flat ({layout.dtype}, nearly all of it {float(np.min(norm.lo)):g}): "
                "there is nothing to super-resolve and no PSF to estimate")
    if not np.issubdtype(layout.dtype, np.integer) or norm.method == "uint8/255":
        return None
    span = float(np.max(norm.hi - norm.lo))
    if span >= FEW_LEVELS:
        return None
    if float(np.max(norm.hi)) - float(np.min(norm.lo)) <= 1:  # a flat field: no steps to see
        return (f"the image is flat ({layout.dtype}, nearly all of it {float(np.min(norm.lo)):g}): "
                "there is nothing to super-resolve and no PSF to estimate")
    return (f"the image spans only about {span + 1:.0f} grey levels ({layout.dtype}, "
            f"{LOW_PERCENTILE}-{HIGH_PERCENTILE} percentiles {float(np.min(norm.lo)):g} to "
            f"{float(np.max(norm.hi)):g}), and the result keeps its dtype, so it is rounded to "
            "those levels and shows steps; convert the image to float32 first for a smooth "
            "result")


def colour_model_warning(layout: Layout, model_name: str) -> str | None:
    """A warning when a model of colour photographs (3 input channels) gets an image that is not
    a colour image: a grey one, or channels run one by one (None otherwise). Each grey plane is
    copied into three colours and the result averaged back, which runs, but a grey or
    fluorescence model is made for such images."""
    if layout.in_nc != 3 or layout.rgb:
        return None
    what = ("the image is grey" if layout.colour_channels == 1 else
            f"the image has {layout.colour_channels} channels, each run as a grey image,")
    return (f"{what} and {model_name} is a model of colour photographs; for fluorescence "
            "microscopy use dan-x2-fluo (or dan-x4-fluo), for other grey images dan-x2-gray "
            "(or dan-x4-gray)")


def cast(x: np.ndarray, dtype: np.dtype, inplace: bool = False) -> np.ndarray:
    """Round and clip to an integer dtype's range, or clip to a float dtype's finite range.

    ``inplace=True`` lets the rounding and clipping overwrite ``x`` (saves two copies)."""
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values are clipped here
        return _cast(x, np.dtype(dtype), inplace)


def _cast(x: np.ndarray, dtype: np.dtype, inplace: bool) -> np.ndarray:
    # float32 cannot hold the limits of 32/64-bit integers exactly (clipping would overflow)
    wide = np.issubdtype(dtype, np.integer) and np.iinfo(dtype).bits > 16
    if not inplace or not np.issubdtype(x.dtype, np.floating) or (wide and x.dtype != np.float64):
        x = np.array(x, dtype=np.float64 if wide else np.float32)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        np.rint(x, out=x)
        top = float(info.max)
        if int(top) > info.max:  # (u)int64: the float nearest the maximum is above it
            over = x >= top
            np.clip(x, info.min, np.nextafter(top, 0), out=x)
            out = x.astype(dtype)
            out[over] = info.max
            return out
        np.clip(x, info.min, info.max, out=x)
        return x.astype(dtype)
    # values beyond the narrower float's range would become (or stay) inf
    f = min(np.finfo(dtype), np.finfo(x.dtype), key=lambda fi: fi.bits)
    np.clip(x, f.min, f.max, out=x)
    return x.astype(dtype, copy=False)


def check_finite(hwc: np.ndarray, where: str) -> None:
    if np.issubdtype(hwc.dtype, np.floating) and not np.all(np.isfinite(hwc)):
        raise InputError(f"the image contains NaN or Inf values{f' ({where})' if where else ''}; "
                         "replace them (e.g. numpy.nan_to_num) before super-resolving")


def compute_normalisation(read_plane, layout: Layout, *, stretch_uint8: bool = False,
                          leads=None) -> Normalisation:
    """The value map for the whole array; ``read_plane(lead)`` returns one plane as (H, W, C).

    ``stretch_uint8``: 8-bit input gets percentiles too instead of /255 (the microscopy models,
    trained on fields normalised by their own percentiles: an 8-bit microscope image is a
    camera's or PMT's counts, not a photo's 0-255 scale). ``leads``: the planes to sample
    (default: up to 8 evenly spaced; one plane for a per-plane map)."""
    nc = layout.colour_channels
    if layout.dtype == np.uint8 and not stretch_uint8:
        return Normalisation(np.zeros(nc, np.float32), np.full(nc, 255, np.float32), "uint8/255")
    if leads is None:
        n = layout.n_planes
        picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, 8))})
        leads = [tuple(int(i) for i in np.unravel_index(p, layout.lead_shape))
                 if layout.lead_shape else () for p in picks]
    step = max(1, int(np.sqrt(layout.height * layout.width / 1e6)))
    samples = []
    for lead in leads:
        hwc = np.asarray(read_plane(tuple(lead)))[::step, ::step, :nc]
        check_finite(hwc, f"plane {tuple(lead)}" if lead else "")
        samples.append(hwc.reshape(-1, nc).astype(np.float64))
    data = np.concatenate(samples)
    if (layout.rgb and layout.in_nc == 3) or nc == 1:
        # one map for the colours a 3-channel model sees together (their balance is its input);
        # through a 1-channel model every channel is its own image and gets its own map
        lo, hi = np.percentile(data, [LOW_PERCENTILE, HIGH_PERCENTILE])
        top = data.max()
        lo, hi, top = np.full(nc, lo), np.full(nc, hi), np.full(nc, top)
        how = "joint"
    else:
        lo = np.percentile(data, LOW_PERCENTILE, axis=0)
        hi = np.percentile(data, HIGH_PERCENTILE, axis=0)
        top = data.max(axis=0)
        how = "per channel"
    with np.errstate(over="ignore", invalid="ignore"):
        # sparse fluorescence: when fewer than 0.1% of the pixels hold the objects, the 99.9th
        # percentile is background and the objects would reach hundreds of units; the range is
        # at least 1/SPARSE_RANGE of the way to the brightest value
        hi = np.maximum(hi, lo + (top - lo) / SPARSE_RANGE)
    with np.errstate(over="ignore", invalid="ignore"):
        span_ok = np.all(np.isfinite(hi - lo))
    if not span_ok:
        raise InputError("the image's values span more than float64 can hold (from "
                         f"{float(np.min(lo)):.3g} to {float(np.max(hi)):.3g}); rescale it first")
    # a flat image (or channel) would divide by zero: give it a unit range instead
    # (relative to the values, so an image of values around 1e-15 is not flat)
    flat = (hi - lo) <= 1e-12 * np.maximum(np.abs(hi), np.abs(lo))
    hi = np.where(flat, lo + np.maximum(1, np.abs(lo) * 2.0**-20), hi)  # lo + 1 == lo beyond 2**53
    where = "whole array" if len(leads) != 1 or layout.n_planes == 1 else "this plane"
    return Normalisation(lo.astype(np.float64), hi.astype(np.float64),
                         f"percentiles {LOW_PERCENTILE}/{HIGH_PERCENTILE} -> 0/1 ({how}, {where})",
                         flat=bool(np.all(flat)))
