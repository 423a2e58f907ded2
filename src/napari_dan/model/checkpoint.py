"""Reading and writing checkpoints: the authors' released state_dicts and our own format.

Nothing here ever executes code from a file: every load is ``torch.load(weights_only=True)``.
The authors' checkpoints carry no hyperparameters, so the architecture is inferred from the
tensors alone; ours store architecture, hyperparameters, PCA mean and provenance.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from .danv1 import DANv1
from .danv2 import DANv2
from .kernels import default_kernel_mean

__all__ = ["DanModel", "load_checkpoint", "save_checkpoint", "build_network", "infer_hyperparameters",
           "create_model",
           "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "napari-dan"
FORMAT_VERSION = 1
_ARCHS = {"DANv1": DANv1, "DANv2": DANv2}


@dataclass
class DanModel:
    """A ready-to-run DAN model.

    Attributes
    ----------
    name : str
        Bundled name, or the checkpoint's file stem.
    network : torch.nn.Module
        DANv1 or DANv2 in eval mode; ``network(lr)`` -> ``(sr, kernel)``.
    architecture : str
        "DANv1" or "DANv2".
    hyperparameters : dict
        Everything needed to rebuild the network.
    info : dict
        Description, provenance (data, iterations, date) and measured metrics, where known.
    source : str
        Where it came from (bundled name or file path).
    """

    name: str
    network: nn.Module
    architecture: str
    hyperparameters: dict
    info: dict = field(default_factory=dict)
    source: str = ""

    @property
    def scale(self) -> int:
        return int(self.network.scale)

    @property
    def in_channels(self) -> int:
        return int(self.network.in_nc)

    @property
    def kernel_size(self) -> int:
        return int(self.network.kernel_size)

    @property
    def code_len(self) -> int:
        return int(self.network.code_len)

    @property
    def iterations(self) -> int:
        return int(self.network.loop)

    @property
    def pca_basis(self) -> np.ndarray:
        """(k*k, L) projection matrix."""
        return self.network.encoder[0].detach().cpu().numpy()

    @property
    def kernel_mean(self) -> np.ndarray:
        return self.network.kernel_mean.detach().cpu().numpy()

    @property
    def description(self) -> str:
        return str(self.info.get("description", ""))

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def __repr__(self) -> str:
        return (f"DanModel(name={self.name!r}, architecture={self.architecture}, scale={self.scale}, "
                f"in_channels={self.in_channels}, kernel_size={self.kernel_size}, "
                f"iterations={self.iterations}, parameters={self.parameters})")

    def save(self, path: str | os.PathLike, **info: Any) -> Path:
        """Write in our format (see :func:`save_checkpoint`)."""
        return save_checkpoint(path, self.network, info={**self.info, **info}, name=self.name)


def build_network(architecture: str, hp: dict) -> nn.Module:
    """Construct DANv1/DANv2 from a hyperparameter dict (keys as in :func:`infer_hyperparameters`)."""
    if architecture not in _ARCHS:
        raise ValueError(f"unknown architecture {architecture!r}; expected DANv1 or DANv2")
    keys = ["in_nc", "nf", "nb", "scale", "code_len", "kernel_size", "loop", "est_nf", "est_nb"]
    if architecture == "DANv2":
        keys.insert(3, "ng")
    return _ARCHS[architecture](**{k: int(hp[k]) for k in keys if k in hp})


def _count(keys, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in keys if (m := pat.match(k))}
    return max(idx) + 1 if idx else 0


def infer_hyperparameters(sd: dict[str, torch.Tensor]) -> tuple[str, dict]:
    """Architecture and hyperparameters from the tensors of a released state_dict.

    Raises ``KeyError``/``ValueError`` with a description when the layout fits neither DAN version.
    """
    keys = list(sd)
    if "encoder" not in sd:
        raise ValueError("no 'encoder' buffer (PCA basis), so this is not a DAN state_dict")
    kk, code_len = sd["encoder"].shape[-2:]
    ksize = int(round(math.sqrt(kk)))
    if ksize * ksize != kk:
        raise ValueError(f"encoder has {kk} rows, which is not a square kernel size")
    if "Restorer.head1.weight" in sd:
        arch = "DANv2"
        w = sd["Restorer.head1.weight"]
        nf, in_nc = int(w.shape[0]), int(w.shape[1])
        hp = {"in_nc": in_nc, "nf": nf, "ng": _count(keys, "Restorer.body."),
              "nb": _count(keys, "Restorer.body.0.body."),
              "est_nf": int(sd["Estimator.tail.0.weight"].shape[0]),
              "est_nb": _count(keys, "Estimator.body.body.")}
    elif "Restorer.head.weight" in sd:
        arch = "DANv1"
        w = sd["Restorer.head.weight"]
        nf, in_nc = int(w.shape[0]), int(w.shape[1])
        hp = {"in_nc": in_nc, "nf": nf, "nb": _count(keys, "Restorer.body."),
              "est_nf": 2 * int(sd["Estimator.head_LR.weight"].shape[0]),
              "est_nb": _count(keys, "Estimator.body.")}
    else:
        raise ValueError("neither 'Restorer.head1.weight' (DANv2) nor 'Restorer.head.weight' "
                         "(DANv1) is present")
    if "Restorer.upscale.4.weight" in sd:
        scale = 4
    else:
        r = int(sd["Restorer.upscale.0.weight"].shape[0]) // nf
        scale = int(round(math.sqrt(r)))
        if scale * scale != r or scale not in (2, 3):
            raise ValueError(f"upsampler has {r * nf} output channels for nf={nf}, which fits no scale")
    hp.update(scale=scale, code_len=int(code_len), kernel_size=ksize, loop=4)
    return arch, hp


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e).strip()
        first = text.splitlines()[0] if text else "unsupported content"
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(
                f"{path}: refused to load: unpickling it would execute code (only plain tensors "
                f"and containers are accepted). Detail: {first}") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    except Exception as e:  # torch raises many types for damaged files; one clear line for all
        text = str(e).strip()
        msg = text.splitlines()[0] if text else type(e).__name__
        if isinstance(e, (EOFError, zipfile.BadZipFile)) or "central directory" in msg \
                or "failed finding" in msg:
            msg = "the file is truncated or damaged"
        elif isinstance(e, KeyError):
            msg = "the content is not a torch.save archive"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({msg})") from None


def _strip_module(sd: dict) -> dict:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _load_state(net: nn.Module, sd: dict, path: Path) -> None:
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[0]})")
        raise CheckpointError(f"{path}: layout fits no known DAN configuration: " + "; ".join(parts))
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{path}: tensor {k!r} has shape {tuple(v.shape)}, "
                                  f"expected {tuple(own[k].shape)}")
    net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)


def load_checkpoint(path: str | os.PathLike, name: str | None = None) -> DanModel:
    """Load a DAN checkpoint: the authors' DANv1/DANv2 state_dicts or our own format.

    Raises
    ------
    CheckpointError
        One line naming the file and the problem (missing, unreadable, needs code execution,
        truncated, not a DAN layout, wrong tensor shape).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: contains a {type(obj).__name__}, not a state_dict")
    info: dict = {}
    if obj.get("format") == FORMAT_NAME:
        try:
            arch, hp, sd = obj["architecture"], dict(obj["hyperparameters"]), obj["state_dict"]
        except KeyError as e:
            raise CheckpointError(f"{path}: napari-dan checkpoint lacks {e.args[0]!r}") from None
        info = dict(obj.get("info", {}))
        mean = obj.get("kernel_mean")
        try:
            net = build_network(arch, hp)
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"{path}: bad hyperparameters ({e})") from None
        source_kind = "napari-dan"
    else:
        sd = obj.get("state_dict", obj) if isinstance(obj.get("state_dict"), dict) else obj
        sd = _strip_module(sd)
        if not all(isinstance(k, str) for k in sd):
            raise CheckpointError(f"{path}: not a state_dict (keys are not all strings)")
        try:
            arch, hp = infer_hyperparameters(sd)
            net = build_network(arch, hp)
        except (KeyError, ValueError, IndexError, AttributeError) as e:
            detail = e.args[0] if e.args else type(e).__name__
            raise CheckpointError(f"{path}: not a DAN checkpoint ({detail})") from None
        mean = None
        source_kind = "official"
        info = {"description": f"{arch} x{hp['scale']} released checkpoint (authors' weights)"}
    _load_state(net, sd, path)
    if mean is None:
        mean = torch.from_numpy(default_kernel_mean(hp["kernel_size"]))
    net.kernel_mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(net.kernel_mean.shape))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    info.setdefault("format", source_kind)
    return DanModel(name=name or path.stem, network=net, architecture=arch, hyperparameters=hp,
                    info=info, source=str(path))


def save_checkpoint(path: str | os.PathLike, network: nn.Module, info: dict | None = None,
                    name: str | None = None, half: bool = False) -> Path:
    """Save a network in our format: state_dict + architecture + hyperparameters + PCA mean +
    ``info`` (description, provenance, metrics). Written to a temporary name, then renamed.

    ``half=True`` stores float16 parameters (halves the file; loaded back as float32).
    """
    path = Path(path)
    arch = "DANv2" if isinstance(network, DANv2) else "DANv1" if isinstance(network, DANv1) else None
    if arch is None:
        raise TypeError("network must be a DANv1 or DANv2")
    _, hp = infer_hyperparameters(network.state_dict())
    hp["loop"] = int(network.loop)
    sd = {k: (v.detach().cpu().half() if half and v.is_floating_point() and k.startswith(("Restorer", "Estimator"))
              else v.detach().cpu().clone()) for k, v in network.state_dict().items()}
    obj = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "architecture": arch,
           "hyperparameters": hp, "state_dict": sd,
           "kernel_mean": network.kernel_mean.detach().cpu().clone(),
           "info": {**(info or {}), **({"name": name} if name else {})}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def create_model(architecture: str = "DANv2", *, name: str = "untrained", setting: int = 1,
                 pca_samples: int = 30000, seed: int = 0, info: dict | None = None,
                 **hp: int) -> DanModel:
    """A freshly initialised model with its PCA basis built from the training kernel distribution.

    ``hp`` are the hyperparameters (in_nc, nf, nb, ng, scale, code_len, kernel_size, loop, est_nf,
    est_nb); missing ones take the released defaults. ``setting`` 1 (isotropic) or 2
    (anisotropic) chooses the kernel distribution of the PCA basis (dan-facts.md).
    """
    from .kernels import pca_basis, random_gaussian_kernels

    defaults = {"in_nc": 3, "nf": 64, "nb": 10, "ng": 5, "scale": 4, "code_len": 10,
                "kernel_size": 21, "loop": 4, "est_nf": 64, "est_nb": 5}
    if architecture == "DANv1":
        defaults.update(nb=40)
        defaults.pop("ng")
    params = {**defaults, **hp}
    torch.manual_seed(seed)
    net = build_network(architecture, params)
    ks, _ = random_gaussian_kernels(pca_samples, params["kernel_size"], setting=setting,
                                    rng=np.random.default_rng(seed))
    basis, mean = pca_basis(ks, params["code_len"])
    with torch.no_grad():
        net.set_pca(torch.from_numpy(basis))
        net.kernel_mean.copy_(torch.from_numpy(mean))
    net.eval()
    return DanModel(name=name, network=net, architecture=architecture, hyperparameters=params,
                    info={"description": "randomly initialised (untrained)", "pca_setting": setting,
                          **(info or {})}, source="created")
