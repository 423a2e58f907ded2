"""How much a model invents on the empty background of fluorescence fields, and how it does on
the structures, side by side for several models.

The fields are benchmarks/microscopy.py's beads and filaments (its seeded specimens, widefield
PSF of FWHM 5 HR px, camera binning, Poisson-Gaussian noise, offset 100) at no noise, 1,000 and
200 photons. Background = pixels whose HR target is within 3% of the peak above the coverslip's
level (the specimens' faint 0.02 floor); foreground = the rest. Per field and model: the mean
error on the background (bias), its RMS, the share of background pixels more than 2% of the peak
below the target (dark speckle), and the RMS on the foreground, all in % of the peak. A border
of 2 * scale px is left out, as in the benchmark. On the beads also whether the spots survive:
at each bead of the target (a local maximum, 9 x 9 px, at least 20% of the brightest bead's
height above the floor) the highest output within ``scale`` px, above the floor, over the
target's height: the median of that ratio, and the share of beads under 0.05 (erased; bicubic,
printed first, blurs them but never erases one). With ``--residual``, also whether the
consistency residual map shows the erased beads: per bead field and model, the median of the
residual's maximum over 3 x 3 LR px at the erased beads, at the kept ones and at every pixel.

    env OMP_NUM_THREADS=2 python benchmarks/background_error.py --model OLD.pt dan-x4-fluo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from microscopy import OFFSET, bicubic, observe, psf_for, specimens  # noqa: E402


def spot_heights(sr, hr, floor: float, scale: int, border: int) -> np.ndarray:
    """Per bead of ``hr``: the highest ``sr`` within ``scale`` px of it above ``floor``, over
    the bead's own height above ``floor``."""
    from scipy.ndimage import maximum_filter

    top = hr - floor
    peaks = (hr == maximum_filter(hr, 9)) & (top > 0.2 * top.max())
    peaks[:border] = peaks[-border:] = False
    peaks[:, :border] = peaks[:, -border:] = False
    near = maximum_filter(sr, 2 * scale + 1)
    return (near[peaks] - floor) / top[peaks]


def measure(models, fwhm: float = 5.0, noises=(None, 1000.0, 200.0), seed: int = 5):
    """Rows of (specimen, photons, model name, bias, rms, dark share, foreground rms, median
    spot height ratio, erased share); the last two are None on filaments."""
    from napari_dan import super_resolve
    from napari_dan.model import load_model

    ms = [load_model(m) for m in models]
    scales = {m.scale for m in ms}
    if len(scales) != 1:
        raise SystemExit(f"the models have different scales {sorted(scales)}: compare one scale")
    s = scales.pop()
    specs = specimens(True)
    rng = np.random.default_rng(seed)
    rows = []
    for name in ("beads", "filaments"):
        for ph in noises:
            lr, hr = observe(specs[name], psf_for(fwhm), s, ph, rng)
            peak = ph or 1e4
            floor = OFFSET + 0.02 * peak
            bg = hr < floor + 0.03 * peak
            b = 2 * s
            outs = [("bicubic", bicubic(lr.astype(np.float64), s))]
            outs += [(label, super_resolve(lr, m, precision="fp32").image.astype(np.float64))
                     for label, m in zip(models, ms, strict=True)]
            for label, sr in outs:
                e, g = (sr - hr)[b:-b, b:-b], bg[b:-b, b:-b]
                spots = spot_heights(sr, hr, floor, s, b) if name == "beads" else None
                rows.append((name, ph, label, 100 * e[g].mean() / peak,
                             100 * np.sqrt((e[g] ** 2).mean()) / peak,
                             100 * np.mean(e[g] < -0.02 * peak),
                             100 * np.sqrt((e[~g] ** 2).mean()) / peak,
                             None if spots is None else float(np.median(spots)),
                             None if spots is None else 100 * float(np.mean(spots < 0.05))))
    return rows


def bead_snr(model, fwhm: float = 5.0, noises=(1000.0, 200.0)):
    """(photons, median bead SNR) on :func:`measure`'s bead fields at ``model``'s scale: the
    noiseless LR at each bead's pixel above the background, over sqrt(background + read^2)."""
    from scipy.ndimage import maximum_filter

    from napari_dan.model import load_model

    s = load_model(model).scale
    spec = specimens(True)["beads"]
    lr0, hr0 = observe(spec, psf_for(fwhm), s, None, np.random.default_rng(0))  # no noise drawn
    top = hr0 - (OFFSET + 0.02 * 1e4)
    peaks = (hr0 == maximum_filter(hr0, 9)) & (top > 0.2 * top.max())
    ys, xs = np.nonzero(peaks)
    out = []
    for ph in noises:
        lam = (lr0.astype(np.float64) - OFFSET) * ph / 1e4
        bg = float(np.median(lam))
        out.append((ph, float(np.median((lam[ys // s, xs // s] - bg) / np.sqrt(bg + 1.5 ** 2)))))
    return out


def residual_at_beads(models, fwhm: float = 5.0, noises=(None, 1000.0, 200.0), seed: int = 5):
    """Rows of (photons, model, erased beads, median residual max at them, at kept beads,
    anywhere, residual SD), in input counts, on :func:`measure`'s bead fields."""
    from scipy.ndimage import maximum_filter

    from napari_dan import super_resolve
    from napari_dan.model import load_model

    ms = [load_model(m) for m in models]
    s = ms[0].scale
    specs = specimens(True)
    rng = np.random.default_rng(seed)
    rows = []
    for ph in noises:  # the same draws as measure(): beads come first
        lr, hr = observe(specs["beads"], psf_for(fwhm), s, ph, rng)
        peak = ph or 1e4
        floor, b = OFFSET + 0.02 * peak, 2 * s
        top = hr - floor
        peaks = (hr == maximum_filter(hr, 9)) & (top > 0.2 * top.max())
        peaks[:b] = peaks[-b:] = False
        peaks[:, :b] = peaks[:, -b:] = False
        ys, xs = np.nonzero(peaks)
        for label, m in zip(models, ms, strict=True):
            r = super_resolve(lr, m, precision="fp32", residual=True)
            ratio = spot_heights(r.image.astype(np.float64), hr, floor, s, b)
            res = np.asarray(r.residual, np.float64)
            near = maximum_filter(res, 3)
            at = near[ys // s, xs // s]
            gone = ratio < 0.05
            rows.append((ph, label, int(gone.sum()),
                         float(np.median(at[gone])) if gone.any() else float("nan"),
                         float(np.median(at[~gone])) if (~gone).any() else float("nan"),
                         float(np.median(near)), float(res.std())))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", nargs="+", required=True, help="bundled names or checkpoint files")
    p.add_argument("--residual", action="store_true",
                   help="also: the residual map at erased and kept beads (bead fields)")
    a = p.parse_args(argv)
    print("How faint the beads are in the LR (noiseless bead peak above the background, over the "
          "background's noise SD, median over the beads):",
          ", ".join(f"{int(ph)} photons {v:.1f}" for ph, v in bead_snr(a.model[0])))
    print()
    if a.residual:
        print("| photons | model | residual at erased beads | at kept beads | anywhere | residual SD |")
        print("| --- | --- | --- | --- | --- | --- |")
        for ph, label, n, erased, kept, anywhere, sd in residual_at_beads(a.model):
            print(f"| {int(ph) if ph else 'none'} | {label} | {erased:.1f} ({n} beads) | "
                  f"{kept:.1f} | {anywhere:.1f} | {sd:.1f} |")
        print()
    print("| specimen | photons | model | background bias | background RMS | dark pixels | "
          "foreground RMS | spot height (median) | spots erased |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, ph, label, bias, rms, dark, fg, height, erased in measure(a.model):
        spots = "- | -" if height is None else f"{height:.2f} | {erased:.0f}%"
        print(f"| {name} | {int(ph) if ph else 'none'} | {label} | {bias:+.2f}% | {rms:.2f}% | "
              f"{dark:.1f}% | {fg:.2f}% | {spots} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
