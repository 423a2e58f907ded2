"""Tiled vs untiled agreement of every bundled model (global mode, fp32): the seam check.

Run from the repository root: ``OMP_NUM_THREADS=2 python benchmarks/seams.py [NAME ...]`` (default:
every bundled model). Prints, per model, the share of output values within 1 grey level between
64-px tiles and one whole tile.
"""

from __future__ import annotations

import sys

import numpy as np
from skimage import data

import napari_dan


def main(names: list[str]) -> None:
    for name in names or [info["name"] for info in napari_dan.list_models()]:
        m = napari_dan.load_model(name)
        img = data.astronaut()[::2, ::2] if m.in_channels == 3 else data.camera()[::2, ::2]
        whole = napari_dan.super_resolve(img, m, tile_size=1024, precision="fp32")
        tiled = napari_dan.super_resolve(img, m, tile_size=64, precision="fp32")
        d = np.abs(whole.image.astype(int) - tiled.image.astype(int))
        print(f"{m.name}: input {img.shape}, {tiled.metadata.get('tiles')} tiles of 64 px: "
              f"{100 * (d <= 1).mean():.4f}% within 1 grey level, largest difference {d.max()}")


if __name__ == "__main__":
    main(sys.argv[1:])
