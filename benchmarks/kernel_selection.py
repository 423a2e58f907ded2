"""Can the consistency residual choose the kernel? (issue 13, session 22)

Every result reports how well the SR image, blurred with its kernel and binned back, reproduces
the input (``napari_dan.imaging.consistency``). If that residual were smallest at the true PSF,
scanning kernel widths and keeping the best-fitting one would be a blind estimate that does not
share the Estimator's pull toward the middle of its range on noisy fields.

For the microscopy benchmark's synthetic fields (``benchmarks/microscopy.py``: beads, filaments,
nuclei; widefield PSFs of FWHM 2.5 / 5 / 8.5 HR px; 1,000 / 200 / 50 photons; 256 x 256 HR px,
binned ``scale`` x ``scale``) this restores each field with Gaussian kernels of FWHM 1.6-11 HR px
(``super_resolve(kernel=...)``), reprojects the SR image with that kernel and measures the
Poisson-weighted misfit per LR pixel, ``mean((LR - back)^2 / (back + read^2))`` (counts above the
offset, border of 4 LR px left out), and reports the width with the smallest misfit beside the
true FWHM and the blind estimate.

Run::

    env OMP_NUM_THREADS=1 python benchmarks/kernel_selection.py --scale 4 2 \
        --json docs/kernel-selection.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import microscopy as mb  # noqa: E402
from quality import command_line  # noqa: E402

WIDTHS = np.geomspace(1.6, 11.0, 9)
PHOTONS = (1000.0, 200.0, 50.0)
READ = 1.5  # the benchmark's read noise, electrons


def misfit(lr: np.ndarray, sr: np.ndarray, kernel: np.ndarray, scale: int, border: int = 4) -> float:
    """Poisson-weighted squared residual per LR pixel of ``sr`` seen through ``kernel``."""
    from napari_dan.imaging.consistency import reproject

    back = reproject((np.asarray(sr, np.float64) - mb.OFFSET)[None], kernel.astype(np.float32),
                     scale, "bin")[0].astype(np.float64)
    d = lr.astype(np.float64)[:back.shape[0], :back.shape[1]] - mb.OFFSET
    res = (d - back)[border:-border, border:-border]
    var = np.clip(back[border:-border, border:-border], 0, None) + READ ** 2
    return float(np.mean(res ** 2 / var))


def run(scale: int, log) -> list[dict]:
    import napari_dan as nd
    from napari_dan.imaging.psf import gaussian_psf
    from napari_dan.model.kernels import kernel_stats

    model = nd.load_model(f"dan-x{scale}-fluo")
    specs = mb.specimens(quick=False)
    rng = np.random.default_rng(22)
    rows = []
    for name in ("beads", "filaments", "nuclei"):
        for fw in mb.FWHMS:
            psf = mb.psf_for(fw)
            true = kernel_stats(psf).fwhm
            for ph in PHOTONS:
                t0 = time.perf_counter()
                lr, _ = mb.observe(specs[name], psf, scale, ph, rng)
                blind = nd.super_resolve(lr, model).kernel_stats.fwhm
                fits = []
                for w in WIDTHS:
                    k = gaussian_psf(model.kernel_size, float(w))
                    fits.append(misfit(lr, nd.super_resolve(lr, model, kernel=k).image, k, scale))
                best = float(WIDTHS[int(np.argmin(fits))])
                rows.append({"scale": scale, "image": name, "true_fwhm": true, "photons": ph,
                             "blind_fwhm": blind, "best_fit_fwhm": best,
                             "misfit": dict(zip([round(float(w), 3) for w in WIDTHS], fits, strict=True))})
                log(f"x{scale} {name:9s} true {true:5.2f} px  {ph:6.0f} ph  blind {blind:5.2f}  "
                    f"best fit {best:5.2f}  misfit " + " ".join(f"{f:.3f}" for f in fits)
                    + f"  ({time.perf_counter() - t0:.0f} s)")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, nargs="+", default=[4, 2], choices=(2, 4))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    for s in args.scale:
        rows += run(s, lambda m: print(m, flush=True))
    at_narrowest = sum(r["best_fit_fwhm"] == float(WIDTHS[0]) for r in rows)
    print(f"best fit at the narrowest kernel tried ({WIDTHS[0]:.1f} px): {at_narrowest} of "
          f"{len(rows)} fields")
    if args.json:
        args.json.write_text(json.dumps({"command": command_line(), "widths": WIDTHS.tolist(),
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
