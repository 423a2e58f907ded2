"""The DAN papers' "Gaussian8" benchmark (setting 1), exactly as in ../shared/docs/dan-facts.md.

For every HR image (mod-cropped to a multiple of the scale ``s``) and each of 8 isotropic 21 x 21
Gaussian kernels with ``sigma = linspace(lo, hi, 8)`` (x2 [0.80, 1.60], x3 [1.35, 2.40],
x4 [1.80, 3.20]) the LR input is ``degrade(hr, kernel, s)``: blur, MATLAB antialiased bicubic
downsampling, 8-bit quantisation. Three results are scored against the HR image:

``dan``
    The model, blind: through :func:`napari_dan.super_resolve` (what users get: tiling, the
    global kernel mode) or, with ``whole_image=True``, ``model.network(lr)`` on the whole image
    (the papers' way).
``non_blind``
    The model's Restorer given the true kernel: ``network.restore(lr, network.encode(k))``; the
    ceiling a perfect kernel estimate would reach.
``bicubic``
    MATLAB-style bicubic upscaling of the LR image.

Every output is quantised to 8 bit (``round(clip(sr, 0, 1) * 255)``) before scoring, as the
papers do; scores are Y-PSNR / SSIM with a border of ``s`` pixels cropped
(:mod:`napari_dan.imaging.metrics`). The kernel error compares the estimated kernel with the
true one (sigma error from :func:`~napari_dan.model.kernels.kernel_stats`, and L1).

Images and the model's channels: gray images given to an RGB model are replicated to three
channels (as reading them with OpenCV does in the authors' code), so they are scored on BT.601 Y;
RGB images given to a gray model are converted to BT.601 luma ``0.299 R + 0.587 G + 0.114 B``
(= (Y - 16) / 219) and scored on ``255 * gray`` (1.32 dB below the same error on the Y scale, so
never compare gray-model numbers with RGB-model numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine.devices import resolve_device
from ..errors import DanError, InputError
from ..imaging.degradations import degrade, imresize, quantize
from ..imaging.metrics import BT601_Y, kernel_errors, y_psnr, y_ssim
from ..model.kernels import fit_kernel_size, gaussian_kernel
from .data import IMAGE_SUFFIXES

__all__ = ["SIGMA_RANGES", "KERNEL_SIZE", "METHODS", "gaussian8_sigmas", "list_images",
           "read_benchmark_image", "mod_crop", "match_channels", "evaluate_gaussian8", "format_table",
           "default_data_dirs", "add_evaluate_arguments", "run_evaluate"]

#: sigma range (HR pixels) of the 8 Gaussian8 kernels per scale
SIGMA_RANGES: dict[int, tuple[float, float]] = {2: (0.80, 1.60), 3: (1.35, 2.40), 4: (1.80, 3.20)}
KERNEL_SIZE = 21
N_KERNELS = 8
METHODS = ("dan", "non_blind", "bicubic")


def gaussian8_sigmas(scale: int) -> np.ndarray:
    """The 8 kernel widths of the Gaussian8 protocol at ``scale`` (2, 3 or 4)."""
    if scale not in SIGMA_RANGES:
        raise InputError(f"the Gaussian8 protocol is defined for scales 2, 3 and 4, not {scale}")
    lo, hi = SIGMA_RANGES[scale]
    return np.linspace(lo, hi, N_KERNELS)


def list_images(image_dir: str | os.PathLike, max_images: int | None = None) -> list[Path]:
    """Image files in a folder (PNG, JPEG, BMP, TIFF), sorted by name; the first ``max_images``."""
    d = Path(image_dir)
    if not d.is_dir():
        raise InputError(f"{d} is not a folder of images")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {d}")
    return files[:max_images] if max_images else files


def read_benchmark_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as float64 in [0, 1]: ``(H, W)`` gray or ``(H, W, 3)`` RGB (alpha dropped).

    8- and 16-bit integers are divided by 255 / 65535; floats are clipped to [0, 1].
    """
    p = Path(path)
    if p.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        a = tifffile.imread(p)
    else:
        from PIL import Image

        with Image.open(p) as im:
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "HSV", "LAB"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
            elif im.mode == "1":
                im = im.convert("L")
            a = np.asarray(im)
    if a.ndim == 3 and a.shape[-1] in (2, 4):
        a = a[..., :-1]  # drop alpha
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        raise InputError(f"{p.name}: expected a 2D gray or RGB image, got shape {a.shape}; "
                         "benchmark images must be single plane")
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float64) / 65535.0
    if np.issubdtype(a.dtype, np.floating):
        return np.clip(a.astype(np.float64), 0.0, 1.0)
    raise InputError(f"{p.name}: unsupported pixel type {a.dtype}; use 8- or 16-bit images")


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``scale``."""
    h, w = img.shape[0] - img.shape[0] % scale, img.shape[1] - img.shape[1] % scale
    return img[:h, :w]


def match_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Give an image the model's channel count (see the module notes for the conventions)."""
    if channels == 3 and img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=-1)
    if channels == 1 and img.ndim == 3:
        w = np.asarray(BT601_Y) / 219.0  # 0.299, 0.587, 0.114
        return img @ w
    return img


def _hwc_to_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
    a = img[..., None] if img.ndim == 2 else img
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))[None].to(device)


def _tensor_to_hwc(t: torch.Tensor, gray: bool) -> np.ndarray:
    a = t[0].detach().float().cpu().numpy().transpose(1, 2, 0).astype(np.float64)
    return a[..., 0] if gray else a


class _ModelUnderTest:
    """The blind and non-blind results of one model on one LR image (float64 [0, 1] HWC)."""

    def __init__(self, model, whole_image: bool, device: str, precision: str):
        self.model = model
        self.gray = model.in_channels == 1
        self.whole_image = whole_image
        self.device_name, self.precision = device, precision
        self.torch_device = resolve_device(device)
        self.engine = None
        if not whole_image:
            from ..engine import super_resolve

            self.engine = super_resolve
        self.network = model.network.to(self.torch_device).eval()

    @property
    def inference(self) -> str:
        return "whole-image" if self.whole_image else "engine"

    def _net_input(self, lr: np.ndarray) -> np.ndarray:
        # a gray image on an RGB model: replicate, and average the three outputs back (as the engine)
        return np.repeat(lr[..., None], 3, -1) if lr.ndim == 2 and not self.gray else lr

    def _net_output(self, t: torch.Tensor, lr: np.ndarray) -> np.ndarray:
        out = _tensor_to_hwc(t, self.gray)
        return out.mean(-1) if lr.ndim == 2 and not self.gray else out

    def blind(self, lr: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """SR image (float, unclipped on the whole-image path) and estimated kernel of ``lr``.

        On the engine path the LR image goes in as ``bits``-bit integers: 8-bit data is mapped by
        /255 exactly (what the models were trained on), 16-bit data gets the engine's percentile
        normalisation, as a user's 16-bit microscopy image would.
        """
        if self.engine is not None:
            dtype, top = (np.uint8, 255) if bits == 8 else (np.uint16, 65535)
            raw = np.round(np.clip(lr, 0, 1) * top).astype(dtype)
            res = self.engine(raw, self.model, kernel_mode="global", device=self.device_name,
                              precision=self.precision)
            return np.asarray(res.image, dtype=np.float64) / top, np.asarray(res.kernel)
        with torch.inference_mode():
            sr, kernel = self.network(_hwc_to_tensor(self._net_input(lr), self.torch_device))
        return self._net_output(sr, lr), kernel[0].float().cpu().numpy()

    def non_blind(self, lr: np.ndarray, true_kernel: np.ndarray) -> np.ndarray:
        """The Restorer given the true kernel (fitted to the model's kernel size), whole image."""
        k, _ = fit_kernel_size(true_kernel, self.model.kernel_size)
        with torch.inference_mode():
            kt = torch.from_numpy(k)[None].to(self.torch_device)
            sr = self.network.restore(_hwc_to_tensor(self._net_input(lr), self.torch_device),
                                      self.network.encode(kt))
        return self._net_output(sr, lr)


def _score(sr: np.ndarray, hr: np.ndarray, border: int) -> tuple[float, float]:
    q = quantize(sr)  # the papers score the uint8 result
    return y_psnr(q, hr, border), y_ssim(q, hr, border)


def _mean(values: Sequence[float]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _aggregate(records: list[dict], methods: Sequence[str], has_kernel: bool) -> dict:
    out: dict[str, Any] = {"psnr": {m: _mean([r["psnr"][m] for r in records]) for m in methods},
                           "ssim": {m: _mean([r["ssim"][m] for r in records]) for m in methods},
                           "n": len(records)}
    if has_kernel:
        out["kernel"] = {k: _mean([r["kernel"][k] for r in records])
                         for k in ("sigma_error", "abs_sigma_error", "l1")}
    return out


def _load(model):
    if model is None or isinstance(model, str) and model == "bicubic":
        return None
    from ..model import load_model

    return load_model(model)


def evaluate_gaussian8(model, image_dir: str | os.PathLike, scale: int | None = None,
                       max_images: int | None = None, *, whole_image: bool = False,
                       non_blind: bool = True, channels: int | None = None, device: str = "cpu",
                       precision: str = "fp32",
                       progress: Callable[[int, int, str], Any] | None = None) -> dict:
    """Run the Gaussian8 benchmark of one model on one folder of HR images.

    Parameters
    ----------
    model : DanModel, str, path or None
        A model, a bundled name or a checkpoint path; ``None`` (or ``"bicubic"``) scores only the
        bicubic baseline (then ``scale`` is required).
    image_dir : path
        Folder of HR images (e.g. ``../shared/data/bench/Set5``).
    scale : int, optional
        Defaults to the model's scale; a different value is an error.
    max_images : int, optional
        Use only the first N images (sorted by name), for quick runs.
    whole_image : bool
        Run ``model.network`` on whole images (the papers' way) instead of
        :func:`napari_dan.super_resolve`.
    non_blind : bool
        Also score the Restorer given the true kernel.
    channels : int, optional
        1 or 3, only for ``model=None``: the channel convention of the bicubic-only run (default 3).
    device, precision : str
        Where the network runs ("cpu", "cuda", "auto") and, on the engine path, its precision
        ("fp32" by default so that scores do not depend on the machine's bf16 support).
    progress : callable(done, total, message), optional
        Called after every (image, kernel) pair.

    Returns
    -------
    dict
        ``protocol`` (settings), ``model`` (name, architecture, parameters, source or None),
        ``dataset``, ``methods``, ``records`` (one per image and kernel: ``psnr``/``ssim`` per
        method, ``kernel`` errors), ``per_image``, ``per_sigma`` and ``mean`` (the set's mean
        over all images and kernels, the papers' number), ``seconds``.
    """
    m = _load(model)
    if m is None:
        if scale is None:
            raise InputError("a bicubic-only evaluation needs a scale (2, 3 or 4)")
        ch = channels or 3
    else:
        if scale is not None and int(scale) != m.scale:
            raise InputError(f"model {m.name!r} is a x{m.scale} model; it cannot be evaluated at "
                             f"x{scale} (leave the scale out or pick a x{scale} model)")
        scale, ch = m.scale, m.in_channels
    scale = int(scale)
    sigmas = gaussian8_sigmas(scale)
    files = list_images(image_dir, max_images)
    tested = None if m is None else _ModelUnderTest(m, whole_image, device, precision)
    methods = ["bicubic"] if m is None else (["dan", "non_blind", "bicubic"] if non_blind
                                               else ["dan", "bicubic"])
    kernels = [gaussian_kernel(KERNEL_SIZE, float(s)).astype(np.float64) for s in sigmas]
    records: list[dict] = []
    t0 = time.perf_counter()
    total, done = len(files) * len(sigmas), 0
    for f in files:
        hr = mod_crop(match_channels(read_benchmark_image(f), ch), scale)
        if min(hr.shape[:2]) < 2 * scale + 11:
            raise InputError(f"{f.name} is too small ({hr.shape[:2]}) for SSIM after the border crop")
        for sigma, k in zip(sigmas, kernels, strict=True):
            lr = degrade(hr, k, scale)
            rec: dict[str, Any] = {"image": f.stem, "sigma": round(float(sigma), 4),
                                   "psnr": {}, "ssim": {}}
            rec["psnr"]["bicubic"], rec["ssim"]["bicubic"] = _score(imresize(lr, scale), hr, scale)
            if tested is not None:
                sr, k_est = tested.blind(lr)
                rec["psnr"]["dan"], rec["ssim"]["dan"] = _score(sr, hr, scale)
                rec["kernel"] = kernel_errors(k_est, k)
                if non_blind:
                    rec["psnr"]["non_blind"], rec["ssim"]["non_blind"] = \
                        _score(tested.non_blind(lr, k), hr, scale)
            records.append(rec)
            done += 1
            if progress is not None:
                progress(done, total, f"{f.stem} sigma {sigma:.2f}")
    has_kernel = tested is not None
    per_image = [{"image": f.stem, **_aggregate([r for r in records if r["image"] == f.stem],
                                                 methods, has_kernel)} for f in files]
    per_sigma = [{"sigma": round(float(s), 4),
                  **_aggregate([r for r in records if r["sigma"] == round(float(s), 4)],
                               methods, has_kernel)} for s in sigmas]
    model_info = None
    if m is not None:
        model_info = {"name": m.name, "architecture": m.architecture, "scale": m.scale,
                      "in_channels": m.in_channels, "parameters": m.parameters,
                      "iterations": m.iterations, "source": getattr(m, "source", "")}
    return {
        "protocol": {"name": "Gaussian8", "scale": scale, "sigmas": [round(float(s), 4) for s in sigmas],
                     "kernel_size": KERNEL_SIZE, "border": scale,
                     "metric": ("Y-PSNR (BT.601, peak 255) / SSIM (11x11 Gaussian, sigma 1.5, valid)"
                                if ch == 3 else "PSNR / SSIM on 255 * gray (peak 255)"),
                     "channels": ch, "output": "uint8-quantised"},
        "model": model_info,
        "inference": None if tested is None else tested.inference,
        "dataset": Path(image_dir).name, "image_dir": str(image_dir),
        "methods": methods, "records": records, "per_image": per_image, "per_sigma": per_sigma,
        "mean": _aggregate(records, methods, has_kernel),
        "seconds": round(time.perf_counter() - t0, 2),
    }


# ---------------------------------------------------------------------------------------- tables

_LABELS = {"dan": "DAN (blind)", "non_blind": "true kernel", "bicubic": "bicubic"}


def _fmt_pair(p: float | None, s: float | None) -> str:
    if p is None:
        return "-"
    ps = "inf" if math.isinf(p) else f"{p:.2f}"
    return f"{ps} / {s:.4f}"


def _row(label: str, agg: dict, methods: Sequence[str], has_kernel: bool) -> str:
    cells = [label] + [_fmt_pair(agg["psnr"][m], agg["ssim"][m]) for m in methods]
    if has_kernel:
        kern = agg["kernel"]
        cells += [f"{kern['abs_sigma_error']:.3f}", f"{kern['l1']:.3f}"]
    return "| " + " | ".join(cells) + " |"


def format_table(result: dict, *, per_image: bool = True, per_sigma: bool = True) -> str:
    """A markdown table of one :func:`evaluate_gaussian8` result (readable in a terminal too)."""
    methods = result["methods"]
    has_kernel = result["model"] is not None
    name = result["model"]["name"] if has_kernel else "bicubic only"
    unit = "Y-PSNR / SSIM" if result["protocol"]["channels"] == 3 else "PSNR / SSIM (gray)"
    head = ["", *(f"{_LABELS[m]} {unit}" for m in methods)]
    if has_kernel:
        head += ["abs sigma error (px)", "kernel L1"]
    lines = [f"**{name}**, x{result['protocol']['scale']}, {result['dataset']} "
             f"({result['mean']['n']} image-kernel pairs"
             + (f", {result['inference']}" if result["inference"] else "") + ")", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if per_image:
        lines += [_row(r["image"], r, methods, has_kernel) for r in result["per_image"]]
    if per_sigma:
        lines += [_row(f"sigma {r['sigma']:.2f}", r, methods, has_kernel) for r in result["per_sigma"]]
    lines.append(_row(f"**mean {result['dataset']}**", result["mean"], methods, has_kernel))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ CLI


def default_data_dirs() -> list[Path]:
    """``../shared/data/bench/Set5`` and ``Set14`` beside the project (or the working folder), if there."""
    roots = []
    if os.environ.get("NAPARI_DAN_SHARED"):
        roots.append(Path(os.environ["NAPARI_DAN_SHARED"]))
    roots += [Path.cwd().parent / "shared", Path(__file__).resolve().parents[3].parent / "shared"]
    for root in roots:
        dirs = [root / "data" / "bench" / s for s in ("Set5", "Set14")]
        found = [d for d in dirs if d.is_dir()]
        if found:
            return found
    return []


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``napari-dan evaluate``."""
    parser.add_argument("--model", "-m", nargs="+", action="extend", metavar="NAME_OR_PATH",
                        help="bundled model names or checkpoint files (default: every bundled "
                        "model); 'bicubic' scores only the bicubic baseline (needs --scale)")
    parser.add_argument("--data", "-d", nargs="+", action="extend", metavar="DIR",
                        help="folders of HR images (default: ../shared/data/bench/Set5 and Set14)")
    parser.add_argument("--scale", type=int, choices=(2, 3, 4),
                        help="only for --model bicubic; a model is evaluated at its own scale")
    parser.add_argument("--max-images", type=int, metavar="N",
                        help="only the first N images of each folder (quick runs)")
    parser.add_argument("--whole-image", action="store_true",
                        help="run the network on whole images as the papers do, instead of "
                        "napari_dan.super_resolve (tiling, global kernel)")
    parser.add_argument("--no-non-blind", dest="non_blind", action="store_false",
                        help="skip the true-kernel (non-blind) baseline")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON ('-': stdout)")
    parser.add_argument("--summary", action="store_true",
                        help="print only the mean rows, not the per-image and per-sigma ones")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")


def _json_safe(obj):
    # json has no inf/nan; identical images (inf dB) become null
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def run_evaluate(args: argparse.Namespace) -> int:
    """``napari-dan evaluate``: tables on stdout, optional JSON; returns the exit status."""
    from ..model import list_models

    quiet = getattr(args, "quiet", False)
    models = list(getattr(args, "model", None) or [])
    if not models:
        models = [m["name"] for m in list_models()]
        if not models:
            print("error: no bundled models found; pass --model PATH (a checkpoint) or "
                  "--model bicubic --scale 4", file=sys.stderr)
            return 2
    data = [Path(d) for d in (getattr(args, "data", None) or default_data_dirs())]
    if not data:
        print("error: no benchmark folders; pass --data DIR (folders of HR images)", file=sys.stderr)
        return 2

    def report(done: int, total: int, msg: str) -> None:
        if not quiet:
            print(f"  [{done}/{total}] {msg}", file=sys.stderr, flush=True)

    results = []
    try:
        for name in models:
            model = _load(name)
            for d in data:
                if not quiet:
                    print(f"{getattr(model, 'name', 'bicubic')} on {d}", file=sys.stderr, flush=True)
                res = evaluate_gaussian8(model, d, scale=getattr(args, "scale", None),
                                         max_images=getattr(args, "max_images", None),
                                         whole_image=getattr(args, "whole_image", False),
                                         non_blind=getattr(args, "non_blind", True),
                                         device=getattr(args, "device", "cpu"), progress=report)
                results.append(res)
                summary = getattr(args, "summary", False)
                print(format_table(res, per_image=not summary, per_sigma=not summary), end="\n\n",
                      flush=True)
    except (DanError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if getattr(args, "json", None):
        text = json.dumps(_json_safe(results), indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            if not quiet:
                print(f"wrote {args.json}", file=sys.stderr)
    return 0
