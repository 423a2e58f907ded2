"""Does the blind kernel follow a PSF's shape (elongation and its direction), not only its width?

    env OMP_NUM_THREADS=1 python benchmarks/kernel_shape.py --model dan-x4-fluo dan-x2-fluo \
        [--json FILE]

A real PSF is rarely round: astigmatism, a tilted coverslip or a confocal's scan make it
longer one way (the real bead stack in ../shared is about 1.35 x longer along y in focus).
For each model, two sets of fields:

* ``synthetic``: the microscopy benchmark's bead and filament specimens (benchmarks/
  microscopy.py, its seeds) through elliptical Gaussian PSFs of geometric-mean FWHM 4 and 7 HR
  px, stretched 1.0, 1.3 and 1.5 (major / minor FWHM) along 0 and 60 degrees, camera pixels
  (the model's scale), no noise and 1,000 photons; the blind kernel's anisotropy (Gaussian fit,
  major / minor) and the angle of its long axis against the PSF's;
* ``real``: the real bead stack (../shared/data/microscopy/Bead_Image1_crop.tif), its five
  planes nearest focus, binned to the model's scale (x2: 2 x 2, x4: 4 x 4), per plane: the blind
  kernel's anisotropy beside that of the PSF measured from the plane's isolated spots
  (:func:`napari_dan.imaging.spots.measure_psf`, what ``kernel="spots"`` uses), the
  reference.

Reading: a kernel that follows the shape has an anisotropy near the PSF's and its angle within a
few degrees of the PSF's (angles are taken modulo 180; the summary compares angles only for
kernels at least 1.05 x longer one way, as a round kernel has no direction).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import microscopy as mb  # noqa: E402 - the benchmark's specimens and camera

import napari_dan  # noqa: E402
from napari_dan.imaging.camera import bin_pixels  # noqa: E402
from napari_dan.imaging.psf import gaussian_psf  # noqa: E402
from napari_dan.imaging.spots import measure_psf  # noqa: E402
from napari_dan.model.kernels import kernel_stats  # noqa: E402

STRETCHES = (1.0, 1.3, 1.5)
ANGLES = (0.0, 60.0)
WIDTHS = (4.0, 7.0)
NOISES = ("none", "1000 ph")
#: a kernel this much longer one way than the other has a direction to compare
ELONGATED = 1.05


def angle_gap(a: float, b: float) -> float:
    """Difference of two axis directions in degrees, modulo 180 (0-90)."""
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def synthetic(model, log) -> list[dict]:
    specs = mb.specimens(True)  # beads, filaments
    rng = np.random.default_rng(5)
    rows = []
    for name, spec in specs.items():
        for fw in WIDTHS:
            for stretch in STRETCHES:
                for ang in ANGLES if stretch > 1 else ANGLES[:1]:
                    s = stretch ** 0.5
                    psf = gaussian_psf(31, fw * s, fw / s, ang)
                    true = kernel_stats(psf)
                    for noise in NOISES:
                        lr, _ = mb.observe(spec, psf, model.scale, mb.NOISE[noise], rng)
                        r = napari_dan.super_resolve(lr, model, precision="fp32")
                        k = kernel_stats(r.kernel)
                        row = {"image": name, "fwhm": fw, "stretch": stretch, "angle": ang,
                               "noise": noise, "true_fwhm": true.fwhm,
                               "true_anisotropy": true.anisotropy, "true_angle": true.angle,
                               "blind_fwhm": k.fwhm, "blind_anisotropy": k.anisotropy,
                               "blind_angle": k.angle,
                               "angle_error": angle_gap(k.angle, true.angle)}
                        rows.append(row)
                        log(f"{model.name} {name} {fw:g} px x{stretch:g} at {ang:g} deg, "
                            f"{noise}: blind {k.fwhm:.2f} px, anisotropy {k.anisotropy:.2f} "
                            f"(true {true.anisotropy:.2f}), angle {k.angle:.0f} (true "
                            f"{true.angle:.0f})")
    return rows


def real(model, log) -> list[dict]:
    import tifffile

    path = mb.MICRO / "Bead_Image1_crop.tif"
    if not path.exists():
        log(f"(no {path}: the real rows are skipped)")
        return []
    stack = tifffile.imread(path).astype(np.float64)
    focus = int(np.argmax(stack.reshape(len(stack), -1).max(1)))
    s = model.scale
    rows = []
    for z in range(focus - 2, focus + 3):
        lr = bin_pixels(stack[z], s).astype(np.float32)
        blind = napari_dan.super_resolve(lr, model, precision="fp32").kernel_stats
        spots = kernel_stats(measure_psf(lr).kernel(s, 81))  # what kernel="spots" uses
        row = {"plane": z, "dz": z - focus, "binning": s,
               "blind_fwhm": blind.fwhm, "blind_anisotropy": blind.anisotropy,
               "blind_angle": blind.angle, "spots_fwhm": spots.fwhm,
               "spots_anisotropy": spots.anisotropy, "spots_angle": spots.angle,
               "angle_error": angle_gap(blind.angle, spots.angle)}
        rows.append(row)
        log(f"{model.name} real beads plane {z} (dz {z - focus:+d}), binned {s}: blind "
            f"{blind.fwhm:.2f} px, anisotropy {blind.anisotropy:.2f} at {blind.angle:.0f} deg; "
            f"spots {spots.fwhm:.2f} px, {spots.anisotropy:.2f} at {spots.angle:.0f} deg")
    return rows


def summary(name: str, syn: list[dict], rl: list[dict]) -> dict:
    out = {"model": name}
    for st in STRETCHES:
        v = [r for r in syn if r["stretch"] == st]
        out[f"synthetic_anisotropy_{st:g}"] = float(np.median([r["blind_anisotropy"] for r in v]))
        if st > 1:  # the direction, where the kernel has one
            d = [r["angle_error"] for r in v if r["blind_anisotropy"] >= ELONGATED]
            out[f"synthetic_elongated_{st:g}"] = f"{len(d)} of {len(v)}"
            out[f"synthetic_angle_error_{st:g}"] = float(np.median(d)) if d else None
    for img in sorted({r["image"] for r in syn}):  # spots and lines tell the shape differently
        for st in (STRETCHES[0], STRETCHES[-1]):
            v = [r for r in syn if r["image"] == img and r["stretch"] == st]
            out[f"{img}_anisotropy_{st:g}"] = float(np.median([r["blind_anisotropy"] for r in v]))
        d = [r["angle_error"] for r in syn if r["image"] == img and r["stretch"] > 1
             and r["blind_anisotropy"] >= ELONGATED]
        out[f"{img}_angle_error"] = float(np.median(d)) if d else None
    out["synthetic_fwhm_error"] = float(np.median(
        [abs(r["blind_fwhm"] - r["true_fwhm"]) / r["true_fwhm"] for r in syn]))
    if rl:
        out["real_blind_anisotropy"] = float(np.median([r["blind_anisotropy"] for r in rl]))
        out["real_spots_anisotropy"] = float(np.median([r["spots_anisotropy"] for r in rl]))
        d = [r["angle_error"] for r in rl if r["blind_anisotropy"] >= ELONGATED]
        out["real_elongated"] = f"{len(d)} of {len(rl)}"
        out["real_angle_error"] = float(np.median(d)) if d else None
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", nargs="+", default=["dan-x4-fluo", "dan-x2-fluo"],
                   help="bundled names or checkpoint files")
    p.add_argument("--json")
    a = p.parse_args(argv)
    results = []
    for m in a.model:
        model = napari_dan.load_model(m)
        syn, rl = synthetic(model, print), real(model, print)
        sm = summary(m, syn, rl)
        print("summary: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in sm.items()), flush=True)
        results.append({"model": m, "summary": sm, "synthetic": syn, "real": rl})
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"command": "env OMP_NUM_THREADS=1 python benchmarks/kernel_shape.py "
                       + " ".join(argv), "results": results}, fh, indent=1)


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")  # the engine's notes on noisy fields, said once per field
    main(sys.argv[1:])
