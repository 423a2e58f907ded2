"""Blind FWHM and blind - bicubic PSNR on the microscopy benchmark's synthetic fields only.

A quick check of candidate models: the same 36 fields as ``benchmarks/microscopy.py`` (beads,
filaments, nuclei; PSF FWHM 2.5 / 5 / 8.5 HR px; no noise, 1,000 / 200 / 50 photons; the same
seeds, so the same noise), without Richardson-Lucy, the true-PSF runs, the real images and the
real beads. Per model: median and mean relative FWHM error of the blind kernel, and the mean
blind - bicubic PSNR.

    env OMP_NUM_THREADS=2 python benchmarks/synthetic_fwhm.py dan-x4-fluo RUN/dan-x4-fluo.pt \
        [--kernel-views auto|1|4|8] [--fields-scale 4]

``--fields-scale``: make the fields for this scale instead of each model's own, and report the
model's FWHM times fields-scale / model scale (e.g. an x2 model's estimate on x4 fields, on
the x4 grid); PSNR is then not reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from microscopy import FWHMS, NOISE, bicubic, observe, psf_for, psnr, specimens  # noqa: E402


def run(model, views, fields_scale: int | None = None) -> dict:
    from napari_dan import super_resolve
    from napari_dan.model.kernels import kernel_stats

    s = fields_scale or model.scale
    rng = np.random.default_rng(7)  # microscopy.run_model's seed and draw order
    errs, gains = [], []
    for name, spec in specimens(False).items():
        for fw in FWHMS:
            psf = psf_for(fw)
            true = kernel_stats(psf).fwhm
            for noise in NOISE:
                lr, hr = observe(spec, psf, s, NOISE[noise], rng)
                if name not in ("beads", "filaments", "nuclei"):
                    continue  # the real images: their noise is drawn all the same, as there
                r = super_resolve(lr, model, precision="fp32", kernel_views=views)
                fwhm = kernel_stats(r.kernel).fwhm * s / model.scale
                errs.append(abs(fwhm - true) / true)
                if s == model.scale:
                    b = 2 * s
                    gains.append(psnr(r.image.astype(np.float64), hr, b)
                                 - psnr(bicubic(lr, s), hr, b))
    return {"fields": len(errs), "median": float(np.median(errs)), "mean": float(np.mean(errs)),
            "gain": float(np.mean(gains)) if gains else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="bundled names or checkpoint files")
    p.add_argument("--kernel-views", default="auto")
    p.add_argument("--fields-scale", type=int, default=None)
    a = p.parse_args(argv)
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
