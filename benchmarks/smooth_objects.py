"""Large smooth objects and the blind PSF estimate: the real nuclei of the microscopy benchmark.

The microscopy benchmark's real nuclei (DSB2018, ../shared/data/microscopy/nuclei2d_dsb2018.tif)
stay under bicubic with the blind kernel while DAN with the true PSF beats bicubic by 1.5-2 dB.
This asks why, and what a user can do instead:

* the recording as the benchmark uses it (the central 256 x 256 px, "zoom 1"), and the whole
  512 x 512 recording binned 2 x 2 ("zoom 2": the same field size, the nuclei half as wide and
  their own blur halved, so a blind estimate that reads the recording's blur should halve too);
* per field the blind estimate with no PSF added ("own"), then for each added PSF (2.5 / 5 /
  8.5 HR px, widefield, the benchmark's camera and noise model) bicubic, DAN blind, DAN with the
  true PSF, and DAN with the PSF from optics (``napari_dan.Optics``: NA 1.4, 520 nm, the pixel
  size that gives the true PSF's width) when the pixel size a user types is 15% too small or too
  large (a PSF 15% too wide or too narrow).

Run (about 1 minute on two threads)::

    env OMP_NUM_THREADS=2 python benchmarks/smooth_objects.py --model dan-x2-fluo dan-x4-fluo \
        --json docs/smooth-objects.json
    python benchmarks/smooth_objects.py --model dan-x2-fluo --figure docs/images/nuclei_optics_x2.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import microscopy as M  # noqa: E402
from quality import command_line  # noqa: E402


def fields() -> dict[str, np.ndarray]:
    import tifffile

    a = tifffile.imread(M.MICRO / "nuclei2d_dsb2018.tif").astype(np.float64)
    while a.ndim > 2:
        a = a.max(0)
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    binned = a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    out = {}
    for name, img in (("nuclei (real), zoom 1", a), ("nuclei (real), zoom 2", binned)):
        y0, x0 = max((img.shape[0] - M.SIZE) // 2, 0), max((img.shape[1] - M.SIZE) // 2, 0)
        c = img[y0:y0 + M.SIZE, x0:x0 + M.SIZE]
        c = c[:c.shape[0] // 4 * 4, :c.shape[1] // 4 * 4]
        lo, hi = np.percentile(c, [1, 99.9])
        out[name] = np.clip((c - lo) / (hi - lo), 0, None)
    return out


def optics_for(fwhm_px: float, scale: int, error: float):
    """Optics whose PSF is the benchmark's widefield PSF of ``fwhm_px`` HR px when ``error`` is
    0; otherwise the input pixel size typed ``error`` too large (the PSF reads narrower)."""
    from napari_dan import Optics
    from napari_dan.imaging.psf import airy_fwhm

    hr_px = airy_fwhm(1.4, 0.52) / fwhm_px  # the benchmark's grid (microscopy.psf_for)
    return Optics(na=1.4, wavelength=0.52, pixel_size=hr_px * scale * (1 + error))


def run(model, log) -> list[dict]:
    from napari_dan import super_resolve
    from napari_dan.model.kernels import fit_kernel_size, kernel_stats

    s, rows = model.scale, []
    rng = np.random.default_rng(7)
    for name, spec in fields().items():
        lr0, _ = M.observe(spec, np.ones((1, 1)), s, None, rng)
        own = kernel_stats(super_resolve(lr0, model, precision="fp32").kernel).fwhm
        for fw in M.FWHMS:
            psf = M.psf_for(fw)
            k21, _ = fit_kernel_size(psf, model.kernel_size)
            for noise in M.NOISE:
                lr, hr = M.observe(spec, psf, s, M.NOISE[noise], rng)
                b = 2 * s
                row = {"image": name, "own_blind_fwhm": own, "fwhm": fw, "noise": noise,
                       "true_fwhm": kernel_stats(psf).fwhm,
                       "bicubic": M.psnr(M.bicubic(lr, s), hr, b)}
                r = super_resolve(lr, model, precision="fp32")
                row["dan_blind"] = M.psnr(r.image.astype(np.float64), hr, b)
                row["blind_fwhm"] = kernel_stats(r.kernel).fwhm
                t = super_resolve(lr, model, kernel=k21, precision="fp32")
                row["dan_true"] = M.psnr(t.image.astype(np.float64), hr, b)
                for err in (-0.15, 0.0, 0.15):
                    o = super_resolve(lr, model, kernel=optics_for(fw, s, err), precision="fp32")
                    row[f"dan_optics_{err:+.2f}"] = M.psnr(o.image.astype(np.float64), hr, b)
                    row[f"optics_fwhm_{err:+.2f}"] = o.metadata["optics"]["fwhm_px"]
                rows.append(row)
                log(f"{model.name} {name} {fw} {noise}: bicubic {row['bicubic']:.2f} blind "
                    f"{row['dan_blind']:.2f} ({row['blind_fwhm']:.2f} px) true "
                    f"{row['dan_true']:.2f} optics -15/0/+15% "
                    + " / ".join(f"{row[f'dan_optics_{e:+.2f}']:.2f}" for e in (-0.15, 0, 0.15)))
    return rows


def figure(model, path: Path) -> None:
    """LR (pixels enlarged) / bicubic / DAN blind / DAN with the PSF from optics / target on
    the zoom-2 nuclei, added PSF 2.5 HR px, 1,000 photons; 128 x 128 output px, shown 2x."""
    from skimage.io import imsave

    from napari_dan import super_resolve

    s = model.scale
    spec = fields()["nuclei (real), zoom 2"]
    lr, hr = M.observe(spec, M.psf_for(2.5), s, 1000.0, np.random.default_rng(1))
    views = [np.kron(lr.astype(np.float64), np.ones((s, s))), M.bicubic(lr, s),
             super_resolve(lr, model).image, super_resolve(lr, model,
                                                           kernel=optics_for(2.5, s, 0.0)).image,
             hr]
    lo, hi = np.percentile(hr, [0.5, 99.8])
    y0 = x0 = 40 * s // 2
    row = np.concatenate([(np.clip((np.asarray(v, np.float64)[y0:y0 + 128, x0:x0 + 128] - lo)
                                   / (hi - lo), 0, 1) * 255).astype(np.uint8) for v in views], 1)
    imsave(path, np.kron(row, np.ones((2, 2), np.uint8)), check_contrast=False)


def table(results: dict) -> str:
    cols = ("dan_blind", "dan_true", "dan_optics_-0.15", "dan_optics_+0.00", "dan_optics_+0.15")
    lines = ["| model | field | own blind FWHM (px) | noise | blind FWHM (px) for 2.5 / 5 / 8.5 | "
             "over bicubic (dB): blind | true PSF | optics, pixel size 15% small | optics | "
             "optics, 15% large |", "| --- " * 10 + "|"]
    for mname, rows in results.items():
        for name in dict.fromkeys(r["image"] for r in rows):
            for noise in M.NOISE:
                rs = [r for r in rows if r["image"] == name and r["noise"] == noise]
                gain = [np.mean([r[c] - r["bicubic"] for r in rs]) for c in cols]
                lines.append(f"| {mname} | {name} | {rs[0]['own_blind_fwhm']:.2f} | {noise} | "
                             + " / ".join(f"{r['blind_fwhm']:.2f}" for r in rs) + " | "
                             + " | ".join(f"{g:+.2f}" for g in gain) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", nargs="+", default=["dan-x2-fluo", "dan-x4-fluo"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--figure", type=Path, help="PNG of the first model's result (see figure())")
    args = ap.parse_args(argv)
    from napari_dan import load_model

    if args.figure:
        figure(load_model(args.model[0]), args.figure)
        return 0

    t0 = time.perf_counter()
    results = {}
    for m in args.model:
        model = load_model(m)
        results[model.name] = run(model, lambda t: print(t, file=sys.stderr, flush=True))
    print(table(results))
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"command": command_line(), "results": results},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
