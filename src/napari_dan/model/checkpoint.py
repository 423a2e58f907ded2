"""Reading and writing checkpoints: the authors' released state_dicts and our own format.

Nothing here ever executes code from a file: every load is ``torch.load(weights_only=True)``.
The authors' checkpoints carry no hyperparameters, so the architecture is inferred from the
tensors alone; ours store architecture, hyperparameters, PCA mean and provenance.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, clean_message
from .danv1 import DANv1
from .danv2 import DANv2
from .kernels import FWHM_PER_SIGMA, default_kernel_mean

__all__ = ["DanModel", "load_checkpoint", "save_checkpoint", "build_network", "infer_hyperparameters",
           "check_hyperparameters", "create_model", "state_fingerprint", "FORMAT_NAME",
           "FORMAT_VERSION", "HP_LIMITS", "MAX_PARAMETERS"]

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
    def sampling(self) -> str:
        """How the model's training made its LR images: "bin" (camera pixel integration, the
        microscopy models) or "bicubic" (MATLAB imresize: the photo models and the authors')."""
        return "bin" if self._training_config().get("data_kind") == "microscopy" else "bicubic"

    def _training_config(self) -> dict:
        """The training configuration in the checkpoint's provenance record ({} when there is
        none, or when a hand-made file holds something else than a dict there)."""
        prov = self.info.get("provenance") if isinstance(self.info, dict) else None
        cfg = prov.get("config") if isinstance(prov, dict) else None
        return cfg if isinstance(cfg, dict) else {}

    @property
    def iterations(self) -> int:
        return int(self.network.loop)

    @property
    def trained_fwhm_range(self) -> tuple[float, float] | None:
        """FWHM (output-grid pixels) of the narrowest and widest kernels the model was trained
        on, from its training record: the PSF range of a microscopy model, 2.3548 x the Gaussian
        sigma range of the others; None when the checkpoint has no record (the authors')."""
        cfg = self._training_config()
        try:
            if self.sampling == "bin" and cfg.get("psf_fwhm_range"):
                lo, hi = cfg["psf_fwhm_range"]
                return float(lo), float(hi)
            if cfg.get("sigma_range"):
                lo, hi = cfg["sigma_range"]
                return FWHM_PER_SIGMA * float(lo), FWHM_PER_SIGMA * float(hi)
        except (TypeError, ValueError):
            return None
        return None

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

    @cached_property
    def fingerprint(self) -> str:
        """Identity of the weights (:func:`state_fingerprint`), for output records."""
        return state_fingerprint(self.network)

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


#: what a checkpoint may ask for (the released models use nf 64, nb 10/40, ng 5, loop 4); a file
#: outside these bounds is refused before anything is allocated
HP_LIMITS = {"in_nc": (1, 3), "nf": (1, 256), "nb": (1, 64), "ng": (1, 16), "scale": (2, 4),
             "code_len": (1, 256), "kernel_size": (3, 63), "loop": (1, 16), "est_nf": (2, 256),
             "est_nb": (1, 32), "est_attention": (0, 1), "est_input": (0, 2)}
#: hyperparameters that may be absent (the released checkpoints): their default when they are
OPTIONAL_HP = {"DANv2": {"est_attention": 0, "est_input": 0}}
#: parameters a network may have (the released DANv2 x4 has 4.7 M)
MAX_PARAMETERS = 50_000_000
#: a weight beyond this is taken for a damaged file (trained DAN weights stay far below 100)
MAX_ABS_WEIGHT = 1e4


def check_hyperparameters(architecture: Any, hp: Any) -> tuple[str, dict]:
    """The architecture and hyperparameters of a checkpoint, checked: known architecture, every
    needed key an integer within :data:`HP_LIMITS`, odd kernel size, ``code_len`` at most the
    kernel's pixel count, in_nc 1 or 3. Raises ``ValueError`` saying what is wrong."""
    if not isinstance(architecture, str) or architecture not in _ARCHS:
        raise ValueError(f"unknown architecture {clean_message(repr(architecture), 60)}; "
                         "expected DANv1 or DANv2")
    if not isinstance(hp, dict):
        raise ValueError(f"hyperparameters are a {type(hp).__name__}, expected a dict")
    keys = ["in_nc", "nf", "nb", "scale", "code_len", "kernel_size", "loop", "est_nf", "est_nb"]
    if architecture == "DANv2":
        keys.insert(3, "ng")
    def checked(k: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"hyperparameter {k!r} is {clean_message(repr(v), 40)}, "
                             "expected an integer")
        lo, hi = HP_LIMITS[k]
        if not lo <= int(v) <= hi:
            raise ValueError(f"hyperparameter {k}={int(v)} is outside {lo}..{hi}")
        return int(v)

    out = {}
    for k in keys:
        if k not in hp:
            raise ValueError(f"hyperparameter {k!r} is missing")
        out[k] = checked(k, hp[k])
    for k, default in OPTIONAL_HP.get(architecture, {}).items():
        v = checked(k, hp.get(k, default))
        if v != default:  # absent when at its default, so released layouts compare equal
            out[k] = v
    if out["in_nc"] not in (1, 3):
        raise ValueError(f"in_nc={out['in_nc']}: only 1 (grey) and 3 (RGB) channels are supported")
    if out["kernel_size"] % 2 == 0:
        raise ValueError(f"kernel_size={out['kernel_size']} is even; kernels have odd sides")
    if out["code_len"] > out["kernel_size"] ** 2:
        raise ValueError(f"code_len={out['code_len']} exceeds the kernel's "
                         f"{out['kernel_size'] ** 2} pixels")
    return architecture, out


def build_network(architecture: str, hp: dict, device: str | torch.device | None = None) -> nn.Module:
    """Construct DANv1/DANv2 from a hyperparameter dict (keys as in :func:`infer_hyperparameters`),
    checked by :func:`check_hyperparameters` (``ValueError`` when out of bounds).

    ``device="meta"`` builds it without allocating its tensors (to count or compare them)."""
    architecture, hp = check_hyperparameters(architecture, hp)
    if device is None:
        return _ARCHS[architecture](**hp)
    with torch.device(device):
        return _ARCHS[architecture](**hp)


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
              "nb": _count(keys, "Restorer.body.0.body.")}
        if "Estimator.fine.mlp.0.weight" in sd:  # ours at two samplings (EstimatorTwoScale)
            share = sd.get("Estimator.coarse_share")
            if share is None or share.numel() != 1 or not 0.0 <= float(share) <= 1.0:
                raise ValueError("Estimator.coarse_share must be one number in 0..1, got "
                                 f"{None if share is None else share.flatten()[:3].tolist()}")
            hp.update(est_input=2, est_nf=int(sd["Estimator.fine.head.0.weight"].shape[0]),
                      est_nb=_count(keys, "Estimator.fine.blocks."))
        elif "Estimator.mlp.0.weight" in sd:  # our LR-only Estimator (EstimatorLR)
            hp.update(est_input=1, est_nf=int(sd["Estimator.head.0.weight"].shape[0]),
                      est_nb=_count(keys, "Estimator.blocks."))
        else:
            hp.update(est_nf=int(sd["Estimator.tail.0.weight"].shape[0]),
                      est_nb=_count(keys, "Estimator.body.body."))
            if "Estimator.attention.weight" in sd:
                hp["est_attention"] = 1
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


# a torch.save archive is a zip file; files of torch < 1.6 start with a pickled magic number
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_KNOWN_HEADS = {b"II*\x00": "a TIFF image", b"MM\x00*": "a TIFF image", b"\x89PNG": "a PNG image",
                b"\xff\xd8\xff": "a JPEG image", b"\x93NUMPY": "a NumPy .npy array",
                b"\x89HDF": "an HDF5 file (Keras/h5 weights?)", b"{": "a JSON/text file"}


def _torch_load(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_MAGIC))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not (head.startswith(_ZIP_MAGIC) or head == _LEGACY_MAGIC):
        what = next((name for magic, name in _KNOWN_HEADS.items() if head.startswith(magic)),
                    "empty" if not head else "not a PyTorch file")
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({what}); pass a DAN checkpoint "
                              "(.pt/.pth) or a bundled model name")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e).strip()
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            # only say "code" when the file really names a Python object to build
            m = re.search(r"GLOBAL ([\w.]+)", text)
            detail = f" (it names {m.group(1)})" if m else ""
            raise CheckpointError(
                f"{path}: refused to load: it contains Python objects other than tensors and "
                f"plain containers{detail}, and unpickling those could execute code") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (damaged data)") from None
    except MemoryError:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (it asks for more "
                              "memory than this machine has; damaged?)") from None
    except Exception as e:  # torch raises many types for damaged files; one clear line for all
        text = str(e).strip()
        msg = text.splitlines()[0] if text else type(e).__name__
        if isinstance(e, (EOFError, zipfile.BadZipFile)) or "central directory" in msg \
                or "failed finding" in msg or "file_name" in msg:
            msg = "the file is truncated or damaged"
        elif isinstance(e, KeyError):
            msg = "the content is not a torch.save archive"
        else:
            msg = f"damaged: {clean_message(msg, 160)}"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({msg})") from None


def _strip_module(sd: dict) -> dict:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _check_state(arch: str, hp: dict, sd: dict, path: Path) -> None:
    """The network ``hp`` describes must hold exactly the tensors present (names and shapes),
    at most :data:`MAX_PARAMETERS`, all finite and of plausible size. Checked on a network built
    on the meta device, so a file cannot make us allocate what it does not contain."""
    if not all(isinstance(k, str) for k in sd):
        raise CheckpointError(f"{path}: not a state_dict (keys are not all strings)")
    try:
        meta_net = build_network(arch, hp, device="meta")
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: bad hyperparameters ({e})") from None
    n_params = sum(p.numel() for p in meta_net.parameters())
    if n_params > MAX_PARAMETERS:
        raise CheckpointError(f"{path}: the network would have {n_params:,} parameters, more "
                              f"than the {MAX_PARAMETERS:,} accepted")
    own = meta_net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (first: "
                         f"{clean_message(unexpected[0], 80)})")
        raise CheckpointError(f"{path}: layout fits no known DAN configuration: " + "; ".join(parts))
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{path}: tensor {k!r} has shape {tuple(v.shape)}, "
                                  f"expected {tuple(own[k].shape)}")
        if not (v.is_floating_point() or v.dtype in (torch.int8, torch.uint8, torch.int16,
                                                      torch.int32, torch.int64)):
            raise CheckpointError(f"{path}: tensor {k!r} has dtype {v.dtype}, expected floats")
        _check_values(v, k, path)


def _check_values(v: torch.Tensor, what: str, path: Path) -> None:
    f = v.detach().float()
    if not bool(torch.isfinite(f).all()):
        raise CheckpointError(f"{path}: {what} holds NaN or infinite values: the file is damaged")
    big = float(f.abs().max()) if f.numel() else 0.0
    if big > MAX_ABS_WEIGHT:
        raise CheckpointError(f"{path}: {what} holds a value of {big:.3g}, far beyond what a "
                              "trained DAN has: the file is damaged")


def state_fingerprint(state: nn.Module | dict) -> str:
    """SHA-256 of a network's persistent tensors (names, shapes, float32 values; a module or its
    state_dict), independent of the file it came from: identifies the weights in checkpoints and
    in output records."""
    h = hashlib.sha256()
    sd = state.state_dict() if isinstance(state, nn.Module) else state
    for k, v in sorted(sd.items()):
        t = v.detach().cpu().float().contiguous()
        h.update(f"{k}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return "sha256:" + h.hexdigest()


def _smoke_test(net: nn.Module, path: Path) -> None:
    """Run the loop on a tiny test image: damaged weights that pass the value checks but give
    NaN, or a kernel with nothing positive, are caught at load time and not on the user's image."""
    g = torch.linspace(0, 1, 16)
    x = (0.25 + 0.5 * g[None, :] * g[:, None]).expand(1, net.in_nc, 16, 16).contiguous()
    with torch.no_grad():
        sr, kernel = net(x)
    if not (bool(torch.isfinite(sr).all()) and bool(torch.isfinite(kernel).all())):
        raise CheckpointError(f"{path}: the network gives NaN or infinite values on a test "
                              "image: the weights are damaged")
    if not bool((kernel.clamp(min=0).flatten(1).sum(1) > 0).all()):
        raise CheckpointError(f"{path}: the network's kernel has nothing positive on a test "
                              "image: the weights are damaged")


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
        for key, typ in (("architecture", str), ("hyperparameters", dict), ("state_dict", dict)):
            if key not in obj:
                raise CheckpointError(f"{path}: napari-dan checkpoint lacks {key!r}")
            if not isinstance(obj[key], typ):
                raise CheckpointError(f"{path}: {key!r} is a {type(obj[key]).__name__}, expected "
                                      f"a {typ.__name__}")
        arch, hp, sd = obj["architecture"], dict(obj["hyperparameters"]), obj["state_dict"]
        version = obj.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            # every field below is still checked; what a newer format adds is not understood
            warnings.warn(f"{path.name}: written in checkpoint format version {version!r}, newer "
                          f"than this napari-dan reads ({FORMAT_VERSION}); it loads if its layout "
                          "is unchanged, but update napari-dan to be sure",
                          UserWarning, stacklevel=3)
        info = obj.get("info", {})
        if not isinstance(info, dict):
            raise CheckpointError(f"{path}: 'info' is a {type(info).__name__}, expected a dict")
        info = dict(info)
        mean = obj.get("kernel_mean")
        try:
            arch, hp = check_hyperparameters(arch, hp)
        except ValueError as e:
            raise CheckpointError(f"{path}: bad hyperparameters ({e})") from None
        source_kind = "napari-dan"
    else:
        sd = obj.get("state_dict", obj) if isinstance(obj.get("state_dict"), dict) else obj
        if not all(isinstance(k, str) for k in sd):
            raise CheckpointError(f"{path}: not a state_dict (keys are not all strings)")
        sd = _strip_module(sd)
        try:
            arch, hp = infer_hyperparameters(sd)
            arch, hp = check_hyperparameters(arch, hp)
        except (KeyError, ValueError, IndexError, AttributeError, TypeError) as e:
            detail = e.args[0] if e.args else type(e).__name__
            raise CheckpointError(f"{path}: not a DAN checkpoint ({detail})") from None
        mean = None
        source_kind = "official"
        info = {"description": f"{arch} x{hp['scale']} released checkpoint (authors' weights)"}
    _check_state(arch, hp, sd, path)  # before anything of the network's size is allocated
    share = sd.get("Estimator.coarse_share")  # EstimatorTwoScale: a mixing weight
    if share is not None and not 0.0 <= float(share) <= 1.0:
        raise CheckpointError(f"{path}: Estimator.coarse_share must be one number in 0..1, "
                              f"got {float(share):g}")
    if mean is None:
        mean = torch.from_numpy(default_kernel_mean(hp["kernel_size"]))
    if not isinstance(mean, torch.Tensor) or mean.numel() != hp["kernel_size"] ** 2:
        got = tuple(mean.shape) if isinstance(mean, torch.Tensor) else type(mean).__name__
        raise CheckpointError(f"{path}: 'kernel_mean' is {got}, expected a "
                              f"{hp['kernel_size']}x{hp['kernel_size']} tensor")
    _check_values(mean, "'kernel_mean'", path)
    net = build_network(arch, hp)
    net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    net.kernel_mean.copy_(mean.float().reshape(net.kernel_mean.shape))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    expected = obj.get("state_sha256")
    if isinstance(expected, str) and state_fingerprint(net) != expected:
        raise CheckpointError(f"{path}: its tensors do not match the checksum stored with them: "
                              "the file is damaged")
    _smoke_test(net, path)
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
           "state_sha256": state_fingerprint(sd),
           "kernel_mean": network.kernel_mean.detach().cpu().clone(),
           "info": {**(info or {}), **({"name": name} if name else {})}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def create_model(architecture: str = "DANv2", *, name: str = "untrained", setting: int = 1,
                 pca_samples: int = 30000, seed: int = 0, info: dict | None = None,
                 pca_kernels: np.ndarray | None = None, **hp: int) -> DanModel:
    """A freshly initialised model with its PCA basis built from the training kernel distribution.

    ``hp`` are the hyperparameters (in_nc, nf, nb, ng, scale, code_len, kernel_size, loop, est_nf,
    est_nb); missing ones take the released defaults. ``setting`` 1 (isotropic) or 2
    (anisotropic) chooses the kernel distribution of the PCA basis (dan-facts.md);
    ``pca_kernels`` (n, k, k), when given, are the samples of another distribution (the
    microscopy models' PSFs) and ``setting`` is ignored.
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
    if pca_kernels is None:
        ks, _ = random_gaussian_kernels(pca_samples, params["kernel_size"], setting=setting,
                                        rng=np.random.default_rng(seed))
    else:
        ks = np.asarray(pca_kernels, np.float32)
    basis, mean = pca_basis(ks, params["code_len"])
    with torch.no_grad():
        net.set_pca(torch.from_numpy(basis))
        net.kernel_mean.copy_(torch.from_numpy(mean))
    net.eval()
    return DanModel(name=name, network=net, architecture=architecture, hyperparameters=params,
                    info={"description": "randomly initialised (untrained)",
                          "pca_setting": setting if pca_kernels is None else "custom",
                          **(info or {})}, source="created")
