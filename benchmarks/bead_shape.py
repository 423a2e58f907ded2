"""Why the blind estimate reads the real bead stack's PSF small: the PSF's shape, or the file?

    env OMP_NUM_THREADS=1 python benchmarks/bead_shape.py MODEL_OR_RUN_DIR [...] [--kernel-views N]

Each argument is a bundled model name, a checkpoint file or a training run folder (as in
benchmarks/training_check.py). Every field is 150 x 150 HR px (the bead file's crop), binned 2x2
(so these are x2 questions; for an x4 model the fields are binned 4x4), and DAN's blind kernel
(global) is measured by its Gaussian-fit FWHM on the output grid, 3 seeds where a field is drawn,
beside the FWHM of the PSF measured from the field's isolated spots (``--psf spots``: what a
bead measurement calls the PSF):

* ``real planes``: the in-focus planes (dz -1, 0, +1) of ../shared/data/microscopy/Bead_Image1_crop.tif;
* ``averaged PSF stamped``: the in-focus plane of psf_avg_45cube.tif (the PSF averaged from those
  beads: Gaussian-fit FWHM 8.6 px, 10.2 x 7.5) placed at the four beads' positions of the
  in-focus plane, peak 150 counts + 1 (as the file), clean and with Poisson noise;
* ``averaged PSF symmetrised`` / ``smoothed``: the stamped averaged PSF made symmetric (the mean
  of its four mirror images) or smoothed by a Gaussian of sigma 1 or 2 px, clean: which of its
  features (its asymmetry, its pixel-scale texture) the blind estimate reads as sharpness;
* ``Gaussian 10 x 7.4``: points at random positions through an elliptical Gaussian PSF of the
  averaged PSF's fitted widths, and ``Gaussian 8.6`` a round one, 4 points, peak 150, Poisson;
* ``lumpy PSF 8.6``: 4 points through an irregular PSF of fitted FWHM 8.6 px
  (:func:`napari_dan.imaging.psf.lumpy_psf`: uneven lobes, maximum off centre, faint texture;
  a new one per seed), peak 150, Poisson: whether a synthetic PSF shaped like the averaged one
  is misread as it is;
* ``disc D px through Gaussian 5 px``: 4 discs of diameter 6 or 9 px (large beads) seen through a
  Gaussian PSF of FWHM 5 px: flat-topped blobs whose optical PSF is 5 px.

The averaged PSF is what the issue calls the truth (its FWHM, 8.6 px); a blind estimator that
reads the stamped averaged PSF much smaller than a Gaussian of the same FWHM is reading its shape
(flat top, steep sides) as specimen.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import training_check  # noqa: E402
from microscopy import MICRO  # noqa: E402

SIZE = 150
BEADS = ((81, 74), (72, 29), (111, 43), (35, 124))  # the in-focus plane's four beads (y, x)


def gaussian(fy: float, fx: float, n: int = 41) -> np.ndarray:
    r = np.arange(n) - n // 2
    sy, sx = fy / 2.3548, fx / 2.3548
    k = np.exp(-r[:, None] ** 2 / (2 * sy * sy) - r[None, :] ** 2 / (2 * sx * sx))
    return k / k.sum()


def stamp(psf: np.ndarray, positions) -> np.ndarray:
    """``psf`` (odd sides) added at integer ``positions`` of a SIZE x SIZE field."""
    out = np.zeros((SIZE + psf.shape[0], SIZE + psf.shape[1]))
    h = psf.shape[0] // 2
    for y, x in positions:
        out[int(y):int(y) + psf.shape[0], int(x):int(x) + psf.shape[1]] += psf
    return out[h:h + SIZE, h:h + SIZE]


def counts(hr: np.ndarray, scale: int, rng, peak: float = 150.0, offset: float = 1.0):
    from napari_dan.imaging.camera import bin_pixels

    lr = bin_pixels(hr, scale)
    lr = lr / lr.max() * peak
    if rng is not None:
        lr = rng.poisson(np.clip(lr, 0, None)).astype(np.float64)
    return (lr + offset).astype(np.float32)


def fields(scale: int):
    """name -> list of LR fields."""
    import tifffile

    from napari_dan.imaging.camera import bin_pixels
    from napari_dan.imaging.degradations import blur

    stack = tifffile.imread(MICRO / "Bead_Image1_crop.tif").astype(np.float64)
    avg = tifffile.imread(MICRO / "psf_avg_45cube.tif").astype(np.float64)
    focus = int(np.argmax(stack.reshape(len(stack), -1).max(1)))
    pa = avg[int(np.argmax(avg.reshape(len(avg), -1).max(1)))]
    pa = pa / pa.sum()
    out = {"real planes (dz -1, 0, +1)":
           [bin_pixels(stack[z], scale).astype(np.float32) for z in (focus - 1, focus, focus + 1)]}
    out["averaged PSF stamped, clean"] = [counts(stamp(pa, BEADS), scale, None)]
    out["averaged PSF stamped, Poisson"] = [counts(stamp(pa, BEADS), scale, np.random.default_rng(s))
                                            for s in range(3)]

    def points(psf, seed, disc=0.0):
        rng = np.random.default_rng(seed)
        pos = rng.uniform(20, SIZE - 20, (4, 2))
        spec = np.zeros((SIZE, SIZE))
        yy, xx = np.mgrid[:SIZE, :SIZE]
        for y, x in pos:
            if disc:
                spec += (yy - y) ** 2 + (xx - x) ** 2 <= (disc / 2) ** 2
            else:
                spec[int(y), int(x)] = 1.0
        return counts(blur(spec, psf), scale, rng)

    from scipy.ndimage import gaussian_filter

    sym = (pa + pa[::-1] + pa[:, ::-1] + pa[::-1, ::-1]) / 4
    out["averaged PSF symmetrised, clean"] = [counts(stamp(sym, BEADS), scale, None)]
    for sigma in (1, 2):
        out[f"averaged PSF smoothed {sigma} px, clean"] = [
            counts(stamp(gaussian_filter(pa, sigma), BEADS), scale, None)]
    out["Gaussian 10 x 7.4 (the fit's widths)"] = [points(gaussian(10.2, 7.5), s) for s in range(3)]
    out["Gaussian 8.6"] = [points(gaussian(8.6, 8.6), s) for s in range(3)]
    from napari_dan.imaging.psf import lumpy_psf

    out["lumpy PSF 8.6"] = [points(lumpy_psf(41, 8.6, np.random.default_rng(100 + s)), s)
                            for s in range(3)]
    for d in (6, 9):
        out[f"disc {d} px through Gaussian 5 px"] = [points(gaussian(5, 5), s, disc=d) for s in range(3)]
    return out


def _spots(lr: np.ndarray, scale: int) -> float:
    """FWHM (output grid) of the PSF measured from the field's isolated spots: what a bead
    measurement calls the PSF; NaN when none can be measured."""
    from napari_dan.imaging.spots import measure_psf
    from napari_dan.model.kernels import kernel_stats

    try:
        return kernel_stats(measure_psf(lr).kernel(scale, 81)).fwhm
    except Exception:  # noqa: BLE001 - too few spots
        return float("nan")


def main(argv=None) -> int:
    from napari_dan import super_resolve
    from napari_dan.model.kernels import kernel_stats

    args = list(sys.argv[1:] if argv is None else argv)
    views = "auto"  # --kernel-views N: SROptions.kernel_views of the blind runs
    if "--kernel-views" in args:
        i = args.index("--kernel-views")
        views = args[i + 1] if args[i + 1] == "auto" else int(args[i + 1])
        del args[i:i + 2]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    with tempfile.TemporaryDirectory() as tmp:
        for arg in args:
            label, model = training_check._load(arg, Path(tmp))
            print(f"{label} (blind FWHM on the output grid, px; truth for the real beads: the "
                  "averaged PSF's 8.6)")
            for name, lrs in fields(model.scale).items():
                fw = [kernel_stats(super_resolve(lr, model, precision="fp32",
                                                      kernel_views=views).kernel).fwhm
                      for lr in lrs]
                sp = [_spots(lr, model.scale) for lr in lrs]
                print(f"  {name:38s} blind " + " ".join(f"{v:5.2f}" for v in fw)
                      + "   spots " + " ".join(f"{v:5.2f}" for v in sp), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
