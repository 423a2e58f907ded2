"""How a TIFF series is cut into blocks: what one engine call sees, made of whole pages."""

from __future__ import annotations

from itertools import product

import numpy as np

from ..errors import InputError

__all__ = ["BlockLayout"]


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
