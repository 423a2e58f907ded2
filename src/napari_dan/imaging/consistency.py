"""The consistency check of a result: does the SR image, seen through the kernel it was restored
with and sampled back to the input grid, reproduce the input?

``residual = LR - D(SR * k)`` where ``*`` is the convolution with the (HR-grid) kernel and ``D``
the model's sampling (camera binning for the microscopy models, MATLAB bicubic for the photo
models). Its relative size ``||residual|| / ||LR||`` (over the interior, in network units, where
the 0.1 percentile is 0) is reported for every plane. It includes the input's noise, which the
SR image does not reproduce; structure in the residual map shows where the network invented or
lost something.
"""

from __future__ import annotations

import numpy as np

__all__ = ["reproject", "consistency"]


def reproject(sr: np.ndarray, kernel: np.ndarray, scale: int, sampling: str) -> np.ndarray:
    """(C, sH, sW) SR -> (C, H, W): blurred with ``kernel`` (reflect padding) and sampled down,
    one channel at a time, in float32 (a check, not a measurement: float32 keeps a 2048x2048 x4
    RGB result to a few seconds and a few hundred MB)."""
    from .camera import bin_pixels
    from .degradations import blur, imresize

    if sampling not in ("bin", "bicubic"):
        raise ValueError(f"sampling must be 'bin' or 'bicubic', got {sampling!r}")
    sr = np.asarray(sr)
    out = []
    for ch in sr:
        blurred = blur(ch, kernel, dtype=np.float32)
        if sampling == "bin":
            out.append(bin_pixels(blurred, scale, dtype=np.float32))
        else:
            out.append(imresize(blurred, 1.0 / scale, dtype=np.float32))
    return np.stack(out).astype(np.float32, copy=False)


def consistency(lr: np.ndarray, sr: np.ndarray, kernel: np.ndarray, scale: int,
                sampling: str, border: int | None = None,
                floor_rms: float = 0.0) -> tuple[float, np.ndarray]:
    """Relative residual (interior, ``border`` LR pixels left out: default half the kernel's
    reach) and the residual map (C, H, W) of an SR result, both in the units of ``lr``.
    The residual is relative to the input's norm, or to ``floor_rms`` per pixel if that is
    larger (the engine passes 0.001 of the image's range, so a flat input does not divide by
    nothing)."""
    lr = np.asarray(lr, np.float32)
    back = reproject(sr, kernel, scale, sampling)
    h, w = lr.shape[-2:]
    back = back[..., :h, :w]
    res = lr[..., :back.shape[-2], :back.shape[-1]] - back
    if border is None:
        border = kernel.shape[-1] // (2 * scale) + 2
    b = min(border, max(0, (min(res.shape[-2:]) - 1) // 2))
    inner = res[..., b:res.shape[-2] - b, b:res.shape[-1] - b]
    ref = lr[..., b:res.shape[-2] - b, b:res.shape[-1] - b]
    floor = max(floor_rms * float(np.sqrt(ref.size)), 1e-12)
    rel = float(np.linalg.norm(inner) / max(float(np.linalg.norm(ref)), floor))
    return rel, res
