"""``napari-dan demo``: the bundled default model on a bundled sample, with a comparison picture.

Super-resolves the sample (``napari_dan.samples``), writes the result, the kernel and a PNG
with the input, bicubic, DAN, the estimated and the true kernel side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from .errors import UnknownModelError

__all__ = ["run_demo", "comparison_png"]


EXIT_OK, EXIT_FAILED = 0, 1


def _err(msg: object) -> None:
    from .errors import clean_message

    print(f"napari-dan: error: {clean_message(msg, 2000)}", file=sys.stderr)




def _panel(img, height: int):
    """uint8 RGB panel of a given height (nearest-neighbour resize), from gray or RGB uint8."""
    import numpy as np

    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    a = a[..., :3]
    f = height / a.shape[0]
    ys = np.minimum((np.arange(height) / f).astype(int), a.shape[0] - 1)
    w = max(1, int(round(a.shape[1] * f)))
    xs = np.minimum((np.arange(w) / f).astype(int), a.shape[1] - 1)
    return a[ys][:, xs].astype(np.uint8)


def _kernel_image(kernel):
    """A kernel as uint8 gray, its maximum white."""
    import numpy as np

    k = np.clip(np.asarray(kernel, np.float64), 0, None)
    return (255 * k / max(k.max(), 1e-12)).astype(np.uint8)


def _label(panel, text: str):
    """Write ``text`` into the top-left corner (Pillow ships with scikit-image; skipped if not)."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        return panel
    import numpy as np

    im = Image.fromarray(panel)
    d = ImageDraw.Draw(im)
    box = d.textbbox((4, 4), text)
    d.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
    d.text((4, 4), text, fill=(255, 255, 255))
    return np.asarray(im)


def comparison_png(path: str | os.PathLike, lr, bicubic, sr, kernel, hr=None,
                   true_kernel=None, labels: dict | None = None) -> Path:
    """Side-by-side PNG: input (nearest), bicubic, DAN, [truth], kernel (estimated [and true]).

    Images are uint8 (gray or RGB) on the output grid except ``lr``; kernels are 2D arrays.
    """
    import numpy as np
    from skimage.io import imsave

    labels = labels or {}
    h = sr.shape[0]
    cols = [("input", lr), ("bicubic", bicubic), ("DAN", sr)]
    if hr is not None:
        cols.append(("truth", hr))
    panels = [_label(_panel(img, h), labels.get(name, name)) for name, img in cols]
    ks = [("kernel", kernel)] + ([("true kernel", true_kernel)] if true_kernel is not None else [])
    kh = h // len(ks)
    kp = [_label(_panel(_kernel_image(k), kh), labels.get(n, n)) for n, k in ks]
    kw = max(p.shape[1] for p in kp)
    kp = [np.pad(p, ((0, 0), (0, kw - p.shape[1]), (0, 0))) for p in kp]
    kcol = np.concatenate(kp, axis=0)
    kcol = np.pad(kcol, ((0, h - kcol.shape[0]), (0, 0), (0, 0)))
    gap = np.full((h, 4, 3), 255, np.uint8)
    row = []
    for p in panels + [kcol]:
        row += [p, gap]
    out = np.concatenate(row[:-1], axis=1)
    path = Path(path)
    imsave(path, out, check_contrast=False)
    return path


def run_demo(args: argparse.Namespace) -> int:
    import numpy as np
    from skimage.transform import resize

    from .engine import super_resolve
    from .io import TiffMeta, scaled_metadata, write_kernels, write_tiff
    from .model import DEFAULT_MODEL, load_model
    from .model.kernels import kernel_stats
    from .samples import make_sample

    name = args.model or DEFAULT_MODEL
    try:
        model = load_model(name)
    except UnknownModelError as e:
        from .model import list_models

        names = [m["name"] for m in list_models()]
        if names and name not in names:  # a typo, not a broken installation
            _err(f"unknown model {name!r}; bundled models: {', '.join(names)}; or pass the "
                 "path of a checkpoint file with --model")
        else:
            _err(f"the demo needs the bundled model {name!r}, which is not installed here "
                 f"({e}). Run it with --model PATH_TO_CHECKPOINT, or reinstall napari-dan.")
        return EXIT_FAILED
    s = model.scale
    # the sample each kind of model is made for: colour photos, grey photos (bicubic),
    # fluorescence through a microscope (camera pixel integration)
    kind = ("photo" if model.in_channels == 3 else
            "fluorescence" if model.sampling == "bin" else "photo-grey")
    sample = make_sample(kind, scale=s)
    lr, hr = sample["lr"], sample["hr"]
    print(f"model: {model.name} ({model.architecture}, x{s}, {model.in_channels}-channel, "
          f"{model.source or 'in memory'})" + (f": {model.description}" if model.description
                                                else ""))
    print(f"sample: {sample['description']}; input {lr.shape[1]}x{lr.shape[0]} px")
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:  # said as the CLI says them, once each
        warnings.simplefilter("always", UserWarning)
        res = super_resolve(lr, model, device=args.device)
    dt = time.perf_counter() - t0
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    sr = res.image
    top = float(np.iinfo(lr.dtype).max)
    bic = resize(lr.astype(np.float64) / top, sr.shape, order=3, mode="edge",
                 anti_aliasing=False)
    bic = np.clip(np.round(bic * top), 0, top).astype(lr.dtype)

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"demo_{sample['name'].replace(' ', '_')}_x{s}"
    px, unit = sample.get("pixel_size"), sample.get("unit")
    meta = TiffMeta(shape=lr.shape, dtype=lr.dtype, axes="YXS" if lr.ndim == 3 else "YX",
                    photometric="rgb" if lr.ndim == 3 else "minisblack")
    if px and unit:
        meta.kind, meta.unit = "imagej", unit
        meta.pixel_size = {"X": px, "Y": px}
        meta.resolution = (1 / px, 1 / px)
        meta.imagej = {"unit": "um" if unit == "µm" else unit}
    sr_meta = scaled_metadata(meta, s)
    p_sr = write_tiff(out / f"{stem}.tif", sr, sr_meta)
    hr_px = sample.get("hr_pixel_size")
    stats = kernel_stats(res.kernel, hr_px, unit if hr_px else None)
    true_stats = kernel_stats(sample["kernel"], hr_px, unit if hr_px else None)
    p_k = write_kernels(out / f"{stem}_kernel.tif", res.kernel,
                        {"model": model.name, "scale": s, "kernel_stats": stats.to_dict(),
                         "true_kernel_stats": true_stats.to_dict(),
                         "sample": sample["description"]}, hr_px, unit)
    lines = [f"DAN ({model.name}) {dt:.1f} s on {res.metadata.get('device', '?')}",
             f"kernel: {stats.summary()}",
             f"true kernel: {true_stats.summary()}"]
    labels = {"DAN": f"DAN {model.name}"}
    from .imaging.metrics import y_psnr

    peak = 255.0 if hr.dtype == np.uint8 else float(hr.max())  # 16-bit counts: the truth's peak
    p_dan = y_psnr(sr / peak, hr / peak, s)
    p_bic = y_psnr(bic / peak, hr / peak, s)
    lines.append(f"PSNR vs truth (Y, border {s}{'' if hr.dtype == np.uint8 else ', peak = the truth maximum'}): "
                 f"DAN {p_dan:.2f} dB, bicubic {p_bic:.2f} dB")
    labels.update({"DAN": f"DAN {model.name} {p_dan:.2f} dB",
                   "bicubic": f"bicubic {p_bic:.2f} dB"})
    labels.update({"kernel": f"estimated FWHM {stats.fwhm:.2f}",
                   "true kernel": f"true FWHM {true_stats.fwhm:.2f}"})
    views = [lr, bic, sr, hr]
    if hr.dtype != np.uint8:  # 16-bit counts shown on one 8-bit scale: the truth's range
        lo, hi = np.percentile(hr, [0.5, 99.9])
        views = [np.clip((v.astype(np.float64) - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
                 for v in views]
    p_png = comparison_png(out / f"{stem}_comparison.png", *views[:3], res.kernel, views[3],
                           sample["kernel"], labels)
    for line in lines:
        print(line)
    print(f"wrote {p_sr}\nwrote {p_k}\nwrote {p_png}")
    return EXIT_OK
