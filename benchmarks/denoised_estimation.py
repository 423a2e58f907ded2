"""Would denoising the input before the blind estimate help? (session 17: no, not adopted)

On the microscopy benchmark's 36 synthetic fields (``benchmarks/microscopy.py``: beads,
filaments, nuclei; PSF FWHM 2.5 / 5 / 8.5 HR px; no noise, 1,000 / 200 / 50 photons; the same
seeds), the kernel is estimated once from the LR as it is and once from the LR denoised with
scikit-image's non-local means (strength from
:func:`napari_dan.imaging.camera.noise_sigma`); the second kernel then restores the original
LR. Per field: signal-to-noise, true FWHM, the two estimates, the two PSNRs; at the end the
median and mean FWHM errors.

    env OMP_NUM_THREADS=1 python benchmarks/denoised_estimation.py dan-x4-fluo
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from microscopy import psnr, synthetic_fields  # noqa: E402


def denoise(lr: np.ndarray) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    from napari_dan.imaging.camera import noise_sigma

    x = lr.astype(np.float64)
    lo, hi = np.percentile(x, [0.1, 99.9])
    span = max(hi - lo, 1e-9)
    u = (x - lo) / span
    sig = float(noise_sigma(u))
    out = denoise_nl_means(u, h=0.8 * sig, sigma=sig, patch_size=3, patch_distance=5,
                           fast_mode=True)
    return (out * span + lo).astype(np.float32)


def main(argv=None) -> int:
    from napari_dan import load_model, super_resolve
    from napari_dan.imaging.camera import signal_to_noise
    from napari_dan.model.kernels import kernel_stats

    model = load_model((argv or sys.argv[1:] or ["dan-x4-fluo"])[0])
    s = model.scale
    e0, e1 = [], []
    for name, fw, noise, true, _, lr, hr in synthetic_fields(s):
        r0 = super_resolve(lr, model, precision="fp32")
        r1 = super_resolve(denoise(lr), model, precision="fp32")
        r2 = super_resolve(lr, model, kernel=r1.kernel, precision="fp32")
        f0, f1 = kernel_stats(r0.kernel).fwhm, kernel_stats(r1.kernel).fwhm
        p0 = psnr(r0.image.astype(np.float64), hr, 2 * s)
        p2 = psnr(r2.image.astype(np.float64), hr, 2 * s)
        e0.append(abs(f0 - true) / true)
        e1.append(abs(f1 - true) / true)
        print(f"{name:9s} {fw} {noise:8s} SNR {signal_to_noise(lr):6.0f} true {true:.2f} "
              f"estimate {f0:.2f} -> {f1:.2f} px, PSNR {p0:.2f} -> {p2:.2f} dB", flush=True)
    print(f"FWHM error median {100 * np.median(e0):.1f}% -> {100 * np.median(e1):.1f}%, mean "
          f"{100 * np.mean(e0):.1f}% -> {100 * np.mean(e1):.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
