"""Does a larger field make the blind PSF estimate on noisy data better?

The blind estimate on noisy fields is pulled toward the middle of the PSF range
(docs/models.md, Session 17). If that is a lack of evidence, more of the same field should help;
if it is a bias of the Estimator, it should not. Fields of the microscopy benchmark's forward
model (``benchmarks/microscopy.py``: widefield PSF, camera binning, Poisson noise plus 1.5 e-
read noise, offset 100) with the benchmark's three synthetic specimens at its densities, PSF
FWHM 2.5 / 5 / 8.5 HR px, 1,000 / 200 / 50 photons, at LR sides 64 (the benchmark's size at
x4), 128, 256 and 512 px. Only the engine's global estimate runs
(:func:`napari_dan.engine.prepare`): one patch for sides up to 256, the four most textured
128-px patches for 512 (``ESTIMATION_PATCHES``), and, as ``512/16``, all sixteen. The specimen
of a smaller field is the top-left corner of the larger one's, so the sizes differ only in how
much of it is seen; the noise is redrawn per field (seeded).

    env OMP_NUM_THREADS=2 python benchmarks/field_size.py dan-x4-fluo [--sizes 64 128 256 512]
    python benchmarks/field_size.py --spots 4 [--sizes 64 512]

``--spots SCALE``: no model; the PSF measured from isolated spots
(:func:`napari_dan.imaging.spots.measure_psf`, as the engine's ``spots`` source) on bead fields
of each size at that scale, or why none could be measured (20 s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from microscopy import observe, psf_for  # noqa: E402

DENSITY = {"beads": 1 / 800, "filaments": 1 / 300, "nuclei": 1 / 60}
PHOTONS = (1000.0, 200.0, 50.0)
FWHMS = (2.5, 5.0, 8.5)


def estimate(lr, model, patches: int | None = None):
    from napari_dan.engine import kernel_modes, prepare
    from napari_dan.model.kernels import kernel_stats

    old = kernel_modes.ESTIMATION_PATCHES
    try:
        if patches is not None:
            kernel_modes.ESTIMATION_PATCHES = patches
        plan = prepare(lr, model, precision="fp32")
    finally:
        kernel_modes.ESTIMATION_PATCHES = old
    return kernel_stats(plan.estimate.kernel).fwhm, plan.estimate.snr


def spots(scale: int, sizes) -> None:
    from napari_dan.errors import InputError
    from napari_dan.imaging.specimens import random_specimen
    from napari_dan.imaging.spots import measure_psf
    from napari_dan.model.kernels import kernel_stats

    rng = np.random.default_rng(2027)
    print("| LR side | PSF (HR px) | photons | spots PSF (HR px) | error | spots |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in sizes:
        spec, _ = random_specimen((n * scale, n * scale), rng, kind="beads",
                                  density=DENSITY["beads"], haze=False)
        for fw in FWHMS:
            psf = psf_for(fw)
            true = kernel_stats(psf).fwhm
            for ph in PHOTONS:
                lr, _ = observe(spec + 0.02, psf, scale, ph, rng)
                try:
                    r = measure_psf(lr)
                except InputError as e:
                    print(f"| {n} | {true:.2f} | {ph:g} | none: {str(e).split(';')[0]} | | |")
                    continue
                est = kernel_stats(r.kernel(scale=scale, size=31)).fwhm
                print(f"| {n} | {true:.2f} | {ph:g} | {est:.2f} | {100 * abs(est - true) / true:.0f}% "
                      f"| {r.n_spots} |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--spots", type=int, metavar="SCALE")
    a = p.parse_args(argv)
    if a.spots:
        spots(a.spots, a.sizes)
        return 0
    if not a.model:
        p.error("a model is needed (or --spots SCALE)")
    from napari_dan import load_model
    from napari_dan.imaging.specimens import random_specimen
    from napari_dan.model.kernels import kernel_stats

    model = load_model(a.model)
    s = model.scale
    big = max(a.sizes) * s
    rng = np.random.default_rng(2027)
    runs = [(str(n), n, None) for n in a.sizes]
    if max(a.sizes) >= 512:
        runs.append((f"{max(a.sizes)}/16", max(a.sizes), 16))
    errs: dict[str, list[float]] = {r[0]: [] for r in runs}
    print("| specimen | PSF (HR px) | photons | SNR | " +
          " | ".join(f"LR {r[0]}" for r in runs) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in runs) + " |")
    for kind, dens in DENSITY.items():
        spec, _ = random_specimen((big, big), rng, kind=kind, density=dens, haze=False)
        spec = spec + 0.02
        for fw in FWHMS:
            psf = psf_for(fw)
            true = kernel_stats(psf).fwhm
            for ph in PHOTONS:
                cells, snr = [], None
                for label, n, patches in runs:
                    lr, _ = observe(spec[:n * s, :n * s], psf, s, ph, rng)
                    est, snr_ = estimate(lr, model, patches)
                    snr = snr_ if snr is None else snr
                    err = abs(est - true) / true
                    errs[label].append(err)
                    cells.append(f"{est:.2f} ({100 * err:.0f}%)")
                print(f"| {kind} | {true:.2f} | {ph:g} | {snr:.0f} | " + " | ".join(cells) + " |",
                      flush=True)
    print("| **median error** | | | | " +
          " | ".join(f"{100 * np.median(errs[r[0]]):.1f}%" for r in runs) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
