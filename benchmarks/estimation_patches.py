"""How many estimation patches should the global blind estimate average on a large field?

The engine's global mode runs the DAN loop on the ``ESTIMATION_PATCHES`` (4) most textured
128 x 128 LR patches and averages their kernels (engine/kernel_modes.py). Session 18 found, on
one draw of 27 fields, that averaging all sixteen patches of a 512 x 512 LR field instead of the
four most textured lowered the median FWHM error of the x4 model from 28.6% to 23.4%. This
checks that on other draws, at x2 and x4, with noise-free fields too, and for every count
between: each field is estimated once with all its patches (the engine's own code, with the
kernels of the single patches recorded in texture order), and the estimate of the ``k`` most
textured is the mean of the first ``k`` kernels, exactly what the engine computes with
``ESTIMATION_PATCHES = k``.

Fields: the microscopy benchmark's forward model and synthetic specimens at its densities
(``benchmarks/microscopy.py``: widefield PSF of in-focus FWHM 2.5 / 5 / 8.5 HR px, camera
binning, Poisson photons at 1,000 / 200 / 50 per unit of the specimen's peak or no noise, read
noise 1.5 e-, offset 100), ``--side`` LR px square, ``--seed`` (field_size.py used 2027).

    env OMP_NUM_THREADS=2 python benchmarks/estimation_patches.py dan-x2-fluo dan-x4-fluo \\
        --json docs/estimation-patches.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from microscopy import FWHMS, NOISE, observe, psf_for  # noqa: E402

DENSITY = {"beads": 1 / 800, "filaments": 1 / 300, "nuclei": 1 / 60}


def patch_kernels(lr, model):
    """(kernels of every estimation patch in texture order, their SNRs, seconds)."""
    from napari_dan.engine import estimation, kernel_modes, prepare

    got = {}
    real_combine = estimation.combine

    def record(codes, kernels):
        got["kernels"] = [np.asarray(k, np.float64).reshape(k.shape[-2:]) for k in kernels]
        return real_combine(codes, kernels)

    old = kernel_modes.ESTIMATION_PATCHES
    kernel_modes.ESTIMATION_PATCHES = 10**6
    estimation.combine = record
    t = time.perf_counter()
    try:
        plan = prepare(lr, model, precision="fp32")
    finally:
        kernel_modes.ESTIMATION_PATCHES = old
        estimation.combine = real_combine
    return got["kernels"], plan.estimate, time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--side", type=int, default=512, help="LR side (px)")
    p.add_argument("--seed", type=int, default=2028)
    p.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    from napari_dan import load_model
    from napari_dan.imaging.specimens import random_specimen
    from napari_dan.model.kernels import kernel_stats

    out = {"command": "python benchmarks/estimation_patches.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), "models": {}}
    for name in a.models:
        model = load_model(name)
        s = model.scale
        rng = np.random.default_rng(a.seed)
        rows = []
        print(f"\n{name} (x{s}), LR {a.side} x {a.side}: blind FWHM (HR px) and error of the mean "
              "of the k most textured patches' kernels")
        print("| specimen | PSF | photons | SNR | " + " | ".join(f"k={k}" for k in a.counts)
              + " | seconds (all patches) |")
        print("| --- | --- | --- | --- | " + " | ".join("---" for _ in a.counts) + " | --- |")
        for kind, dens in DENSITY.items():
            spec, _ = random_specimen((a.side * s, a.side * s), rng, kind=kind, density=dens,
                                      haze=False)
            spec = spec + 0.02
            for fw in FWHMS:
                psf = psf_for(fw)
                true = kernel_stats(psf).fwhm
                for noise, photons in NOISE.items():
                    lr, _ = observe(spec, psf, s, photons, rng)
                    kernels, est, secs = patch_kernels(lr, model)
                    cells, row = [], {"specimen": kind, "fwhm": fw, "true": true, "noise": noise,
                                      "snr": est.snr, "patches": len(kernels), "seconds": secs,
                                      "estimates": {}}
                    for k in a.counts:
                        m = np.mean(kernels[:k], axis=0)
                        f = kernel_stats(m / m.sum()).fwhm
                        row["estimates"][k] = f
                        cells.append(f"{f:.2f} ({100 * (f / true - 1):+.0f}%)")
                    rows.append(row)
                    print(f"| {kind} | {true:.2f} | {noise} | {est.snr:.0f} | " + " | ".join(cells)
                          + f" | {secs:.0f} |", flush=True)

        def med(sel, k, rows=rows):
            e = [abs(r["estimates"][k] / r["true"] - 1) for r in rows if sel(r)]
            return 100 * float(np.median(e)) if e else float("nan")

        splits = [("all", lambda r: True), ("SNR >= 20", lambda r: r["snr"] >= 20),
                  ("SNR < 20", lambda r: r["snr"] < 20)]
        splits += [(kind, lambda r, kd=kind: r["specimen"] == kd) for kind in DENSITY]
        for label, sel in splits:
            n = sum(1 for r in rows if sel(r))
            print(f"| **median error, {label}** ({n}) | | | | "
                  + " | ".join(f"{med(sel, k):.1f}%" for k in a.counts) + " | |")
        out["models"][name] = {"scale": s, "side": a.side, "seed": a.seed, "rows": rows}
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
