"""Stress checks of the grey models: pure noise and saturated microscopy (numbers in docs/models.md).

Run from the repository root: ``OMP_NUM_THREADS=2 python benchmarks/stress_gray.py [--model NAME]``.
Writes the saturated result as a PNG to look at (default /tmp/napari_dan_saturated_<model>.png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from skimage.transform import resize

import napari_dan

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "microscopy"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", "-m", default="dan-x4-gray", help="bundled name or checkpoint file")
    ap.add_argument("--png", help="where the saturated result goes")
    args = ap.parse_args()
    model = napari_dan.load_model(args.model)
    s = model.scale
    rng = np.random.default_rng(0)

    noise = (1000 + rng.normal(0, 30, (96, 96))).astype(np.uint16)
    out = napari_dan.super_resolve(noise, model).image.astype(float)
    bic = resize(noise.astype(float), (96 * s, 96 * s), order=3)
    print(f"noise: input std {noise.std():.1f}, output std {out.std():.1f}, bicubic-up std {bic.std():.1f}")

    crop = tifffile.imread(SHARED / "nuclei2d_dsb2018.tif").astype(float)[:128, :128]
    sat = np.clip(crop / np.percentile(crop, 90) * 65535, 0, 65535).astype(np.uint16)
    res = napari_dan.super_resolve(sat, model).image
    inside = resize(sat == 65535, res.shape, order=0) > 0
    print(f"saturated: input clipped {100 * (sat == 65535).mean():.1f}%; output inside the clipped "
          f"region: min {res[inside].min()} mean {res[inside].mean():.0f}; output max {res.max()}; "
          f"dtype {res.dtype}")
    png = Path(args.png or f"/tmp/napari_dan_saturated_{Path(args.model).stem}.png")
    iio.imwrite(png, (np.clip(res / 65535, 0, 1) * 255).astype(np.uint8))
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
