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

__all__ = ["OutOfMemory", "Precision", "available_devices", "resolve_device", "resolve_precision",
           "cpu_has_native_bf16", "network_on", "channels_last_weights", "is_oom", "autocast", "BF16_TOLERANCE_DB"]

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


def available_devices() -> list[str]:
    """The device names this machine offers: "auto", "cpu", each CUDA GPU, "mps"."""
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


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
                         "GPU; use the device 'cpu' or 'auto'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                  and torch.backends.mps.is_available()):
        raise InputError(f"device {device!r} was asked for but MPS is not available; use "
                         "the device 'cpu' or 'auto'")
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
# network -> {runtime: bool} (bf16 passed the accuracy check on the CPU)
_BF16_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def channels_last_weights(network: nn.Module) -> nn.Module:
    """For a one-channel (grey) network: store every 2D convolution's weight channels_last
    (NHWC), in place; values unchanged. Other networks are returned untouched.

    PyTorch runs a convolution in NHWC when its input *or* its weight is NHWC. A one-channel
    input (every grey model's) is NHWC and NCHW at once, and PyTorch then reads it as NCHW, so
    the grey models ran every layer in the slower NCHW kernels although the engine passes
    channels_last input; NHWC weights make the choice unambiguous. With three channels the input
    alone decides, and NHWC weights gained nothing (0.81-1.04x, docs/benchmarks.md). On this
    project's CPU a grey ``super_resolve`` became 1.2-1.45x faster in fp32 and 1.6-3.8x in bf16,
    with the same output."""
    if int(getattr(network, "in_nc", 0)) != 1:
        return network
    for m in network.modules():
        if isinstance(m, nn.Conv2d) and not m.weight.is_contiguous(
                memory_format=torch.channels_last):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    return network


def network_on(network: nn.Module, device: torch.device) -> nn.Module:
    """The network on ``device``: the caller's own module on the CPU (a grey network's
    convolution weights made channels_last in place, :func:`channels_last_weights`); elsewhere a cached copy whose
    weights are refreshed from the caller's module on every call (a few MB, so a model that is
    still being trained, or edited, is never run with stale weights)."""
    if device.type == "cpu":
        return channels_last_weights(network)
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


def _loop_output(network: nn.Module, x: torch.Tensor, bf16: bool, runtime: str) -> np.ndarray:
    """The full loop's last SR image, (C, H, W), in fp32 or bf16 on the given CPU runtime."""
    if runtime == "openvino":
        from .runtime import OpenVinoNetwork  # imported here: runtime imports this module

        prec = Precision("bf16" if bf16 else "fp32", "accuracy check")
        restorer, estimator = OpenVinoNetwork.for_network(network).parts(prec)
        srs, _, _ = network.forward_all(x.contiguous(), restorer=restorer, estimator=estimator)
        return srs[-1][0].float().numpy()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        return network(x)[0][0].float().numpy()


def bf16_accurate_on_cpu(network: nn.Module, runtime: str = "torch") -> bool:
    """Whether bf16 keeps this network's Y-PSNR within 0.05 dB of fp32 on the given CPU runtime
    ("torch": autocast; "openvino": its bf16 inference precision); cached per network and
    runtime."""
    per = _BF16_OK.setdefault(network, {})
    if runtime in per:
        return per[runtime]
    hr, lr = _synthetic_pair(int(network.scale), int(network.in_nc))
    x = torch.from_numpy(lr)[None].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        sr32 = _loop_output(network, x, False, runtime)
        sr16 = _loop_output(network, x, True, runtime)
    s = int(network.scale)
    ok = bool(abs(_y_psnr(sr16, hr, s) - _y_psnr(sr32, hr, s)) <= BF16_TOLERANCE_DB)
    per[runtime] = ok
    return ok


def resolve_precision(precision: str, device: torch.device, network: nn.Module,
                      runtime: str = "torch") -> Precision:
    """Pick the precision (see the module docstring); ``runtime`` ("torch" or "openvino") is
    what will run the network on the CPU, and what bf16's accuracy is checked with."""
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
    if bf16_accurate_on_cpu(network, runtime):
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
