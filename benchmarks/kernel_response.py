"""How the estimated kernel follows the true blur: the numbers docs/user-guide.md and docs/models.md
quote in "What the kernel estimate means".

Two sweeps of the true isotropic Gaussian sigma (HR pixels), blind, global kernel mode:

* ``butterfly``: Set5's butterfly (RGB models) or its luma (grey models), degraded with
  ``napari_dan.imaging.degradations.degrade`` at the model's scale (8-bit);
* ``microscopy``: the bundled microscopy sample, ``make_sample("microscopy", scale, sigma=s)``.

For each sigma the estimate's second-moment sigma (geometric mean of the principal sigmas) and
FWHM are printed as a Markdown table, next to the true sigma and the FWHM that the same statistics
give for the true (21x21, truncated) kernel.

Run::

    nice -n 10 env OMP_NUM_THREADS=2 python benchmarks/kernel_response.py --model dan-x4-rgb dan-x4-gray
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUTTERFLY = ROOT.parent / "shared" / "data" / "bench" / "Set5" / "butterfly.png"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", nargs="+", default=["dan-x4-rgb"])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
    args = ap.parse_args(argv)

    from skimage import io as skio

    import napari_dan
    from napari_dan.imaging.degradations import degrade
    from napari_dan.model.kernels import gaussian_kernel, kernel_stats
    from napari_dan.samples import make_sample
    from napari_dan.training.data import to_gray

    hr = skio.imread(BUTTERFLY)[..., :3].astype(np.float64) / 255 if BUTTERFLY.exists() else None
    print("| model | image | true sigma (HR px) | true FWHM | estimated sigma | estimated FWHM |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name in args.model:
        model = napari_dan.load_model(name)
        s = model.scale
        for image in ("butterfly", "microscopy"):
            if image == "butterfly" and hr is None:
                print(f"skipping butterfly: {BUTTERFLY} not found", file=sys.stderr)
                continue
            for sg in args.sigmas:
                if image == "butterfly":
                    h, w = (hr.shape[0] // s) * s, (hr.shape[1] // s) * s
                    img = hr[:h, :w]
                    if model.in_channels == 1:
                        img = to_gray(img)[..., 0].astype(np.float64)
                    k = gaussian_kernel(model.kernel_size, sg)
                    lr = np.round(np.clip(degrade(img, k, s), 0, 1) * 255).astype(np.uint8)
                else:
                    lr = make_sample("microscopy", s, sigma=sg)["lr"]
                st = napari_dan.super_resolve(lr, model).kernel_stats
                est = math.sqrt(st.sigma_major * st.sigma_minor)
                true_fwhm = kernel_stats(gaussian_kernel(model.kernel_size, sg)).fwhm
                print(f"| {model.name} | {image} | {sg:.2f} | {true_fwhm:.2f} | {est:.2f} | {st.fwhm:.2f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
