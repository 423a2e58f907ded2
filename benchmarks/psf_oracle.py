"""How well can a field's PSF width be known at all? An oracle's FWHM error on the benchmark fields.

The blind FWHM target of issue 13 (median error <= 10% over specimens, PSFs, noise levels, x2
and x4) asks for a width read from a few hundred binned, noisy pixels. This script measures how
much of that width the pixels hold, with an estimator that knows everything but the width: the
specimen exactly (every bead's position and brightness), the PSF's family (the benchmark's
widefield PSF, ``microscopy.psf_for``), the photon count, offset and read noise. It fits only
the FWHM, by maximum likelihood (Gaussian approximation of Poisson + read noise, variance = mean
electrons + read noise^2) over a log-spaced grid of candidate widths refined by a parabola. No
blind method can do better on average than this oracle; where its error is large, the field
does not determine the PSF and a blind estimate there is a prior's guess.

Beside it, on the bead fields, the PSF measured from the isolated spots
(``napari_dan.imaging.spots.measure_psf``, what ``--psf spots`` uses): a blind classical method
that is right when the spots are points, scored the same way; it needs at least 3 isolated
spots bright enough to place (docs/engine.md), and the table counts the fields where it found
them. The bound with the specimen unknown (beads' positions, filaments' widths):
``benchmarks/information_bound.py``.

The fields are the microscopy benchmark's synthetic specimens (``microscopy.specimens``: beads,
filaments, nuclei, seeded), its PSF widths (FWHM 2.5, 5, 8.5 HR px) and noise levels, x2 and x4
(camera binning), ``--seeds`` noise draws each; errors against the true PSF's Gaussian-fit FWHM,
as the benchmark scores DAN.

Run::

    env OMP_NUM_THREADS=1 python benchmarks/psf_oracle.py --seeds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from microscopy import FWHMS, NOISE, OFFSET, observe, psf_for, specimens  # noqa: E402

READ_NOISE = 1.5  # e- rms, as microscopy.observe
CANDIDATES = np.exp(np.linspace(np.log(1.2), np.log(14.0), 49))


def fit_width(lr: np.ndarray, models: np.ndarray, noisy: bool) -> float:
    """Index-space ML fit: ``models`` (n_candidates, h, w) expected counts; returns the
    candidate width (parabola-refined in log width) that explains ``lr`` best."""
    y = lr.astype(np.float64)
    if noisy:
        var = np.maximum(models - OFFSET, 0) + READ_NOISE ** 2
        nll = (((y - models) ** 2) / var + np.log(var)).sum(axis=(1, 2))
    else:
        nll = ((y - models) ** 2).sum(axis=(1, 2))
    i = int(np.argmin(nll))
    logc = np.log(CANDIDATES)
    if 0 < i < len(CANDIDATES) - 1:
        a, b, c = nll[i - 1], nll[i], nll[i + 1]
        den = a - 2 * b + c
        if den > 0:
            step = logc[1] - logc[0]
            return float(np.exp(logc[i] + 0.5 * step * (a - c) / den))
    return float(CANDIDATES[i])


def main(argv=None) -> int:
    from napari_dan.imaging.camera import bin_pixels
    from napari_dan.imaging.degradations import blur
    from napari_dan.imaging.spots import measure_psf
    from napari_dan.model.kernels import kernel_stats

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="noise draws per field")
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    specs = specimens(quick=False)
    specs = {k: v for k, v in specs.items() if "(real)" not in k}
    psfs = [psf_for(float(c)) for c in CANDIDATES]
    # the candidates' own Gaussian-fit FWHM, so a fitted candidate is scored as DAN's kernel is
    cand_fwhm = np.array([kernel_stats(p).fwhm for p in psfs])
    rows = []
    for name, spec in specs.items():
        blurred = [blur(spec, p) for p in psfs]
        for scale in a.scales:
            binned = np.stack([bin_pixels(b, scale) for b in blurred])
            for fw in FWHMS:
                true = kernel_stats(psf_for(fw)).fwhm
                for noise, photons in NOISE.items():
                    peak = photons or 10000.0
                    models = binned * peak + OFFSET
                    for seed in range(a.seeds):
                        rng = np.random.default_rng(1000 * seed + 7)
                        lr, _ = observe(spec, psf_for(fw), scale, photons, rng)
                        w = fit_width(lr, models, photons is not None)
                        est = float(np.interp(np.log(w), np.log(CANDIDATES), cand_fwhm))
                        row = {"image": name, "scale": scale, "fwhm": fw, "noise": noise,
                               "true": true, "oracle": est, "error": abs(est - true) / true}
                        if name == "beads":
                            try:
                                sp = kernel_stats(measure_psf(lr).kernel(scale, 41)).fwhm
                                row["spots_error"] = abs(sp - true) / true
                            except Exception:  # noqa: BLE001 - too few spots
                                row["spots_error"] = float("nan")
                        rows.append(row)
    print(f"Oracle PSF width (specimen, PSF family, photons and noise known; only the FWHM "
          f"fitted), {a.seeds} noise draws per field, {time.perf_counter() - t0:.0f} s.\n")
    for scale in a.scales:
        print(f"x{scale}: median FWHM error per image x noise (over the PSF widths and draws)\n")
        print("| image | " + " | ".join(NOISE) + " |")
        print("| --- | " + " | ".join("---" for _ in NOISE) + " |")
        for name in specs:
            cells = [np.median([r["error"] for r in rows if r["image"] == name
                                and r["scale"] == scale and r["noise"] == nz]) for nz in NOISE]
            print(f"| {name} | " + " | ".join(f"{100 * c:.1f}%" for c in cells) + " |")
        cells = []
        for nz in NOISE:
            e = np.array([r["spots_error"] for r in rows if r["image"] == "beads"
                          and r["scale"] == scale and r["noise"] == nz])
            ok = e[np.isfinite(e)]
            cells.append(f"{100 * np.median(ok):.1f}% ({len(ok)}/{len(e)})" if len(ok)
                         else f"- (0/{len(e)})")
        print("| beads, PSF from spots (fields measured) | " + " | ".join(cells) + " |")
        allr = [r["error"] for r in rows if r["scale"] == scale]
        print(f"\nmedian over all: {100 * np.median(allr):.1f}%; 90th percentile "
              f"{100 * np.percentile(allr, 90):.1f}%\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
