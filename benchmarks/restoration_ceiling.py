"""What limits x4 restoration of the real microtubules (session 34): is DAN under-denoising, or
is the recording's own noise, left in the HR target, the ceiling?

For the microscopy benchmark's specimens (``benchmarks/microscopy.py``: its forward model,
seeds and PSF of 5 HR px), at 1,000 / 200 / 50 photons, x4, dB over bicubic:

* bicubic of the LR image smoothed by a Gaussian (sigma 0.5 / 0.8 / 1.2 LR px) and the bicubic
  image smoothed (the same sigmas times 4 on the HR grid);
* DAN with the true PSF, and its image smoothed (sigma 0.5 / 1.0 HR px).

And per specimen the noise of the specimen itself (Immerkaer's estimate; a real recording's
own noise), what is left of it in the HR target (after the target's 1.5-px Gaussian), and the
PSNR that noise alone would allow ("ceiling").

Run::

    env OMP_NUM_THREADS=2 python benchmarks/restoration_ceiling.py --json docs/restoration-ceiling.json   (1 min)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import microscopy as mb  # noqa: E402
from quality import command_line  # noqa: E402


def own_noise(img: np.ndarray) -> float:
    """Immerkaer (1996): the standard deviation of white noise from a Laplacian difference."""
    from scipy.signal import convolve2d

    m = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], float)
    h, w = img.shape
    return float(np.sqrt(np.pi / 2) * np.abs(convolve2d(img, m, mode="valid")).sum()
                 / (6 * (w - 2) * (h - 2)))


def main(argv=None) -> int:
    from scipy.ndimage import gaussian_filter

    from napari_dan import load_model, super_resolve
    from napari_dan.imaging.degradations import blur
    from napari_dan.imaging.microscope import target_kernel
    from napari_dan.model.kernels import fit_kernel_size

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="dan-x4-fluo")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    specs = mb.specimens(False)
    model = load_model(a.model)
    s, b = model.scale, 2 * model.scale
    psf = mb.psf_for(5.0)
    k, _ = fit_kernel_size(psf, model.kernel_size)
    rng = np.random.default_rng(7)
    rows = []
    for name in ("microtubules (real)", "filaments", "nuclei (real)"):
        for noise in ("1000 ph", "200 ph", "50 ph"):
            lr, hr = mb.observe(specs[name], psf, s, mb.NOISE[noise], rng)
            bic = mb.psnr(mb.bicubic(lr, s), hr, b)
            row = {"image": name, "noise": noise, "bicubic": bic}
            for sg in (0.5, 0.8, 1.2):
                row[f"bicubic_of_smoothed_{sg}"] = mb.psnr(
                    mb.bicubic(gaussian_filter(lr.astype(float), sg), s), hr, b) - bic
                row[f"smoothed_bicubic_{sg}"] = mb.psnr(
                    gaussian_filter(mb.bicubic(lr, s), sg * s), hr, b) - bic
            sr = super_resolve(lr, model, kernel=k, precision="fp32").image.astype(float)
            row["dan_true"] = mb.psnr(sr, hr, b) - bic
            for sg in (0.5, 1.0):
                row[f"dan_true_smoothed_{sg}"] = mb.psnr(gaussian_filter(sr, sg), hr, b) - bic
            rows.append(row)
            print(name, noise, " ".join(f"{k_} {v:+.2f}" for k_, v in row.items()
                                        if k_ not in ("image", "noise", "bicubic")),
                  f"(bicubic {bic:.2f} dB)", flush=True)
    ceil = []
    white = np.random.default_rng(0)
    for name, spec in specs.items():
        sig = own_noise(spec)
        left = float(blur(white.normal(0, sig, spec.shape), target_kernel()).std())
        tgt = blur(spec, target_kernel())
        peak = float(tgt.max() - tgt.min())
        ceil.append({"image": name, "own_noise": sig, "in_target": left,
                     "ceiling_db": float(20 * np.log10(peak / left))})
        print(f"{name}: own noise {sig:.4f}, in the target {left:.4f}, "
              f"ceiling {ceil[-1]['ceiling_db']:.1f} dB")
    if a.json:
        a.json.write_text(json.dumps({"command": command_line(), "model": a.model,
                                      "rows": rows, "ceiling": ceil}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
