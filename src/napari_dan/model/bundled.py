"""The bundled models: checkpoints in our format shipped inside the package."""

from __future__ import annotations

import hashlib
import os
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import CheckpointError, InputError, UnknownModelError
from .checkpoint import DanModel, load_checkpoint

__all__ = ["WEIGHTS_DIR", "DEFAULT_MODEL", "GREY_MODEL", "list_models", "load_model",
           "bundled_path", "verify_bundled"]

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "dan-x4-rgb"
#: what the widget offers first for a grey (non-RGB) layer: the x2 fluorescence model, since it
#: restores with its last kernel (session 10) the best grey model on the microscopy benchmark on
#: average, with a PSF estimate that means something (docs/models.md, the fluorescence card);
#: dan-x2-gray stays better on smooth real specimens and grey photographs
GREY_MODEL = "dan-x2-fluo"


CHECKSUMS = WEIGHTS_DIR / "SHA256SUMS"


def _expected_sums() -> dict[str, str]:
    """``SHA256SUMS`` of the bundled weights (``sha256sum`` format)."""
    try:
        lines = CHECKSUMS.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    return {name.strip().lstrip("*"): digest for digest, _, name in
            (ln.partition(" ") for ln in lines if ln.strip())}


def verify_bundled(name: str) -> None:
    """Raise :class:`CheckpointError` unless the bundled file matches its recorded SHA-256."""
    path = bundled_path(name)
    want = _expected_sums().get(path.name)
    if want is None:
        raise CheckpointError(f"bundled model {name!r} has no checksum in {CHECKSUMS.name}; the "
                              "installation is incomplete: reinstall napari-dan")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    if h.hexdigest() != want:
        raise CheckpointError(f"bundled model {name!r} ({path}) is damaged: its checksum does not "
                              "match the one it was released with; reinstall napari-dan")


def _bundled() -> dict[str, Path]:
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.pt"))}


@lru_cache(maxsize=32)
def _header(path: Path, mtime: float) -> dict:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    hp = obj["hyperparameters"]
    info = obj.get("info", {})
    return {"name": path.stem, "architecture": obj["architecture"], "scale": int(hp["scale"]),
            "in_channels": int(hp["in_nc"]), "kernel_size": int(hp["kernel_size"]),
            "iterations": int(hp["loop"]), "description": info.get("description", ""),
            "metrics": info.get("metrics", {}), "path": str(path)}


def list_models() -> list[dict]:
    """The bundled models: name, architecture, scale, in_channels, kernel_size, iterations,
    description, metrics and path, one dict each, sorted by name. A damaged file is left out of
    the list with a warning (``load_model`` of its name says what is wrong with it)."""
    out = []
    for p in _bundled().values():
        try:
            out.append(_header(p, p.stat().st_mtime))
        except Exception as e:  # noqa: BLE001 - any failure to read it means: damaged
            warnings.warn(f"the bundled model file {p.name} cannot be read ({type(e).__name__}); "
                          "it is left out: reinstall napari-dan", UserWarning, stacklevel=2)
    return out


def bundled_path(name: str) -> Path:
    models = _bundled()
    if name not in models:
        avail = ", ".join(models) or "(none bundled)"
        raise UnknownModelError(f"unknown model {name!r}; bundled models: {avail}; "
                                "or pass the path of a checkpoint file")
    return models[name]


def load_model(name_or_path: str | os.PathLike | DanModel = DEFAULT_MODEL) -> DanModel:
    """A bundled model by name (see :func:`list_models`) or a checkpoint file (ours, or the
    authors' DANv1/DANv2 release). Returns a :class:`DanModel` in eval mode on the CPU."""
    if isinstance(name_or_path, DanModel):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InputError(f"model must be a bundled model name, a checkpoint path or a loaded "
                         f"DanModel, got {type(name_or_path).__name__}")
    s = os.fspath(name_or_path)
    if not s.strip():
        raise InputError("the model name is empty; give a bundled model name ("
                         + ", ".join(_bundled()) + ") or the path of a checkpoint file")
    if s in _bundled():
        verify_bundled(s)
        model = load_checkpoint(_bundled()[s], name=s)
        model.source = f"bundled:{s}"
        return model
    p = Path(s).expanduser()
    if p.suffix or os.sep in s or p.exists():
        if not p.exists() and p.stem in _bundled() and os.sep not in s:
            raise UnknownModelError(f"{s}: no such file; the bundled model is named "
                                    f"{p.stem!r} (no file extension)")
        return load_checkpoint(p)
    return load_checkpoint(bundled_path(s))  # raises UnknownModelError listing the models
