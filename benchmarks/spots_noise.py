"""The PSF measured from isolated spots (``imaging.spots.measure_psf``, ``--psf spots``) on
sparse bead fields as the light gets scarce, beside the Cramer-Rao bound of the same fields.

Fields: beads drawn as the microscopy benchmark's (``information_bound.bead_field``: sizes,
brightnesses, background 0.02) but sparse, one per ``--spacing``**2 HR px, on ``--size`` HR px,
through the benchmark's forward model (``microscopy.observe``: widefield PSF of in-focus FWHM 2.5
/ 5 / 8.5 HR px, camera binning x2 / x4, Poisson photons at 1,000 / 200 / 50 per unit of the
specimen's peak, read noise 1.5 e-, offset 100, 16-bit counts), ``--seeds`` draws per cell.
Per cell: how many draws gave a PSF, the median |error| of its FWHM (and the median signed
error) (``SpotPSF.kernel`` on the
output grid, against the true PSF's, both by the Gaussian fit of ``kernel_stats``), the median
number of spots used, and the bound (beads' positions, brightnesses and the background unknown,
``information_bound.beads_unknown_bound``, first draw): what an unbiased estimate using every bead
of the field could at best reach (one standard deviation).

    env OMP_NUM_THREADS=2 python benchmarks/spots_noise.py --json docs/spots-noise.json

``--bias`` instead measures where the joint fit's narrow bias on faint spots comes from and how
the refusal threshold was chosen (docs/models.md, session 20; 3 min): on Gaussian-PSF bead fields,
six draws per row, (a) the joint fit at the beads' true positions with the centres given or
left free, and (b) ``measure_psf`` with the refusal switched off (``min_snr=0``): its error, the
spots' median signal-to-noise it is gated on, and its time; its last row is its first field
with the spots' shot noise replaced by Gaussian noise of the background's level, which shows
where the narrow bias comes from (session 21).

To compare with another version of the package, run the same command with ``PYTHONPATH`` set to
that version's ``src`` (for example a ``git worktree`` of an older commit).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import information_bound as ib  # noqa: E402
import microscopy as mb  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--size", type=int, default=512, help="HR field side (px)")
    ap.add_argument("--spacing", type=float, default=55.0,
                    help="one bead per spacing**2 HR px (the benchmark's fields: 28)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--no-bound", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--speed", type=int, metavar="LR_SIDE",
                    help="instead: time measure_psf on one LR_SIDE x LR_SIDE field (x2, 5 px "
                         "Gaussian PSF, beads 1 per 3,000 HR px, 5,000 photons)")
    ap.add_argument("--bias", action="store_true", help="instead: the faint-spot bias checks")
    args = ap.parse_args(argv)
    if args.speed:
        return speed(args.speed)
    if args.bias:
        return bias()

    import napari_dan
    from napari_dan.errors import DanError
    from napari_dan.imaging.spots import measure_psf
    from napari_dan.model.kernels import kernel_stats

    print(f"napari_dan from {Path(napari_dan.__file__).parent}", file=sys.stderr)
    t0 = time.time()
    density = 1.0 / args.spacing**2
    rows = []
    print("| scale | PSF (HR px) | photons | PSF found | median abs error (signed) | spots used | bound |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for scale in args.scales:
        for fw in mb.FWHMS:
            psf = mb.psf_for(fw)
            true = kernel_stats(psf).fwhm
            for photons in (1000.0, 200.0, 50.0):
                errs, used, why, bound = [], [], [], None
                for seed in range(args.seeds):
                    rng = np.random.default_rng(1000 * scale + 10 * seed + int(fw))
                    spec, beads = ib.bead_field(rng, args.size, density)
                    lr, _ = mb.observe(spec, psf, scale, photons, rng)
                    if seed == 0 and not args.no_bound:
                        bound, _ = ib.beads_unknown_bound(beads, fw, scale, photons, args.size)
                    try:
                        m = measure_psf(lr)
                    except DanError as e:
                        why.append(str(e).split(";")[0])
                        continue
                    errs.append(kernel_stats(m.kernel(scale, 81)).fwhm / true - 1)
                    used.append(m.n_spots)
                row = {"scale": scale, "fwhm": fw, "true_fwhm": true, "photons": photons,
                       "found": len(errs), "draws": args.seeds, "errors": errs, "spots": used,
                       "failures": why, "bound": bound}
                rows.append(row)
                med = (f"{100 * np.median(np.abs(errs)):.1f}% ({100 * np.median(errs):+.1f}%)"
                       if errs else "-")
                sp = f"{np.median(used):.0f}" if used else "-"
                bd = f"{100 * bound:.1f}%" if bound is not None else "-"
                print(f"| x{scale} | {fw:g} | {photons:g} | {len(errs)}/{args.seeds} | {med} | {sp} "
                      f"| {bd} |", flush=True)
    print(f"({time.time() - t0:.0f} s)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"command": "python benchmarks/spots_noise.py " + " ".join(
            argv if argv is not None else sys.argv[1:]), "package": str(Path(napari_dan.__file__).parent),
            "rows": rows}, indent=1))
    return 0


def _gaussian_field(spec, fwhm, scale, photons, rng, shot: bool = True):
    """Counts of a field through a Gaussian PSF: Poisson photons plus 1.5 e- read noise, offset
    100; ``shot=False``: Gaussian noise of the background's level everywhere instead (no shot
    noise of the spots' own light)."""
    from napari_dan.imaging.camera import bin_pixels
    from napari_dan.imaging.degradations import blur
    from napari_dan.imaging.psf import gaussian_psf

    lam = bin_pixels(blur(spec, gaussian_psf(41, fwhm)), scale) * photons
    if not shot:
        level = float(np.median(lam))
        return lam + rng.normal(0, np.sqrt(level + 1.5**2), lam.shape) + 100
    return rng.poisson(lam) + rng.normal(0, 1.5, lam.shape) + 100


def bias() -> int:
    import math

    from scipy import ndimage as ndi

    from napari_dan.errors import DanError
    from napari_dan.imaging import spots
    from napari_dan.imaging.specimens import beads
    from napari_dan.model.kernels import FWHM_PER_SIGMA, kernel_stats

    print("(a) joint fit at the true bead positions, 5 px Gaussian PSF, x2, 6 fields: FWHM error "
          "mean +- sd")
    for photons in (200.0, 2000.0):
        res = {False: [], True: []}
        for seed in range(6):
            rng = np.random.default_rng(seed)
            spec, (ys, xs, _, _) = ib.bead_field(rng, 512, 1 / 3000)
            img = _gaussian_field(spec, 5.0, 2, photons, rng)
            sig = img - ndi.median_filter(img, 15)
            half = int(round(1.5 * 5.0 / 2))
            w = 2 * half + 1
            ly, lx = (ys - 0.5) / 2, (xs - 0.5) / 2  # bead centres on the LR grid
            crops, starts = [], []
            for y, x in zip(ly, lx, strict=True):
                d = np.hypot(ly - y, lx - x)
                iy, ix = int(round(y)), int(round(x))
                if (np.sort(d)[1] < 1.6 * w or iy - half < 0 or ix - half < 0
                        or iy + half >= sig.shape[0] or ix + half >= sig.shape[1]):
                    continue
                c = sig[iy - half:iy + half + 1, ix - half:ix + half + 1]
                crops.append(c)
                starts.append((c.max(), half + y - iy, half + x - ix, 0.0))
            noise = spots._noise_sigma(img)
            for fixed in (False, True):
                cov, _, _ = spots._joint_fit(np.array(crops), np.array(starts),
                                             5.0 / FWHM_PER_SIGMA / 2, noise, fix_centres=fixed)
                smaj, smin, _ = spots._principal(*cov)
                opt = math.sqrt(math.sqrt((smaj**2 - 1 / 12) * (smin**2 - 1 / 12)))
                res[fixed].append(opt * FWHM_PER_SIGMA * 2 / 5.0 - 1)
        for fixed, e in res.items():
            print(f"  {photons:g} photons, centres {'given' if fixed else 'free'}: "
                  f"{100 * np.mean(e):+.1f}% +- {100 * np.std(e):.1f}% ({len(crops)} spots in the "
                  "last field)", flush=True)
    print("(b) measure_psf with min_snr=0, Gaussian PSFs, beads 1 per 3,000 HR px on 512 x 512 HR "
          "px, 6 fields: FWHM error mean +- sd (the fit's own standard error), spots' median "
          "signal-to-noise, seconds")
    for fw, photons, scale, shot in ((5.0, 200.0, 2, True), (5.0, 700.0, 2, True),
                                     (5.0, 2000.0, 2, True), (7.0, 1000.0, 2, True),
                                     (6.0, 1000.0, 4, True), (6.0, 5000.0, 4, True),
                                     (5.0, 200.0, 2, False)):
        errs, snrs, secs, ses, fails = [], [], [], [], 0
        for seed in range(6):
            rng = np.random.default_rng(seed)
            spec = beads((512, 512), 1 / 3000, rng)
            img = _gaussian_field(spec / spec.max() + 0.02, fw, scale, photons, rng, shot)
            img = np.clip(np.round(img), 0, 65535).astype(np.uint16)
            t = time.perf_counter()
            try:
                m = spots.measure_psf(img, min_snr=0)
            except DanError:
                fails += 1
                continue
            secs.append(time.perf_counter() - t)
            errs.append(kernel_stats(m.kernel(scale, 41)).fwhm / fw - 1)
            snrs.append(m.spot_snr)
            ses.append(m.fwhm_rel_error)
        what = "" if shot else " (Gaussian noise of the background's level, no shot noise)"
        print(f"  x{scale}, {fw:g} px, {photons:g} photons{what}: {100 * np.mean(errs):+.1f}% +- "
              f"{100 * np.std(errs):.1f}% (standard error reported: median "
              f"{100 * np.median(ses):.1f}%), signal-to-noise {min(snrs):.1f}-{max(snrs):.1f}, "
              f"{min(secs):.1f}-{max(secs):.1f} s" + (f", {fails} refused anyway" if fails else ""),
              flush=True)
    return 0


def speed(side: int) -> int:
    import napari_dan
    from napari_dan.imaging.camera import bin_pixels
    from napari_dan.imaging.degradations import blur
    from napari_dan.imaging.psf import gaussian_psf
    from napari_dan.imaging.specimens import beads
    from napari_dan.imaging.spots import measure_psf
    from napari_dan.model.kernels import kernel_stats

    rng = np.random.default_rng(5)
    spec = beads((2 * side, 2 * side), 1 / 3000, rng)
    lam = bin_pixels(blur(spec / spec.max() + 0.02, gaussian_psf(41, 5.0)), 2) * 5000
    img = np.clip(np.round(rng.poisson(lam) + rng.normal(0, 1.5, lam.shape) + 100), 0,
                  65535).astype(np.uint16)
    t = time.perf_counter()
    m = measure_psf(img)
    dt = time.perf_counter() - t
    print(f"{Path(napari_dan.__file__).parent}: {img.shape}, {dt:.1f} s, {m.n_spots} spots of "
          f"{m.n_candidates}, FWHM {kernel_stats(m.kernel(2, 41)).fwhm:.2f} px (true 5.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
