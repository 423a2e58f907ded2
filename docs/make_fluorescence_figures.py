"""The fluorescence figures of docs/models.md: outputs at 1:1 (no smoothing) and kernels.

    env OMP_NUM_THREADS=2 python docs/make_fluorescence_figures.py \
        [--models dan-x2-gray dan-x2-fluo@1 dan-x2-fluo ...] [--widget] [--suffix _x4]

Writes docs/images/fluorescence_compare.png: rows = specimens through the microscope model
(filaments, beads, a flat background with saturated spots, and two real images of the
benchmark used as specimens: TIRF microtubules and DSB2018 nuclei; widefield PSF FWHM 5 HR px,
camera binning 2x2, 1,000 photons, offset 100; seeded), columns = the LR input (nearest
neighbour), bicubic, Richardson-Lucy with the true PSF (20 iterations), each model blind (a
bundled name or a checkpoint file; ``NAME@1`` runs it with ``kernel_views=1``, ``@4``, ``@8``
likewise, else the default "auto"), the HR target; every panel 96 x 96 HR pixels shown 2x
(nearest), each with its own contrast (0.5 / 99.9 percentiles, as napari's auto-contrast would).
And docs/images/fluorescence_kernels.png: for each row, the true PSF and each model's blind
kernel (21 x 21, 8x, each scaled to its maximum).

``--recordings``: docs/images/recordings{suffix}.png instead, the real recordings of
../shared/data/microscopy as a user gives them (nothing added: no PSF, no binning, no noise;
there is no target): the TIRF microtubules, the DSB2018 nuclei, the line grid's brightest
plane (as the 8-bit file holds it, values 1-8, and converted to float32) and the bead stack's
in-focus plane, 96 x 96 input pixels from the centre; columns = the
input (nearest), bicubic, each model blind; each model's kernel FWHM (output px) is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from microscopy import bicubic, observe, psf_for, richardson_lucy, specimens  # noqa: E402

OUT = ROOT / "docs" / "images"


def _fields(rng):
    from napari_dan.imaging.specimens import beads, filaments

    fil = filaments((192, 192), 1 / 1500, rng) + 0.02
    bd = beads((192, 192), 1 / 600, rng) + 0.02
    sat = beads((192, 192), 1 / 3000, rng) * 3.0 + 0.02  # some spots far above the rest
    out = {"filaments": fil / fil.max(), "beads": bd / bd.max(), "saturated spots": sat}
    real = specimens(False)  # the benchmark's real images, 256 x 256: their centre
    for name in ("microtubules (real)", "nuclei (real)"):
        out[name] = real[name][32:224, 32:224]
    return out


def widget_screenshot(model_name: str, per_plane: bool = False) -> None:
    """docs/images/widget_fluorescence.png: the real bead stack (Bead_Image1_crop, binned 2x2,
    in-focus planes, 0.045 µm pixels: the file's 0.0225 µm, binned) after a blind run with the
    residual map: DAN's kernel and the PSF from spots side by side. ``per_plane``:
    docs/images/widget_per_plane.png instead, the
    whole stack at its own sampling (41 planes), one kernel per plane, the whole stack: the
    kernels' spread and the trained-range note. Needs a display (xvfb-run -a)."""
    import time

    import napari
    import tifffile
    from qtpy.QtWidgets import QApplication

    from napari_dan._napari.widget import DanWidget
    from napari_dan.imaging.camera import bin_pixels
    from napari_dan.model import load_model

    stack = tifffile.imread(ROOT.parent / "shared" / "data" / "microscopy" / "Bead_Image1_crop.tif")
    img = stack if per_plane else bin_pixels(stack[20:29].astype(np.float32), 2).astype(np.float32)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 1100 if per_plane else 900)
    px = (1 if per_plane else 2) / 44.460534  # the file's own pixel size (binned 2 x 2: twice it)
    layer = viewer.add_image(img, name="beads", scale=(0.125, px, px), units=("µm", "µm", "µm"))
    w = DanWidget(viewer)
    viewer.window.add_dock_widget(w, area="right", name="Blind super-resolution (DAN)")
    w.add_model(load_model(model_name))
    viewer.dims.set_point(0, 0.125 * (22 if per_plane else 4))
    if per_plane:
        w.mode_combo.setCurrentText("per plane")
        w.scope_box.value = "whole stack"
    else:
        w.residual_check.setChecked(True)
    w.run(layer)
    app = QApplication.instance()
    while w.is_running:
        app.processEvents()
        time.sleep(0.05)
    app.processEvents()
    for ly in viewer.layers:
        ly.visible = ly.name in ("beads DAN x2", "beads kernel", "beads PSF from spots")
    viewer.reset_view()
    app.processEvents()
    viewer.screenshot(str(OUT / ("widget_per_plane.png" if per_plane else
                                 "widget_fluorescence.png")), canvas_only=False)
    print(w.kernel_label.text())
    viewer.close()


def recordings(model_names: list[str], suffix: str) -> None:
    """The --recordings figure (see the module docstring)."""
    import tifffile
    from skimage import io

    from napari_dan import load_model, super_resolve
    from napari_dan.model.kernels import kernel_stats

    micro = ROOT.parent / "shared" / "data" / "microscopy"
    models = [load_model(m) for m in model_names]
    s = models[0].scale
    rows = []
    for name, file in (("microtubules (TIRF)", "microtubules_tirf_widefield.tif"),
                       ("nuclei (DSB2018)", "nuclei2d_dsb2018.tif"),
                       ("line grid", "DeconvolutionSampleVerticalGrid1AU-crop.tif"),
                       ("line grid as float32", "DeconvolutionSampleVerticalGrid1AU-crop.tif"),
                       ("beads, in focus", "Bead_Image1_crop.tif")):
        a = tifffile.imread(micro / file)
        if a.ndim == 3:  # a z-stack: its brightest plane, as a user would look at it
            a = a[int(np.argmax(a.reshape(len(a), -1).max(1)))]
        if name.endswith("float32"):  # what the few-grey-levels warning advises
            a = a.astype(np.float32)
        y0, x0 = (a.shape[0] - 96) // 2, (a.shape[1] - 96) // 2
        lr = a[y0:y0 + 96, x0:x0 + 96]
        results = [super_resolve(lr, m) for m in models]
        print(f"{name}: " + ", ".join(f"{n} {kernel_stats(r.kernel).fwhm:.2f} px"
                                      for n, r in zip(model_names, results, strict=True)))
        panels = [np.kron(lr.astype(np.float64), np.ones((s, s))),
                  bicubic(lr.astype(np.float64), s)] + [r.image for r in results]
        row = []
        for x in panels:
            x = np.asarray(x, np.float64)
            lo, hi = np.percentile(x, [0.5, 99.9])
            row.append(np.clip((x - lo) / max(hi - lo, 1e-9), 0, 1))
        rows.append(np.concatenate(sum([[x, np.ones((x.shape[0], 4))] for x in row], [])[:-1], 1))
    img = np.concatenate(sum([[r, np.ones((6, r.shape[1]))] for r in rows], [])[:-1], 0)
    io.imsave(OUT / f"recordings{suffix}.png", (img * 255).astype(np.uint8), check_contrast=False)
    print("rows: microtubules, nuclei, line grid (uint8, then float32), beads | columns: input, bicubic, "
          + ", ".join(f"{m} blind" for m in model_names))


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["dan-x2-gray", "dan-x2-fluo"],
                   help="models to show, in column order (names or checkpoint files, each "
                   "optionally @VIEWS: its kernel_views); the last one is used for the widget "
                   "screenshot")
    p.add_argument("--suffix", default="",
                   help="written as fluorescence_compare<SUFFIX>.png and fluorescence_kernels"
                   "<SUFFIX>.png (e.g. _x4 for x4 models)")
    p.add_argument("--widget", action="store_true", help="also the widget screenshot (display)")
    p.add_argument("--widget-only", action="store_true",
                   help="only the widget screenshot (display), not the comparison figures")
    p.add_argument("--widget-per-plane", action="store_true",
                   help="only the per-plane widget screenshot of the whole bead stack (display)")
    p.add_argument("--recordings", action="store_true",
                   help="the real recordings as given instead (docs/images/recordings*.png)")
    a = p.parse_args(argv)
    if a.recordings:
        recordings(a.models, a.suffix)
        return 0
    if a.widget_per_plane:
        widget_screenshot(a.models[-1].split("@")[0], per_plane=True)
        return 0
    if a.widget or a.widget_only:
        widget_screenshot(a.models[-1].split("@")[0])
    if a.widget_only:
        return 0
    from skimage import io

    from napari_dan import load_model, super_resolve

    specs = [m.rpartition("@") if "@" in m else (m, "", "auto") for m in a.models]
    models = [load_model(m) for m, _, _ in specs]
    views = [v if v == "auto" else int(v) for _, _, v in specs]
    s = models[0].scale
    rng = np.random.default_rng(3)
    psf = psf_for(5.0)
    rows, krows, names = [], [], []
    crop = slice(48, 144)
    for name, spec in _fields(rng).items():
        lr, hr = observe(spec, psf, s, 1000.0, rng)
        if name == "saturated spots":
            lr = np.minimum(lr, np.percentile(lr, 99.8)).astype(np.uint16)  # clipped camera
        up = np.kron(lr.astype(np.float64), np.ones((s, s)))
        rl = dict(richardson_lucy(lr, psf, s, (20,)))[20]
        results = [super_resolve(lr, m, kernel_views=v) for m, v in zip(models, views, strict=True)]
        panels = [up, bicubic(lr, s), rl] + [r.image for r in results] + [hr]
        row = []
        for x in panels:  # each panel its own contrast (0.5 / 99.9 percentiles), as in napari
            x = np.asarray(x, np.float64)[crop, crop]
            lo, hi = np.percentile(x, [0.5, 99.9])
            row.append(np.clip((x - lo) / max(hi - lo, 1e-9), 0, 1))
        rows.append(np.concatenate([np.kron(x, np.ones((2, 2))) for x in row], 1))
        from napari_dan.model.kernels import fit_kernel_size

        ks = [fit_kernel_size(psf, 21)[0]] + [r.kernel for r in results]
        krows.append(np.concatenate([np.kron(k / k.max(), np.ones((8, 8))) for k in ks], 1))
        names.append(name)
    sep = lambda w: np.ones((6, w))  # noqa: E731
    img = np.concatenate(sum([[r, sep(r.shape[1])] for r in rows], [])[:-1], 0)
    io.imsave(OUT / f"fluorescence_compare{a.suffix}.png", (img * 255).astype(np.uint8), check_contrast=False)
    kimg = np.concatenate(sum([[r, sep(r.shape[1])] for r in krows], [])[:-1], 0)
    io.imsave(OUT / f"fluorescence_kernels{a.suffix}.png", (np.clip(kimg, 0, 1) * 255).astype(np.uint8),
              check_contrast=False)
    print("rows:", ", ".join(names), "| columns: LR, bicubic, RL (20 it., true PSF),",
          ", ".join(f"{m} blind" for m in a.models) + ", HR target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
