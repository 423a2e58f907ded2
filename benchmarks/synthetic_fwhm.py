"""Blind FWHM and blind - bicubic PSNR on the microscopy benchmark's synthetic fields only.

A quick check of candidate models: the same 36 fields as ``benchmarks/microscopy.py`` (beads,
filaments, nuclei; PSF FWHM 2.5 / 5 / 8.5 HR px; no noise, 1,000 / 200 / 50 photons; the same
seeds, so the same noise), without Richardson-Lucy, the true-PSF runs, the real images and the
real beads. Per model: median and mean relative FWHM error of the blind kernel, and the mean
blind - bicubic PSNR.

    env OMP_NUM_THREADS=2 python benchmarks/synthetic_fwhm.py dan-x4-fluo RUN/dan-x4-fluo.pt \\
        [--kernel-views auto|1|4|8] [--fields-scale 4]
    python benchmarks/synthetic_fwhm.py --spots 4

``--fields-scale``: make the fields for this scale instead of each model's own, and report the
model's FWHM times fields-scale / model scale (e.g. an x2 model's estimate on x4 fields, on
the x4 grid); PSNR is then not reported. ``--spots SCALE``: no model; the PSF measured from
isolated spots (:func:`napari_dan.imaging.spots.measure_psf`) on each bead field at that scale,
or why none could be measured: how much the fields themselves say about the PSF.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from microscopy import bicubic, psnr, synthetic_fields  # noqa: E402


def run(model, views, fields_scale: int | None = None) -> dict:
    from napari_dan import super_resolve
    from napari_dan.model.kernels import kernel_stats

    s = fields_scale or model.scale
    errs, gains = [], []
    for _, _, _, true, _, lr, hr in synthetic_fields(s):
        r = super_resolve(lr, model, precision="fp32", kernel_views=views)
        fwhm = kernel_stats(r.kernel).fwhm * s / model.scale
        errs.append(abs(fwhm - true) / true)
        if s == model.scale:
            b = 2 * s
            gains.append(psnr(r.image.astype(np.float64), hr, b)
                         - psnr(bicubic(lr, s), hr, b))
    return {"fields": len(errs), "median": float(np.median(errs)), "mean": float(np.mean(errs)),
            "gain": float(np.mean(gains)) if gains else None}


def spots(scale: int) -> None:
    from napari_dan.errors import DanError
    from napari_dan.imaging.spots import measure_psf
    from napari_dan.model.kernels import kernel_stats

    print(f"| bead field (x{scale}) | noise | true FWHM | PSF from spots |")
    print("| --- | --- | --- | --- |")
    for name, fw, noise, true, _, lr, _ in synthetic_fields(scale):
        if name != "beads":
            continue
        try:
            got = f"{kernel_stats(measure_psf(lr).kernel(scale, 81)).fwhm:.2f} px"
        except DanError as e:
            got = f"none: {str(e).split(';')[0]}"
        print(f"| {fw:g} px | {noise} | {true:.2f} | {got} |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", help="bundled names or checkpoint files")
    p.add_argument("--kernel-views", default="auto")
    p.add_argument("--fields-scale", type=int, default=None)
    p.add_argument("--spots", type=int, default=None, metavar="SCALE")
    a = p.parse_args(argv)
    if a.spots:
        spots(a.spots)
    if not a.models:
        return 0
    from napari_dan import load_model

    views = a.kernel_views if a.kernel_views == "auto" else int(a.kernel_views)
    print("| model | views | fields | FWHM error median / mean | blind - bicubic |")
    print("| --- | --- | --- | --- | --- |")
    for name in a.models:
        r = run(load_model(name), views, a.fields_scale)
        gain = "-" if r["gain"] is None else f"{r['gain']:+.2f} dB"
        print(f"| {name} | {a.kernel_views} | {r['fields']} | {100 * r['median']:.1f}% / "
              f"{100 * r['mean']:.1f}% | {gain} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
