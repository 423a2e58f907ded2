"""Device and precision choice, the network copy per device, and out-of-memory detection.

Decisions (see docs/engine.md):

- ``device="auto"``: CUDA, then Apple MPS, then the CPU.
- ``precision="auto"``: autocast on GPUs (bf16 where the CUDA device supports it, else fp16; fp16
  on MPS). On a CPU, bf16 autocast only where the CPU has native bf16 instructions
  (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo) *and* a quick check on this very model shows
  the bf16 result within 0.05 dB Y-PSNR of fp32 on a synthetic degraded image; the decision is
  cached per network. Otherwise fp32.
- The caller's network is used as it is on the CPU; GPUs get a cached copy (weights refreshed per
  call). Inputs are passed channels_last (NHWC) on every device: on this CPU that made the
  Restorer 1.5x (fp32) to 2.7x (bf16) faster with unchanged weights.
- Out of memory (CUDA, MPS or a failed CPU allocation) is recognised by :func:`is_oom`; the engine
  halves its tiles and retries, and raises :class:`OutOfMemory` when even small tiles fail.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import DanError, InputError

__all__ = ["OutOfMemory", "Precision", "resolve_device", "resolve_precision", "cpu_has_native_bf16",
           "network_on", "is_oom", "autocast", "BF16_TOLERANCE_DB", "CompiledRestorer"]

BF16_TOLERANCE_DB = 0.05
_PRECISIONS = ("auto", "fp32", "fp16", "bf16")


class OutOfMemory(DanError, MemoryError):
    """The device ran out of memory even with the smallest tiles."""


@dataclass(frozen=True)
class Precision:
    """``name`` is "fp32", "fp16" or "bf16"; ``reason`` says why it was chosen."""

    name: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.name)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda, then mps, then cpu; anything else is checked to exist."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise InputError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    d = device.strip().lower()
    if d == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(d)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or "
                         "'mps'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was asked for but this PyTorch has no usable CUDA "
                         "GPU; use device='cpu' or 'auto'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                  and torch.backends.mps.is_available()):
        raise InputError(f"device {device!r} was asked for but MPS is not available; use "
                         "device='cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {device!r}; use 'auto', 'cpu', 'cuda' or 'mps'")
    return dev


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists ``avx512_bf16`` or ``amx_bf16`` (Linux only)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def autocast(device: torch.device, precision: Precision):
    """The autocast context for a precision (a no-op context for fp32)."""
    if precision.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision.dtype)


# network -> {device string: copy}; weak so that dropping a model frees its copies
_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# network -> bool (bf16 passed the accuracy check on the CPU)
_BF16_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def network_on(network: nn.Module, device: torch.device) -> nn.Module:
    """The network on ``device``: the caller's own module on the CPU; elsewhere a cached copy
    whose weights are refreshed from the caller's module on every call (a few MB, so a model
    that is still being trained, or edited, is never run with stale weights)."""
    if device.type == "cpu":
        return network
    per = _COPIES.setdefault(network, {})
    key = str(device)
    if key not in per:
        per[key] = copy.deepcopy(network).to(device).eval()
    else:
        per[key].load_state_dict(network.state_dict())
        per[key].kernel_mean.copy_(network.kernel_mean)
    return per[key]


def _synthetic_pair(scale: int, in_nc: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A fixed synthetic HR image (edges, blobs, stripes) and its blurred, decimated LR."""
    rng = np.random.default_rng(7)
    n = size * scale
    yy, xx = np.mgrid[0:n, 0:n] / n
    hr = np.zeros((in_nc, n, n))
    for c in range(in_nc):
        img = 0.3 + 0.2 * np.sin(2 * math.pi * (6 + c) * (xx + 0.3 * yy))
        for _ in range(12):
            cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.15)
            img += rng.uniform(-0.3, 0.3) * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
        hr[c] = np.clip(img, 0, 1)
    # Gaussian blur (sigma scale/2 HR px) by FFT, then decimation: a plausible degradation
    sigma = 0.5 * scale
    f = np.fft.fftfreq(n)
    g = np.exp(-2 * (math.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    blurred = np.real(np.fft.ifft2(np.fft.fft2(hr) * g))
    off = scale // 2
    lr = np.round(np.clip(blurred[:, off::scale, off::scale], 0, 1) * 255) / 255
    return hr.astype(np.float32), lr.astype(np.float32)


def _y_psnr(sr: np.ndarray, hr: np.ndarray, border: int = 0) -> float:
    """Y-channel (BT.601) PSNR of (C, H, W) images in [0, 1]; gray images are their own Y."""
    def y(a: np.ndarray) -> np.ndarray:
        a = np.clip(a.astype(np.float64), 0, 1)
        if a.shape[0] == 3:
            return 16 + 65.481 * a[0] + 128.553 * a[1] + 24.966 * a[2]
        return 255 * a[0]
    a, b = y(sr), y(hr)
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def bf16_accurate_on_cpu(network: nn.Module) -> bool:
    """Whether bf16 autocast keeps this network's Y-PSNR within 0.05 dB of fp32 (cached)."""
    if network in _BF16_OK:
        return _BF16_OK[network]
    hr, lr = _synthetic_pair(int(network.scale), int(network.in_nc))
    x = torch.from_numpy(lr)[None].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        sr32 = network(x)[0][0].float().numpy()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sr16 = network(x)[0][0].float().numpy()
    s = int(network.scale)
    ok = bool(abs(_y_psnr(sr16, hr, s) - _y_psnr(sr32, hr, s)) <= BF16_TOLERANCE_DB)
    _BF16_OK[network] = ok
    return ok


def resolve_precision(precision: str, device: torch.device, network: nn.Module) -> Precision:
    """Pick the precision (see the module docstring)."""
    if not isinstance(precision, str) or precision.lower() not in _PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}")
    p = precision.lower()
    if p != "auto":
        return Precision(p, "asked for")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "auto: CUDA device with bf16")
        return Precision("fp16", "auto: CUDA device")
    if device.type == "mps":
        return Precision("fp16", "auto: MPS device")
    if not cpu_has_native_bf16():
        return Precision("fp32", "auto: CPU without native bf16")
    if bf16_accurate_on_cpu(network):
        return Precision("bf16", f"auto: native CPU bf16 within {BF16_TOLERANCE_DB} dB of fp32")
    return Precision("fp32", f"auto: bf16 was more than {BF16_TOLERANCE_DB} dB off fp32")


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory failure on any device."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        msg = str(exc).lower()
        return "out of memory" in msg or "can't allocate memory" in msg or \
            "not enough memory" in msg
    return False


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def memory_budget(device: torch.device) -> int:
    """Bytes the engine may use for one tile's activations on ``device``."""
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
            return int(0.5 * free)
        except RuntimeError:
            return 2 << 30
    if device.type == "mps":
        return 1 << 30
    try:
        import psutil

        avail = psutil.virtual_memory().available
    except ImportError:  # psutil is optional; assume a modest machine
        avail = 4 << 30
    # the CPU gains little from huge tiles; keep peak memory modest
    return int(min(1 << 30, 0.25 * avail))


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class CompiledRestorer:
    """The Restorer through ``torch.compile`` (inductor), falling back to the eager module.

    Compiling fuses the element-wise steps between the convolutions (on this project's CPU the
    bf16 Restorer ran 2.2x faster per tile) but costs a compilation per tile shape and process, and needs a C
    compiler at run time; so it is an option (``compiled=True``, CLI ``--compile``), cached per
    network. Any failure to compile (no compiler, an unsupported backend) falls back to the eager
    Restorer for the rest of the process and is noted in ``note``.
    """

    def __init__(self, network: nn.Module):
        self.network = network
        self.note = "torch.compile (inductor)"
        self._fn = torch.compile(network.Restorer, dynamic=False)
        self._failed = False

    @classmethod
    def for_network(cls, network: nn.Module) -> CompiledRestorer:
        hit = _COMPILED.get(network)
        if hit is None:
            hit = _COMPILED[network] = cls(network)
        return hit

    def __call__(self, lr: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        if not self._failed:
            try:
                return self._fn(lr, code)
            except Exception as e:  # noqa: BLE001 - compilation can fail in many ways
                if is_oom(e):
                    raise
                self._failed = True
                self.note = (f"torch.compile failed ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else ''});"
                             " eager Restorer used")
        return self.network.Restorer(lr, code)
