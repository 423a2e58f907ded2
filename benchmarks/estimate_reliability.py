"""How the blind PSF estimate's error depends on the field's signal-to-noise ratio.

Random fluorescence fields through the microscopy benchmark's forward model
(``benchmarks/microscopy.py``: a specimen on a 256 x 256 HR grid, a widefield PSF, camera
binning, Poisson noise plus 1.5 e- read noise, offset 100): specimen kind, density, PSF FWHM
(2-10 HR px, uniform) and photons (30-30,000 log-uniform; one field in five noise-free) drawn
at random, with seeds the benchmark does not use. Per model: the blind estimate's relative
FWHM error against :func:`napari_dan.imaging.camera.signal_to_noise` of the LR field (what the
engine reports as ``metadata["kernel_fwhm"]["snr"]``), by SNR band.

    env OMP_NUM_THREADS=2 python benchmarks/estimate_reliability.py dan-x2-fluo dan-x4-fluo \\
        [--fields 120] [--json docs/estimate-reliability.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from microscopy import SIZE, observe, psf_for  # noqa: E402

BANDS = (0.0, 10.0, 20.0, 50.0, 200.0, math.inf)


def fields(n: int, seed: int = 31):
    """(kind, density, fwhm, photons or None, specimen) for ``n`` random fields."""
    from napari_dan.imaging.specimens import KINDS, random_specimen

    rng = np.random.default_rng(seed)
    for _ in range(n):
        kind = KINDS[rng.integers(len(KINDS))]
        spec, info = random_specimen((SIZE, SIZE), rng, kind=kind, haze=False)
        fwhm = float(rng.uniform(2.0, 10.0))
        photons = None if rng.random() < 0.2 else float(math.exp(rng.uniform(math.log(30),
                                                                              math.log(30000))))
        yield kind, info["density"], fwhm, photons, spec + 0.02


def run(model, n: int) -> list[dict]:
    from napari_dan import super_resolve
    from napari_dan.imaging.camera import signal_to_noise
    from napari_dan.model.kernels import kernel_stats

    rng = np.random.default_rng(5)
    rows = []
    for kind, dens, fw, photons, spec in fields(n):
        psf = psf_for(fw)
        true = kernel_stats(psf).fwhm
        lr, _ = observe(spec, psf, model.scale, photons, rng)
        r = super_resolve(lr, model, precision="fp32")
        est = kernel_stats(r.kernel).fwhm
        rows.append({"kind": kind, "density": dens, "true_fwhm": true, "photons": photons,
                     "snr": signal_to_noise(lr),
                     "blind_fwhm": est, "fwhm_error": abs(est - true) / true})
    return rows


def bands(rows: list[dict]) -> list[dict]:
    out = []
    for lo, hi in zip(BANDS[:-1], BANDS[1:], strict=True):
        e = [r["fwhm_error"] for r in rows if lo <= r["snr"] < hi]
        out.append({"snr": [lo, hi], "fields": len(e),
                    "median": float(np.median(e)) if e else None,
                    "within_10pct": float(np.mean(np.array(e) <= 0.1)) if e else None})
    return out


def _median(v: np.ndarray) -> float:
    return float(np.median(v)) if v.size else float("nan")


def split(rows: list[dict]) -> list[dict]:
    """Below and at/above the engine's LOW_SNR: the median error, the share within 10%, and how
    far the estimates are pulled toward the middle of the range: the slope of log(estimate)
    against log(true FWHM) (1: none, 0: one answer for every PSF) and the median estimate /
    true ratio of the wide (> 7 px) and narrow (< 4 px) PSFs."""
    from napari_dan.engine.result import LOW_SNR

    out = []
    for side, sel in ((f"< {LOW_SNR:g}", lambda r: r["snr"] < LOW_SNR),
                      (f">= {LOW_SNR:g}", lambda r: r["snr"] >= LOW_SNR)):
        rs = [r for r in rows if sel(r)]
        t = np.array([r["true_fwhm"] for r in rs])
        e = np.array([r["blind_fwhm"] for r in rs])
        err = np.array([r["fwhm_error"] for r in rs])
        if not rs:
            continue
        out.append({"side": side, "fields": len(rs), "median": float(np.median(err)),
                    "within_10pct": float(np.mean(err <= 0.1)),
                    "slope": float(np.polyfit(np.log(t), np.log(e), 1)[0]) if len(rs) > 2
                    else float("nan"),
                    "wide_ratio": _median(e[t > 7] / t[t > 7]),
                    "narrow_ratio": _median(e[t < 4] / t[t < 4])})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--fields", type=int, default=120)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    from napari_dan import load_model

    report = {"command": "python benchmarks/estimate_reliability.py " + " ".join(
        sys.argv[1:] if argv is None else argv), "results": []}
    print("| model | SNR band | fields | median FWHM error | within 10% | toward the middle |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in a.models:
        m = load_model(name)
        rows = run(m, a.fields)
        b = bands(rows)
        for x in b:
            lo, hi = x["snr"]
            band = f"{lo:g}-{hi:g}" if math.isfinite(hi) else f">= {lo:g}"
            med = "-" if x["median"] is None else f"{100 * x['median']:.1f}%"
            w = "-" if x["within_10pct"] is None else f"{100 * x['within_10pct']:.0f}%"
            print(f"| {name} | {band} | {x['fields']} | {med} | {w} | |", flush=True)
        for side in split(rows):
            print(f"| {name} | {side['side']} | {side['fields']} | {100 * side['median']:.1f}% | "
                  f"{100 * side['within_10pct']:.0f}% | slope {side['slope']:.2f}, PSFs > 7 px "
                  f"read x{side['wide_ratio']:.2f}, < 4 px x{side['narrow_ratio']:.2f} |",
                  flush=True)
        report["results"].append({"model": name, "split": split(rows), "bands": [
            {**x, "snr": [x["snr"][0], None if not math.isfinite(x["snr"][1]) else x["snr"][1]]}
            for x in b], "rows": rows})
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
