"""Balanced tiles against the tile placement before 2026-12-01, in fp32, on the same images.

The previous placement used full ``tile_size`` tiles every ``tile - overlap`` pixels and moved the
last one back to the border (512 px in tiles of 416: two 416-px tiles). The balanced placement
uses the fewest tiles of at most ``tile_size``, all one size. Only the seams between tiles can
differ; this script measures by how much, per bundled model, as the share of output pixels within
one grey level (8-bit scale: 1/255 of the image's value range for other dtypes), and the time.

Run::

    OMP_NUM_THREADS=2 python benchmarks/tiles_vs_previous.py --size 512

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def previous_tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """The placement the engine used before balanced tiles (the reference of this check)."""
    if n <= tile:
        return [0]
    step = max(tile - overlap, 1)
    starts = list(range(0, n - tile, step))
    starts.append(n - tile)
    return starts


def images(size: int):
    from skimage import data, transform

    cam = transform.resize(data.camera().astype(np.float64) / 255, (size, size), order=1)
    rng = np.random.default_rng(0)
    grey = np.clip(np.rint((cam * 3000 + 100) + rng.normal(0, 20, cam.shape)), 0, 65535)
    rgb = transform.resize(data.astronaut().astype(np.float64) / 255, (size, size, 3), order=1)
    return grey.astype(np.uint16), np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tile-size", default="auto")
    args = ap.parse_args(argv)
    import napari_dan
    from napari_dan.engine import tiling

    grey, rgb = images(args.size)
    ts = args.tile_size if args.tile_size == "auto" else int(args.tile_size)
    print(f"LR {args.size}x{args.size}, fp32, tile_size {ts}\n")
    print("| model | tiles before / now | time before / now (s) | pixels within 1 grey level "
          "| max difference (grey levels) |")
    print("| --- | --- | --- | ---: | ---: |")
    balanced = (tiling.tile_starts, tiling.tile_extent)
    for m in napari_dan.list_models():
        model = napari_dan.load_model(m["name"])
        img = grey if model.in_channels == 1 else rgb
        out, meta = {}, {}
        for which in ("before", "now"):
            if which == "before":
                tiling.tile_starts = previous_tile_starts
                tiling.tile_extent = lambda n, tile, overlap: min(n, tile)
            else:
                tiling.tile_starts, tiling.tile_extent = balanced
            t0 = time.perf_counter()
            r = napari_dan.super_resolve(img, model, precision="fp32", tile_size=ts,
                                         device="cpu")
            meta[which] = (r.metadata["tiles"], time.perf_counter() - t0)
            out[which] = r.image.astype(np.float64)
        tiling.tile_starts, tiling.tile_extent = balanced
        span = 255.0 if img.dtype == np.uint8 else float(np.percentile(img, 99.9)
                                                          - np.percentile(img, 0.1))
        diff = np.abs(out["before"] - out["now"]) / span * 255
        print(f"| {m['name']} | {meta['before'][0]} / {meta['now'][0]} | "
              f"{meta['before'][1]:.1f} / {meta['now'][1]:.1f} | "
              f"{100 * np.mean(diff <= 1.0):.3f}% | {diff.max():.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
