"""What shape a restored bead has: round, or stretched along the PSF's long axis?

    env OMP_NUM_THREADS=1 python benchmarks/restored_bead_shape.py [--model dan-x2-fluo] [--json FILE]

A bead far below the resolution is a point; restored with the right PSF it should come out as a
small round spot (the HR target's blur), whatever the PSF's shape. For each field, the brightest
bead's second-moment widths (Gaussian-fit FWHM, major x minor, HR px, background removed) in
the bicubic upsampling and in DAN's result (blind, and with a known PSF):

* ``real, binned B``: the in-focus plane (24) of ../shared/data/microscopy/Bead_Image1_crop.tif
  binned B x B (B = 2: the PSF about 10 x 7.5 HR px, near the top of dan-x2-fluo's PSF range;
  B = 4: about 5 x 3.7 px), blind, with the PSF from its spots, and (B = 2) with the in-focus
  plane of psf_avg_45cube.tif (the PSF averaged from those beads, on that HR grid);
* ``synthetic, Gaussian F1 x F2``: 6 points at random positions through an elliptical Gaussian
  PSF of FWHM F1 x F2 HR px (the averaged PSF's 10.2 x 7.5, and a round 8.6), camera pixels
  (2 x 2), peak 150 counts above an offset of 100, Poisson noise; blind and with the true PSF:
  whether the Restorer itself stretches a bead when it is given the right kernel.

Reading: an anisotropy (major / minor) of the restored bead far above the PSF's means the result
exaggerates the PSF's elongation (a point comes out as a bar).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import napari_dan
from napari_dan.imaging.camera import Camera, bin_pixels, expose
from napari_dan.imaging.degradations import blur
from napari_dan.imaging.psf import gaussian_psf
from napari_dan.model.kernels import kernel_stats

MICRO = Path(__file__).resolve().parents[2] / "shared" / "data" / "microscopy"
FIGURE_CROPS: dict = {}  # field -> (labels, HR crops around its brightest bead), for --figure


def figure(path: str, field: str, zoom: int = 8) -> None:
    """The crops of one field side by side, each scaled to its own range, nearest-neighbour
    magnified ``zoom`` times (each HR pixel a block), labels printed under the figure."""
    import imageio.v3 as iio

    labels, crops = FIGURE_CROPS[field]
    tiles = []
    for c in crops:
        c = np.clip(c - np.median(c), 0, None)
        tiles.append(np.kron(255 * c / max(c.max(), 1e-12), np.ones((zoom, zoom))))
        tiles.append(np.full((tiles[-1].shape[0], 6), 255.0))
    iio.imwrite(path, np.concatenate(tiles[:-1], axis=1).astype(np.uint8))
    print(f"wrote {path}: {field}, left to right: {', '.join(labels)}")


def bead_widths(img: np.ndarray, y: int, x: int, half: int) -> tuple[float, float]:
    """Gaussian-fit FWHM (major, minor) of the spot at (y, x) in a window of +-half px."""
    c = img[max(0, y - half):y + half, max(0, x - half):x + half].astype(np.float64)
    c = np.clip(c - np.median(c), 0, None)
    st = kernel_stats(c / c.sum())
    return float(st.fwhm_major), float(st.fwhm_minor)


def measure(name: str, lr: np.ndarray, model, kernels: dict, s: int, half: int = 24) -> dict:
    """``half``: the window around the brightest bead, +-half HR px (about 2.5 PSF widths,
    so no neighbour falls in it)."""
    from skimage.transform import resize

    y, x = np.unravel_index(int(np.argmax(lr)), lr.shape)
    row = {"field": name}
    bic = resize(lr.astype(np.float64), (lr.shape[0] * s, lr.shape[1] * s), order=3, mode="edge")
    row["bicubic"] = bead_widths(bic, s * y, s * x, half)
    crops = [bic[max(0, s * y - half):s * y + half, max(0, s * x - half):s * x + half]]
    for label, k in kernels.items():
        r = napari_dan.super_resolve(lr, model, kernel=k, precision="fp32")
        row[label] = bead_widths(r.image, s * y, s * x, half)
        crops.append(r.image[max(0, s * y - half):s * y + half, max(0, s * x - half):s * x + half])
        row[label + " kernel"] = (float(r.kernel_stats.fwhm_major), float(r.kernel_stats.fwhm_minor))
    FIGURE_CROPS[name] = (["bicubic", *kernels], crops)
    cells = "; ".join(f"{k} {v[0]:.2f} x {v[1]:.2f} ({v[0] / v[1]:.2f})" for k, v in row.items()
                      if k != "field")
    print(f"{name}: {cells}", flush=True)
    return row


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="dan-x2-fluo")
    p.add_argument("--json")
    p.add_argument("--figure", metavar="PNG",
                   help="also the real beads binned 2 x 2 at 1:1 (x8): bicubic, blind, spots "
                   "PSF, averaged PSF")
    args = p.parse_args(argv)
    model = napari_dan.load_model(args.model)
    s = model.scale
    rows = []
    if (MICRO / "Bead_Image1_crop.tif").exists():
        import tifffile

        plane = tifffile.imread(MICRO / "Bead_Image1_crop.tif")[24].astype(np.float32)
        psf = tifffile.imread(MICRO / "psf_avg_45cube.tif").astype(np.float64)
        z = int(np.argmax(psf.reshape(psf.shape[0], -1).max(1)))
        c = psf.shape[1] // 2
        k = psf[z, c - 10:c + 11, c - 10:c + 11]
        k = np.clip(k - np.median(np.concatenate([k[0], k[-1]])), 0, None)
        for b in (2, 4):
            lr = bin_pixels(plane, b).astype(np.float32)
            kernels = {"blind": None, "spots PSF": "spots"}
            if b == 2:  # the averaged PSF's grid (the file's pixels) is this field's HR grid
                kernels["averaged PSF"] = k / k.sum()
            rows.append(measure(f"real, binned {b}", lr, model, kernels, s, half=24 // (b // 2)))
    else:
        print(f"(no {MICRO}: the real rows are skipped)")
    rng = np.random.default_rng(31)
    for f1, f2 in ((10.2, 7.5), (8.6, 8.6)):
        hr = np.zeros((192, 192))
        for _ in range(6):
            hr[rng.integers(16, 176), rng.integers(16, 176)] = 1.0
        psf = gaussian_psf(41, f1, f2, angle=90.0)  # long axis along y, as the real beads
        clean = blur(hr, psf)
        cam = Camera(photons=150.0 / clean.max(), read_noise=1.5, offset=100.0)
        lr = expose(bin_pixels(clean, s), cam, rng).astype(np.float32)
        true = gaussian_psf(model.kernel_size, f1, f2, angle=90.0)
        rows.append(measure(f"synthetic, Gaussian {f1:g} x {f2:g}", lr, model,
                            {"blind": None, "true PSF": true}, s))
    if args.figure and "real, binned 2" in FIGURE_CROPS:
        figure(args.figure, "real, binned 2")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"command": "python benchmarks/restored_bead_shape.py " + " ".join(argv),
                       "model": args.model, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
