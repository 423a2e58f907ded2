"""How many rounds of the DAN loop the engine needs: quality, kernel and time per ``iterations``.

For every model and test image, ``napari_dan.super_resolve`` (global kernel, fp32) runs once per
``iterations`` = 1 .. the model's loop, side by side in one process. ``iterations=n`` runs n
rounds (Restorer, then Estimator) on the estimation patches and restores the image with the n-th
round's kernel, the kernel reported. ``n = loop - 1`` ("auto", the default) restores exactly the
image of the network's own forward pass; ``n = loop`` is the kernel the engine reported before
session 10 (the network's last kernel), with one more Restorer pass behind it.

Test images:

* Gaussian8 (photo and grey models; ``napari_dan.training.evaluate``'s protocol): Set5 and
  Set14 HR images, 8 Gaussians per image, bicubic downsampling, uint8. Scored by Y-PSNR (grey
  models: PSNR on 255 * gray) and the kernel's sigma error (HR px, as in docs/quality.md).
* Microscopy (microscopy models; ``benchmarks/microscopy.py``'s forward model): beads,
  filaments, nuclei and the three real specimens, widefield PSFs of FWHM 2.5 / 5 / 8.5 HR px,
  camera binning, no noise and 200 photons. Scored by PSNR against the target and the kernel's
  FWHM error against the PSF's (Gaussian fits of ``kernel_stats``).

Run (writes the tables to stdout; docs/benchmarks.md quotes them)::

    OMP_NUM_THREADS=2 python benchmarks/iterations.py --images 5 --every 2
    OMP_NUM_THREADS=2 python benchmarks/iterations.py --models dan-x2-fluo --quick
    OMP_NUM_THREADS=2 python benchmarks/iterations.py --images 5 --every 2 --variants 4 settled
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from microscopy import FWHMS, NOISE, observe, psf_for, psnr, specimens  # noqa: E402
from quality import BENCH, command_line, machine  # noqa: E402

MODELS = ("dan-x2-fluo", "dan-x4-fluo", "dan-x2-gray", "dan-x4-gray", "dan-x2-rgb", "dan-x4-rgb")


def gaussian8_cases(model, quick: bool, images: int | None = None, every: int = 1):
    """(name, LR uint8, HR float [0, 1], true kernel, scorer) on Set5 and Set14."""
    from napari_dan.imaging.degradations import degrade, quantize
    from napari_dan.imaging.metrics import y_psnr
    from napari_dan.model.kernels import gaussian_kernel
    from napari_dan.training.evaluate import (
        KERNEL_SIZE,
        gaussian8_sigmas,
        list_images,
        match_channels,
        mod_crop,
        read_benchmark_image,
    )

    s = model.scale
    sigmas = gaussian8_sigmas(s)[::every]
    if quick:
        sigmas = sigmas[[0, -1]]
    for folder in ("Set5", "Set14"):
        for f in list_images(BENCH / folder, 2 if quick else images):
            hr = mod_crop(match_channels(read_benchmark_image(f), model.in_channels), s)
            for sigma in sigmas:
                k = gaussian_kernel(KERNEL_SIZE, float(sigma)).astype(np.float64)
                lr = np.round(np.clip(degrade(hr, k, s), 0, 1) * 255).astype(np.uint8)

                def score(sr, hr=hr):
                    return y_psnr(quantize(sr.astype(np.float64) / 255), hr, s)

                yield f"{folder}/{f.stem} sigma {sigma:.2f}", lr, k, score


def microscopy_cases(model, quick: bool):
    """(name, LR uint16, true PSF, scorer) through the microscope model."""
    rng = np.random.default_rng(7)
    for name, spec in specimens(quick).items():
        for fw in (FWHMS[::2] if quick else FWHMS):
            psf = psf_for(fw)
            for noise in ("none", "200 ph"):
                lr, hr = observe(spec, psf, model.scale, NOISE[noise], rng)

                def score(sr, hr=hr):
                    return psnr(sr.astype(np.float64), hr, 2 * model.scale)

                yield f"{name} FWHM {fw} {noise}", lr, psf, score


def kernel_error(kind: str, est: np.ndarray, true: np.ndarray) -> float:
    """Gaussian8: |sigma error| in HR px; microscopy: relative FWHM error."""
    from napari_dan.imaging.metrics import kernel_errors
    from napari_dan.model.kernels import kernel_stats

    if kind == "gaussian8":
        return kernel_errors(est, true)["abs_sigma_error"]
    t = kernel_stats(true).fwhm
    return abs(kernel_stats(est).fwhm - t) / t


def run(name: str, quick: bool, log, images: int | None = None, every: int = 1,
        variants: list | None = None) -> dict:
    from napari_dan import load_model, super_resolve

    model = load_model(name)
    kind = "microscopy" if model.sampling == "bin" else "gaussian8"
    cases = microscopy_cases(model, quick) if kind == "microscopy" else \
        gaussian8_cases(model, quick, images, every)
    rounds = variants or list(range(1, int(model.network.loop) + 1))
    default = max(1, int(model.network.loop) - 1)
    rows = []
    for case, lr, true, score in cases:
        row = {"case": case}
        for n in rounds:
            r = super_resolve(lr, model, precision="fp32", device="cpu", iterations=n)
            row[n] = {"psnr": score(r.image), "kernel": kernel_error(kind, r.kernel, true),
                      "estimate_s": r.metadata["timing"]["estimate_s"],
                      "total_s": r.metadata["timing"]["total_s"],
                      "rounds": (r.metadata.get("settled") or {}).get("rounds_run")}
        rows.append(row)
        log(f"{name} {case}: " + "  ".join(
            f"n={n} {row[n]['psnr']:.2f} dB k {row[n]['kernel']:.3f}"
            + (f" rounds {row[n]['rounds']}" if row[n]["rounds"] else "") for n in rounds))
    return {"model": name, "kind": kind, "rounds": rounds, "default": default, "rows": rows}


def markdown(res: dict) -> str:
    kind = res["kind"]
    unit = "sigma error, absolute (HR px)" if kind == "gaussian8" else "FWHM error"
    d = res["default"] if res["default"] in res["rounds"] else res["rounds"][0]
    what = "Gaussian8, Set5 + Set14" if kind == "gaussian8" else "microscopy fields"
    lines = [f"**{res['model']}** ({what}, {len(res['rows'])} images; the reference is n = {d}"
             f"{', the network' + chr(39) + 's own result' if d == res['default'] else ''})\n",
             f"| iterations | mean PSNR (dB) | PSNR - n = {d} (dB) mean / worst | "
             f"{'mean' if kind == 'gaussian8' else 'median'} {unit} "
             "| estimation (s, sum) | total (s, sum) |",
             "| ---: | ---: | --- | ---: | ---: | ---: |"]
    for n in res["rounds"]:
        ps = np.array([r[n]["psnr"] for r in res["rows"]])
        base = np.array([r[d]["psnr"] for r in res["rows"]])
        ks = np.array([r[n]["kernel"] for r in res["rows"]])
        fmt = "{:.1%}" if kind == "microscopy" else "{:.3f}"
        est = sum(r[n]["estimate_s"] for r in res["rows"])
        tot = sum(r[n]["total_s"] for r in res["rows"])
        settled = [k for r in res["rows"] for k in (r[n]["rounds"] or [])]
        note = f" (rounds run: mean {np.mean(settled):.2f})" if settled else ""
        lines.append(f"| {n}{note} | {ps.mean():.3f} | "
                     f"{(ps - base).mean():+.3f} / {(ps - base).min():+.3f} | "
                     f"{fmt.format(ks.mean() if kind == 'gaussian8' else float(np.median(ks)))} | "
                     f"{est:.1f} | {tot:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--quick", action="store_true",
                    help="two images per set / two specimens, two kernels each")
    ap.add_argument("--images", type=int, default=None,
                    help="Gaussian8: the first N images of each set (default: all)")
    ap.add_argument("--variants", nargs="+", default=None,
                    help="iterations values to compare (default: 1 .. loop); e.g. 4 settled")
    ap.add_argument("--every", type=int, default=1,
                    help="Gaussian8: every K-th of the 8 kernels (default: all)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(f"`{command_line()}`\n\n{machine()}\n", flush=True)
    for m in args.models:
        variants = [v if v == "settled" else int(v) for v in args.variants] \
            if args.variants else None
        res = run(m, args.quick, lambda s: print(s, file=sys.stderr, flush=True), args.images,
                  args.every, variants)
        print(markdown(res), flush=True)
    print(f"{time.perf_counter() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
