"""What runs the network's graph: PyTorch (eager, or ``torch.compile``) or, on request, OpenVINO.

Decisions (see docs/engine.md; measured in docs/benchmarks.md):

- ``runtime="torch"`` (the default): PyTorch on every device. On the CPU the convolution weights
  are stored channels_last (:func:`.devices.channels_last_weights`), which is what made PyTorch
  as fast as OpenVINO here for whole calls.
- ``runtime="openvino"``: OpenVINO on the CPU, in fp32 or bf16, where the ``openvino`` package is
  installed (``pip install "napari-dan[openvino]"``); a clear error otherwise. Same results
  (within 1 grey level in fp32); on this project's 2-core Xeon whole ``super_resolve`` calls
  took 0.85-1.27x PyTorch's time for the x2 models and 1.9-2.5x for the x4 models, so it is an
  option, not the default. It may pay on other CPUs; ``benchmarks/speed.py --openvino``
  measures it.

:class:`OpenVinoNetwork` traces the Restorer and the Estimator once per network and process
(on a small input; the OpenVINO models take any batch and size), compiles them per precision
and thread count, and converts them again when the network's weights have changed since (a
model being trained, or edited, is never run with stale weights). The unrolled loop itself
stays the network's own (``forward_all`` with the OpenVINO parts passed in), so both runtimes
run the same algorithm.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
import weakref

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..model.danv2 import reads_sr
from .devices import Precision, is_oom

__all__ = ["RUNTIMES", "openvino_version", "resolve_runtime", "OpenVinoNetwork",
           "CompiledRestorer"]

#: what ``SROptions.runtime`` can be
RUNTIMES = ("torch", "openvino")
_OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


@functools.lru_cache(maxsize=1)
def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None when it is not installed (or fails to load)."""
    if importlib.util.find_spec("openvino") is None:
        return None
    try:
        import openvino as ov
    except Exception:  # noqa: BLE001 - a broken install counts as none
        return None
    return str(ov.__version__).split("-")[0]


def resolve_runtime(runtime: str, device: torch.device, precision: str, compiled: bool) -> str:
    """Check that the requested ``runtime`` can run here; returns it ("torch" or "openvino").

    ``precision`` is the *requested* precision ("auto", "fp32", "fp16", "bf16")."""
    if not isinstance(runtime, str) or runtime.lower() not in RUNTIMES:
        raise InputError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    r = runtime.lower()
    if r == "torch":
        return "torch"
    reasons = []
    if device.type != "cpu":
        reasons.append(f"it runs on the CPU only (device is {device})")
    if str(precision).lower() not in ("auto", *_OV_PRECISIONS):
        reasons.append(f"it runs fp32 or bf16 only (precision is {precision!r})")
    if compiled:
        reasons.append("compiled=True asks for torch.compile")
    if openvino_version() is None:
        reasons.append("the openvino package is not installed "
                       "(pip install \"napari-dan[openvino]\")")
    if reasons:
        raise InputError("runtime='openvino' cannot be used: " + "; ".join(reasons) +
                         "; use runtime='torch'")
    return "openvino"


def weights_stamp(network: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer of ``network`` is replaced or modified in place
    (PyTorch counts in-place writes per tensor in ``_version``)."""
    return tuple((id(t), t._version) for t in (*network.parameters(), *network.buffers()))


def _one_per_network(cache: weakref.WeakKeyDictionary, cls, network: nn.Module):
    """``cls(network)``, made once per network (weakly cached: dropping the model frees it)."""
    hit = cache.get(network)
    if hit is None:
        hit = cache[network] = cls(network)
    return hit


_OV_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class OpenVinoNetwork:
    """A DAN network's Restorer and Estimator as OpenVINO models on the CPU (see the module
    docstring). Use :meth:`for_network` (one per network and process)."""

    def __init__(self, network: nn.Module):
        self.network = network
        self._stamp: tuple | None = None
        self._models: dict = {}
        self._compiled: dict = {}

    @classmethod
    def for_network(cls, network: nn.Module) -> OpenVinoNetwork:
        return _one_per_network(_OV_CACHE, cls, network)

    def _convert(self) -> None:
        import openvino as ov

        net = self.network
        lr = torch.rand(1, int(net.in_nc), 24, 24, generator=torch.Generator().manual_seed(0))
        code = net.initial_code(1).clone()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python-side shape logic
            traced = torch.jit.trace(net.Restorer, (lr, code), check_trace=False)
            restorer = ov.convert_model(traced, example_input=(lr, code))
            self._models = {"restorer": restorer}
            if reads_sr(net):
                # an Estimator of the LR image alone runs once a patch, in PyTorch (the
                # two-sampling one computes percentiles, which tracing would freeze)
                sr = net.Restorer(lr, code)
                traced = torch.jit.trace(net.Estimator, (sr, lr), check_trace=False)
                self._models["estimator"] = ov.convert_model(traced, example_input=(sr, lr))
        self._compiled = {}

    def _request(self, part: str, precision: Precision, threads: int):
        stamp = weights_stamp(self.network)
        if stamp != self._stamp:
            self._convert()
            self._stamp = stamp
        key = (part, precision.name, threads)
        if key not in self._compiled:
            import openvino as ov

            config = {"INFERENCE_PRECISION_HINT": _OV_PRECISIONS[precision.name],
                      "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": int(threads),
                      "ENABLE_CPU_PINNING": False}
            compiled = ov.Core().compile_model(self._models[part], "CPU", config)
            self._compiled[key] = compiled.create_infer_request()
        return self._compiled[key]

    def _run(self, part: str, a: np.ndarray, b: np.ndarray, precision: Precision) -> np.ndarray:
        req = self._request(part, precision, max(1, torch.get_num_threads()))
        try:
            req.infer([np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)])
        except RuntimeError as e:  # the engine's out-of-memory retry expects a MemoryError
            if is_oom(e) or "bad_alloc" in str(e):
                raise MemoryError(f"out of memory in OpenVINO: {e}") from None
            raise
        return req.get_output_tensor(0).data.copy()

    def restore(self, lr: np.ndarray, code: np.ndarray, precision: Precision) -> np.ndarray:
        """SR (B, C, sH, sW) from LR (B, C, H, W) and codes (B, L), float32 numpy."""
        return self._run("restorer", lr, code, precision)

    def parts(self, precision: Precision):
        """(restorer, estimator) as callables on torch tensors, for ``network.forward_all``
        (estimator None: the network's own, for an Estimator of the LR image alone)."""
        def restorer(lr: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self._run("restorer", lr.numpy(), code.numpy(), precision))

        def estimator(sr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self._run("estimator", sr.numpy(), lr.numpy(), precision))

        self._request("restorer", precision, max(1, torch.get_num_threads()))  # converts
        return restorer, (estimator if "estimator" in self._models else None)


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
        return _one_per_network(_COMPILED, cls, network)

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
