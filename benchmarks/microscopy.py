"""Microscopy benchmark on the fluorescence microscope model (:mod:`napari_dan.imaging`).

Every field goes through the forward model the microscopy models are judged by
(``napari_dan.imaging.microscope``): a specimen on the HR grid, blurred by a widefield PSF
(Gibson-Lanni via psfmodels; Gaussian without it) of FWHM 2.5, 5 or 8.5 HR pixels, integrated over
camera pixels ``scale`` x ``scale`` HR pixels, Poisson noise at 1,000 / 200 / 50 photons at the
brightest structure of the specimen before the optics (or none; the recorded peak is lower, the
more so the smaller the structure and the wider the PSF: per 1,000 photons the beads' brightest
pixel records 44-126 photons over a background of 20, the filaments' 197-469), read noise 1.5 e-,
offset 100, 16-bit counts. The target is the
specimen seen through a Gaussian of FWHM 1.5 HR px (the HR grid's resolution limit).

Specimens: synthetic beads, filaments and nuclei (``napari_dan.imaging.specimens``, seeded), and
three real images of ../shared/data/microscopy used as specimens (TIRF microtubules, DSB2018
nuclei, the line grid; none of them is in any training set), 256 x 256 HR pixels each.

Methods, scored by PSNR (peak = the target's range) on the counts, border of 2 * scale px:

* bicubic: torch bicubic upsampling of the LR counts;
* Richardson-Lucy with the true PSF and the camera model (blur, bin; offset known), started from
  bicubic, at 5 / 10 / 20 / 40 / 80 iterations: the best count per noise level on these very
  images is reported (an oracle choice that favours RL);
* DAN blind (``napari_dan.super_resolve`` on the 16-bit counts, global kernel) and DAN with the
  true PSF (``kernel=psf``), and the blind kernel's FWHM error against the true PSF's (both by the
  2D Gaussian fit of ``kernel_stats``).

Real beads: ../shared/data/microscopy/Bead_Image1_crop.tif (41-plane confocal z-stack) binned
``scale`` x ``scale``; per plane DAN's blind FWHM (per-plane kernel mode) and the PSF measured
from its isolated spots, on the file's pixel grid (= the output grid), against the Gaussian-fit
FWHM of psf_avg_45cube.tif (the PSF averaged from those beads) plane by plane.

Run (writes the fluorescence section of docs/quality.md and a JSON file)::

    env OMP_NUM_THREADS=2 python benchmarks/microscopy.py --model dan-x2-fluo dan-x4-fluo \
        --json docs/quality-fluorescence.json

Quick check (stdout): ``--quick`` (beads and filaments, one PSF, two noise levels).
``--kernel-views 1`` runs the blind estimates on the patches alone, as before session 14 (the
default, "auto", averages 4 mirror images for napari-dan's models).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DOC, ROOT, command_line, machine, publish  # noqa: E402

MICRO = ROOT.parent / "shared" / "data" / "microscopy"
FWHMS = (2.5, 5.0, 8.5)
NOISE = {"none": None, "1000 ph": 1000.0, "200 ph": 200.0, "50 ph": 50.0}
RL_ITERATIONS = (5, 10, 20, 40, 80)
SIZE = 256
VIEWS = ["auto"]  # --kernel-views: the blind runs' SROptions.kernel_views
OFFSET = 100.0
REAL = {"microtubules (real)": "microtubules_tirf_widefield.tif",
        "nuclei (real)": "nuclei2d_dsb2018.tif",
        "line grid (real)": "DeconvolutionSampleVerticalGrid1AU-crop.tif"}


def specimens(quick: bool) -> dict[str, np.ndarray]:
    """Name -> HR specimen (float64, peak 1)."""
    import tifffile

    from napari_dan.imaging.specimens import random_specimen

    rng = np.random.default_rng(2026)
    out = {}
    for kind, dens in (("beads", 1 / 800), ("filaments", 1 / 300), ("nuclei", 1 / 60)):
        img, _ = random_specimen((SIZE, SIZE), rng, kind=kind, density=dens, haze=False)
        out[kind] = img + 0.02  # a faint background, as on a real coverslip
    if quick:
        return {k: out[k] for k in ("beads", "filaments")}
    for name, file in REAL.items():
        a = tifffile.imread(MICRO / file).astype(np.float64)
        while a.ndim > 2:
            a = a.max(0)
        y0, x0 = (a.shape[0] - SIZE) // 2, (a.shape[1] - SIZE) // 2
        a = a[max(y0, 0):max(y0, 0) + SIZE, max(x0, 0):max(x0, 0) + SIZE]
        a = a[:a.shape[0] // 4 * 4, :a.shape[1] // 4 * 4]  # whole LR pixels at x2 and x4
        lo, hi = np.percentile(a, [1, 99.9])
        out[name] = np.clip((a - lo) / (hi - lo), 0, None)
    return out


def psf_for(fwhm: float, size: int = 31) -> np.ndarray:
    """A widefield PSF (NA 1.4, 520 nm) with the given in-focus FWHM in HR pixels."""
    from napari_dan.imaging.psf import airy_fwhm, gaussian_psf, have_psfmodels, widefield_psf

    if not have_psfmodels():
        return gaussian_psf(size, fwhm)
    return widefield_psf(size, airy_fwhm(1.4, 0.52) / fwhm, 1.4, 0.52)


def observe(spec, psf, scale, photons, rng):
    """(LR uint16 counts, HR target counts) through the microscope model."""
    from napari_dan.imaging.camera import bin_pixels
    from napari_dan.imaging.degradations import blur
    from napari_dan.imaging.microscope import target_kernel

    peak = photons or 10000.0
    optical = blur(spec, psf)
    lam = bin_pixels(optical, scale) * peak
    if photons:
        e = rng.poisson(lam) + rng.normal(0, 1.5, lam.shape)
    else:
        e = lam
    lr = np.clip(np.round(e + OFFSET), 0, 65535).astype(np.uint16)
    hr = blur(spec, target_kernel()) * peak + OFFSET
    return lr, hr


def psnr(x, ref, border):
    x, ref = x[border:-border, border:-border], ref[border:-border, border:-border]
    rng_ = float(ref.max() - ref.min())
    return float(10 * np.log10(rng_ * rng_ / max(float(np.mean((x - ref) ** 2)), 1e-12)))


def bicubic(lr, scale):
    import torch

    t = torch.from_numpy(lr.astype(np.float64))[None, None]
    return torch.nn.functional.interpolate(t, scale_factor=scale, mode="bicubic",
                                           align_corners=False)[0, 0].numpy()


def richardson_lucy(lr, psf, scale, iterations):
    """RL for blur + bin with a known offset, from bicubic; yields (n, estimate) at each count."""
    from scipy.signal import fftconvolve

    from napari_dan.imaging.camera import bin_pixels

    y = np.clip(lr.astype(np.float64) - OFFSET, 0, None)
    x = np.clip(bicubic(y, scale), 1e-6, None)
    flip = psf[::-1, ::-1]
    r = psf.shape[0] // 2

    def conv(a, k):
        return fftconvolve(np.pad(a, r, mode="reflect"), k, mode="valid")

    def up(a):
        return np.kron(a, np.ones((scale, scale))) / (scale * scale)

    norm = conv(up(np.ones_like(y)), flip)
    done = 0
    for n in iterations:
        for _ in range(n - done):
            est = bin_pixels(conv(x, psf), scale)
            x = x * conv(up(y / np.maximum(est, 1e-9)), flip) / np.maximum(norm, 1e-12)
        done = n
        yield n, x + OFFSET


SYNTHETIC = ("beads", "filaments", "nuclei")


def synthetic_fields(scale: int):
    """(specimen, fwhm, noise, true FWHM, psf, LR, HR) of the benchmark's 36 synthetic fields
    at ``scale``, with :func:`run_model`'s seed and draw order (the real images' noise is drawn
    all the same, so every field gets the noise it gets there)."""
    from napari_dan.model.kernels import kernel_stats

    rng = np.random.default_rng(7)
    for name, spec in specimens(False).items():
        for fw in FWHMS:
            psf = psf_for(fw)
            true = kernel_stats(psf).fwhm
            for noise in NOISE:
                lr, hr = observe(spec, psf, scale, NOISE[noise], rng)
                if name in SYNTHETIC:
                    yield name, fw, noise, true, psf, lr, hr


def run_model(model, specs, fwhms, noises, log):
    from napari_dan import super_resolve
    from napari_dan.model.kernels import fit_kernel_size, kernel_stats

    s = model.scale
    rng = np.random.default_rng(7)
    rows = []
    for name, spec in specs.items():
        for fw in fwhms:
            psf = psf_for(fw)
            k21, _ = fit_kernel_size(psf, model.kernel_size)
            true_fwhm = kernel_stats(psf).fwhm
            for noise in noises:
                lr, hr = observe(spec, psf, s, NOISE[noise], rng)
                b = 2 * s
                row = {"image": name, "fwhm": fw, "true_fwhm": true_fwhm, "noise": noise,
                       "bicubic": psnr(bicubic(lr, s), hr, b)}
                row["rl"] = {n: psnr(x, hr, b) for n, x in richardson_lucy(lr, psf, s, RL_ITERATIONS)}
                t0 = time.perf_counter()
                r = super_resolve(lr, model, precision="fp32", kernel_views=VIEWS[0])
                row["dan_blind"] = psnr(r.image.astype(np.float64), hr, b)
                row["blind_fwhm"] = kernel_stats(r.kernel).fwhm
                row["fwhm_error"] = abs(row["blind_fwhm"] - true_fwhm) / true_fwhm
                row["consistency"] = r.metadata["consistency"]["relative_residual"]
                row["snr"] = r.metadata["kernel_fwhm"].get("snr_median")
                r2 = super_resolve(lr, model, kernel=k21, precision="fp32")
                row["dan_true"] = psnr(r2.image.astype(np.float64), hr, b)
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
                log(f"{model.name} {name} fwhm {fw} {noise}: bicubic {row['bicubic']:.2f} "
                    f"RL {max(row['rl'].values()):.2f} blind {row['dan_blind']:.2f} "
                    f"true {row['dan_true']:.2f} FWHM {row['blind_fwhm']:.2f}/{true_fwhm:.2f}")
    return rows


def real_beads(model, log):
    """Per plane: DAN's blind FWHM, the spots' FWHM (output grid) and the averaged PSF's FWHM."""
    import tifffile

    from napari_dan import super_resolve
    from napari_dan.imaging.camera import bin_pixels, signal_to_noise
    from napari_dan.imaging.spots import measure_psf
    from napari_dan.model.kernels import fit_gaussian_2d, kernel_stats

    s = model.scale
    stack = tifffile.imread(MICRO / "Bead_Image1_crop.tif").astype(np.float64)
    avg = tifffile.imread(MICRO / "psf_avg_45cube.tif").astype(np.float64)
    lr = np.stack([bin_pixels(p, s) for p in stack]).astype(np.float32)
    r = super_resolve(lr, model, kernel_mode="per-plane", precision="fp32",
                      kernel_views=VIEWS[0])
    rows = []
    # planes are matched by their distance from focus: the stack's focus is its brightest
    # plane, the averaged PSF's its brightest plane
    focus = int(np.argmax(stack.reshape(len(stack), -1).max(1)))
    avg_focus = int(np.argmax(avg.reshape(len(avg), -1).max(1)))
    for z in range(len(stack)):
        dan = kernel_stats(r.kernels[z]).fwhm
        try:
            sp = measure_psf(lr[z])
            spots = kernel_stats(sp.kernel(s, 81)).fwhm
        except Exception:  # noqa: BLE001 - too few spots out of focus
            spots = None
        za = z - focus + avg_focus
        ref = None
        if 0 <= za < avg.shape[0]:
            f = fit_gaussian_2d(avg[za] / avg[za].max(), offset=True)
            ref = f.fwhm if f is not None and f.fwhm < 40 else None
        rows.append({"plane": z, "dz": z - focus, "dan": dan, "spots": spots, "psf_avg": ref,
                     "snr": signal_to_noise(lr[z])})
    infocus = [rw for rw in rows if abs(rw["dz"]) <= 1 and rw["psf_avg"]]
    log(f"{model.name} real beads, in focus: DAN "
        f"{np.mean([rw['dan'] for rw in infocus]):.2f} px, averaged PSF "
        f"{np.mean([rw['psf_avg'] for rw in infocus]):.2f} px")
    return rows


DENSITIES = (1 / 3000, 1 / 1000, 1 / 300, 1 / 100, 1 / 30, 1 / 10)


def density_sweep(model, log, fwhm=4.71):
    """Blind FWHM on beads of one PSF (Gaussian, FWHM ``fwhm`` HR px; 30,000 photons, offset
    100) as only their density changes (beads per HR pixel)."""
    from napari_dan import super_resolve
    from napari_dan.imaging.psf import gaussian_psf
    from napari_dan.imaging.specimens import beads
    from napari_dan.model.kernels import kernel_stats

    out = []
    for d in DENSITIES:
        rng = np.random.default_rng(11)
        spec = beads((SIZE, SIZE), d, rng) + 0.02
        lr, _ = observe(spec, gaussian_psf(31, fwhm), model.scale, 30000.0, rng)
        r = super_resolve(lr, model, precision="fp32", kernel_views=VIEWS[0])
        out.append({"density": d, "fwhm": kernel_stats(r.kernel).fwhm})
    log(f"{model.name} density sweep (true {fwhm}): "
        + ", ".join(f"{o['fwhm']:.2f}" for o in out))
    return {"true_fwhm": fwhm, "rows": out}


def summarise(rows):
    best_rl = {}
    for noise in {r["noise"] for r in rows}:
        rs = [r for r in rows if r["noise"] == noise]
        best_rl[noise] = max(RL_ITERATIONS, key=lambda n: np.mean([r["rl"][n] for r in rs]))
    for r in rows:
        r["rl_best"] = r["rl"][best_rl[r["noise"]]]
    return best_rl


def snr_split(rows) -> str | None:
    """The synthetic specimens' median FWHM error on fields at or above the engine's LOW_SNR
    (the signal-to-noise below which it warns that the blind estimate is unreliable) and below."""
    from napari_dan.engine.result import LOW_SNR

    syn = [r for r in rows if r["image"] not in REAL and r.get("snr") is not None]
    hi = [r["fwhm_error"] for r in syn if r["snr"] >= LOW_SNR]
    lo = [r["fwhm_error"] for r in syn if r["snr"] < LOW_SNR]
    if not syn:
        return None
    med = lambda v: f"{100 * np.median(v):.1f}%" if v else "-"  # noqa: E731
    return (f"Synthetic specimens by the field's signal-to-noise ratio (the engine warns below "
            f"{LOW_SNR:g}): median blind FWHM error {med(hi)} on the {len(hi)} fields at or "
            f"above it, {med(lo)} on the {len(lo)} below.")


def markdown(results, seconds, quick):
    lines = ["## Fluorescence microscopy", "",
             f"Fluorescence microscope model (benchmarks/microscopy.py), "
             f"{datetime.date.today().isoformat()}, {machine()}, {seconds / 60:.0f} min"
             f"{' (quick)' if quick else ''}.",
             f"Command: `{command_line()}`", "",
             "PSNR (dB) against the HR target, mean over the PSF widths (FWHM "
             + ", ".join(f"{f:g}" for f in FWHMS) + " HR px); RL at its best iteration count "
             "per noise level; FWHM error = |blind - true| / true, median.", ""]
    for res in results:
        rows, name = res["rows"], res["model"]
        lines += [f"**{name}** (x{res['scale']}; RL iterations chosen: "
                  + ", ".join(f"{k}: {v}" for k, v in res["rl_iterations"].items()) + ")", "",
                  "| image | noise | bicubic | RL (true PSF) | DAN blind | DAN true PSF | "
                  "blind - bicubic | FWHM error | consistency |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        images = list(dict.fromkeys(r["image"] for r in rows))
        noises = list(dict.fromkeys(r["noise"] for r in rows))
        for im in images:
            for nz in noises:
                rs = [r for r in rows if r["image"] == im and r["noise"] == nz]
                m = {k: np.mean([r[k] for r in rs]) for k in
                     ("bicubic", "rl_best", "dan_blind", "dan_true", "consistency")}
                fe = np.median([r["fwhm_error"] for r in rs])
                lines.append(f"| {im} | {nz} | {m['bicubic']:.2f} | {m['rl_best']:.2f} | "
                             f"{m['dan_blind']:.2f} | {m['dan_true']:.2f} | "
                             f"{m['dan_blind'] - m['bicubic']:+.2f} | {100 * fe:.0f}% | "
                             f"{m['consistency']:.3f} |")
        allm = {k: np.mean([r[k] for r in rows]) for k in ("bicubic", "rl_best", "dan_blind",
                                                            "dan_true")}
        fe = np.median([r["fwhm_error"] for r in rows])
        worst = min(np.mean([r["dan_blind"] - r["bicubic"] for r in rows
                             if r["image"] == im and r["noise"] == nz])
                    for im in images for nz in noises)
        synth = [r["fwhm_error"] for r in rows if r["image"] not in REAL]
        real = [r["fwhm_error"] for r in rows if r["image"] in REAL]
        split = (f" (synthetic specimens {100 * np.median(synth):.1f}%, real images "
                 f"{100 * np.median(real):.1f}%: a real image is already blurred by its own "
                 "microscope, so its LR is blurred by more than the PSF counted as true)"
                 if synth and real else "")
        lines += [f"| **all** | | {allm['bicubic']:.2f} | {allm['rl_best']:.2f} | "
                  f"{allm['dan_blind']:.2f} | {allm['dan_true']:.2f} | "
                  f"{allm['dan_blind'] - allm['bicubic']:+.2f} | {100 * fe:.0f}% | |", "",
                  f"Median blind FWHM error {100 * fe:.1f}%{split}; smallest blind - bicubic "
                  f"over image x noise: {worst:+.2f} dB.", ""]
        by_snr = snr_split(rows)
        if by_snr:
            lines += [by_snr, ""]
        dens = res.get("density")
        if dens:
            lines += [f"Beads of one PSF (Gaussian, FWHM {dens['true_fwhm']} HR px, 30,000 photons) "
                      "at densities from 1 per 3,000 to 1 per 10 HR px: blind FWHM "
                      + ", ".join(f"{o['fwhm']:.2f}" for o in dens["rows"]) + " px.", ""]
        beads = res.get("beads")
        if beads:
            lines += ["Real beads (Bead_Image1_crop binned, per plane; FWHM in px of the file's "
                      "grid; the plane's signal-to-noise ratio):", "",
                      "| dz (planes) | DAN blind | PSF from spots | averaged PSF | signal-to-noise |",
                      "| --- | --- | --- | --- | --- |"]
            for b in beads:
                if abs(b["dz"]) <= 8 and b["dz"] % 2 == 0:
                    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
                    snr = "-" if b.get("snr") is None else f"{b['snr']:.0f}"
                    lines.append(f"| {b['dz']:+d} | {b['dan']:.2f} | {f(b['spots'])} | "
                                 f"{f(b['psf_avg'])} | {snr} |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", nargs="+", default=["dan-x2-fluo", "dan-x4-fluo"],
                   help="bundled model names or checkpoint files")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--output", help=f"markdown file, or - for stdout (default: stdout with "
                   f"--quick, else {DOC.relative_to(ROOT)})")
    p.add_argument("--json")
    p.add_argument("--kernel-views", default="auto", choices=("auto", "1", "4", "8"),
                   help="kernel_views of the blind runs (default auto, as super_resolve)")
    a = p.parse_args(argv)
    VIEWS[0] = a.kernel_views if a.kernel_views == "auto" else int(a.kernel_views)
    from napari_dan import load_model

    t0 = time.perf_counter()
    specs = specimens(a.quick)
    fwhms = FWHMS[1:2] if a.quick else FWHMS
    noises = ["none", "200 ph"] if a.quick else list(NOISE)
    results = []
    for name in a.model:
        model = load_model(name)
        rows = run_model(model, specs, fwhms, noises, lambda m: print(m, file=sys.stderr, flush=True))
        best = summarise(rows)
        # a checkpoint file is labelled by its path, so two versions of one model stay apart
        label = name if name == model.name else f"{model.name} ({name})"
        res = {"model": label, "source": model.source, "scale": model.scale,
               "kernel_views": VIEWS[0],
               "rows": rows, "rl_iterations": best}
        if not a.quick:
            res["beads"] = real_beads(model, lambda m: print(m, file=sys.stderr, flush=True))
            res["density"] = density_sweep(model, lambda m: print(m, file=sys.stderr, flush=True))
        results.append(res)
    md = markdown(results, time.perf_counter() - t0, a.quick)
    output = a.output or ("-" if a.quick else str(DOC))
    publish(md, output, "fluorescence", "benchmarks/microscopy.py", a.json,
            {"command": command_line(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
