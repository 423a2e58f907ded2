"""Re-take the screenshots of docs/user-guide.md (needs a display: run it under Xvfb).

    xvfb-run -a -s "-screen 0 1400x1000x24" python docs/make_screenshots.py [--model NAME_OR_PATH]

Without ``--model`` the photo sample uses the bundled default model and the gray microscopy
sample a bundled gray model (the sample's scale first), or the default RGB model when no gray
one is installed (the engine replicates gray to RGB). With no bundled model at all a small
*untrained* random model stands in (the layers and widgets are real, the pictures and kernels are
not meaningful). ``docs/images/MODEL.txt`` records the model used for each sample and the
widget's kernel text after each run, so the captions can be checked.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari
import numpy as np
import torch  # noqa: F401  (before Qt: known import-order crashes)
from qtpy.QtWidgets import QApplication

from napari_dan import list_models, load_model
from napari_dan._napari.widget import DanWidget
from napari_dan.model import DEFAULT_MODEL, create_model

OUT = Path(__file__).resolve().parent / "images"
SIZE = (1360, 900)


def _model(arg: str | None, in_nc: int, scale: int):
    if arg:
        return load_model(arg), f"model {arg}"
    names = {m["name"] for m in list_models()}
    if in_nc == 3:
        wanted = [DEFAULT_MODEL]
    else:  # a gray model of the sample's scale, then the other scale, then the RGB default
        other = 2 if scale == 4 else 4
        wanted = [f"dan-x{scale}-gray", f"dan-x{other}-gray", DEFAULT_MODEL]
    for name in wanted:
        if name in names:
            note = (" (gray input replicated to RGB by the engine)"
                    if in_nc == 1 and name == DEFAULT_MODEL else "")
            return load_model(name), f"bundled model {name}{note}"
    hp = dict(in_nc=in_nc, nf=16, nb=2, ng=1, scale=scale, code_len=10, kernel_size=21, loop=4,
              est_nf=16, est_nb=1)
    return (create_model("DANv2", name=f"untrained-x{scale}", pca_samples=2000, seed=0, **hp),
            "an UNTRAINED random model (no bundled weights were installed)")


def _wait(widget: DanWidget, timeout: float = 900) -> None:
    app = QApplication.instance()
    t0 = time.time()
    while widget.is_running and time.time() - t0 < timeout:
        app.processEvents()
        time.sleep(0.05)
    for _ in range(20):  # let the canvas draw the new layers
        app.processEvents()
        time.sleep(0.02)


def _viewer() -> tuple[napari.Viewer, DanWidget]:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*SIZE)
    widget = DanWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Blind super-resolution (DAN)", area="right")
    return viewer, widget


def _shot(viewer: napari.Viewer, name: str) -> None:
    app = QApplication.instance()
    for _ in range(10):
        app.processEvents()
        time.sleep(0.02)
    OUT.mkdir(parents=True, exist_ok=True)
    img = viewer.screenshot(canvas_only=False, flash=False)
    import imageio.v3 as iio

    iio.imwrite(OUT / name, img)
    print("wrote", OUT / name, img.shape)


def _settle(n: int = 10) -> None:
    app = QApplication.instance()
    for _ in range(n):
        app.processEvents()
        time.sleep(0.02)


def _compare(viewer: napari.Viewer, layers, labels, centre, half: float, name: str) -> None:
    """One canvas shot per layer (alone, same camera and contrast), side by side in one PNG."""
    limits = layers[0].contrast_limits
    panels = []
    for layer, label in zip(layers, labels, strict=True):
        for other in viewer.layers:
            other.visible = other is layer
        layer.contrast_limits = limits
        native = viewer.window._qt_viewer.canvas.native
        viewer.camera.center = centre
        viewer.camera.zoom = native.width() / (2 * half)  # the canvas is taller than wide
        viewer.text_overlay.visible = True
        viewer.text_overlay.text = label
        viewer.text_overlay.font_size = 16
        viewer.text_overlay.position = "top_left"
        _settle()
        panels.append(viewer.screenshot(canvas_only=True, flash=False))
    viewer.text_overlay.visible = False
    gap = np.full((panels[0].shape[0], 8, 4), 255, dtype=panels[0].dtype)
    row = [panels[0]]
    for panel in panels[1:]:
        row += [gap, panel]
    import imageio.v3 as iio

    iio.imwrite(OUT / name, np.concatenate(row, axis=1))
    print("wrote", OUT / name)


def _focus(viewer: napari.Viewer, layers, margin: float = 0.15) -> None:
    """Centre the camera on the world bounding box of ``layers``."""
    _settle()  # the canvas size is only final once Qt has laid out the docks
    lo = np.min([ly.extent.world[0][-2:] for ly in layers], axis=0)
    hi = np.max([ly.extent.world[1][-2:] for ly in layers], axis=0)
    viewer.camera.center = tuple((lo + hi) / 2)
    native = viewer.window._qt_viewer.canvas.native  # the Qt widget: unambiguous width/height
    width, height = native.width(), native.height()
    span = (hi - lo) * (1 + 2 * margin)                   # world: (y, x)
    viewer.camera.zoom = float(min(height / span[0], width / span[1]))


def optics_shot() -> None:
    """widget_optics.png: the real DSB2018 nuclei (../shared, 256 x 256 px, given a pixel size
    of 0.2 µm) restored by dan-x2-fluo with the PSF from optics (NA 0.75, 460 nm)."""
    import tifffile

    src = Path(__file__).resolve().parents[2] / "shared" / "data" / "microscopy"
    a = tifffile.imread(src / "nuclei2d_dsb2018.tif")[128:384, 128:384]
    viewer, widget = _viewer()
    viewer.add_image(a, name="nuclei", scale=(0.2, 0.2), units=("µm", "µm"))
    widget.add_model(load_model("dan-x2-fluo"))
    widget.layer_combo.setCurrentText("nuclei")
    widget.mode_combo.setCurrentText("PSF from optics (non-blind)")
    widget.na_box.value, widget.emission_box.value = 0.75, 460
    widget.run()
    _wait(widget)
    viewer.layers["nuclei"].visible = False
    _focus(viewer, [viewer.layers["nuclei DAN x2"], viewer.layers["nuclei kernel"]], margin=0.03)
    _shot(viewer, "widget_optics.png")
    print("widget:", widget.kernel_label.text())
    viewer.close()


def fluorescence_sample_shot() -> None:
    """widget_fluorescence_sample.png: the synthetic fluorescence sample after a global run of
    dan-x2-fluo (the model the widget picks for it), the degraded input hidden."""
    viewer, widget = _viewer()
    viewer.open_sample("napari-dan", "fluorescence")
    widget.run()
    _wait(widget)
    viewer.layers["fluorescence"].visible = False
    _shot(viewer, "widget_fluorescence_sample.png")
    print("widget:", widget.kernel_label.text())
    viewer.close()


def focus_series_shot() -> None:
    """widget_focus_series.png: the fluorescence focus series after a per-plane run of
    dan-x2-fluo on the whole stack, shown at a defocused plane (its kernel layer follows the
    slider)."""
    viewer, widget = _viewer()
    viewer.open_sample("napari-dan", "stack")
    widget.mode_combo.setCurrentText("per plane")
    widget.scope_box.value = "whole stack"
    widget.run()
    _wait(widget)
    viewer.layers["focus series"].visible = False
    viewer.dims.set_current_step(0, 1)  # 0.2 µm below focus
    _focus(viewer, [viewer.layers["focus series DAN x2"], viewer.layers["focus series kernel"],
                    viewer.layers["focus series true kernel"]], margin=0.03)
    _shot(viewer, "widget_focus_series.png")
    print("widget:", widget.kernel_label.text())
    viewer.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", help="model name or checkpoint for both samples")
    p.add_argument("--optics", action="store_true",
                   help="only widget_optics.png (the PSF from optics; needs ../shared)")
    p.add_argument("--fluorescence-sample", action="store_true",
                   help="only widget_fluorescence_sample.png")
    p.add_argument("--focus-series", action="store_true",
                   help="only widget_focus_series.png (per-plane kernels of the focus series)")
    args = p.parse_args()
    if args.optics or args.fluorescence_sample or args.focus_series:
        if args.optics:
            optics_shot()
        if args.fluorescence_sample:
            fluorescence_sample_shot()
        if args.focus_series:
            focus_series_shot()
        return
    notes = []

    # 1-3: microscopy sample, widget before/after a global run, the kernel beside the image
    viewer, widget = _viewer()
    viewer.open_sample("napari-dan", "microscopy")
    model, what = _model(args.model, 1, 4)
    notes.append(f"microscopy screenshots: {what}")
    widget.add_model(model)
    widget.layer_combo.setCurrentText("cell")
    viewer.layers.selection.active = viewer.layers["cell"]
    _focus(viewer, [viewer.layers["cell"], viewer.layers["cell true kernel"]], margin=0.03)
    _shot(viewer, "widget_before.png")
    widget.run()
    _wait(widget)
    notes.append("  widget: " + widget.kernel_label.text().replace("\n", "\n  widget: "))
    sr = viewer.layers[f"cell DAN x{model.scale}"]
    viewer.layers["cell"].visible = False  # the SR layer overlays it exactly
    viewer.layers.selection.active = sr
    _focus(viewer, [sr, viewer.layers["cell kernel"]], margin=0.03)
    _shot(viewer, "widget_after.png")
    viewer.layers.selection.active = viewer.layers["cell kernel"]
    _focus(viewer, [viewer.layers["cell kernel"], viewer.layers["cell true kernel"]], margin=0.6)
    viewer.text_overlay.visible = True
    viewer.text_overlay.text = "top: 'cell true kernel'\nbottom: 'cell kernel' (estimated)"
    viewer.text_overlay.font_size = 14
    _shot(viewer, "kernel_layer.png")
    viewer.text_overlay.visible = False

    # 4: the same run side by side, zoomed on the cell: input, DAN result, hidden original
    hr = viewer.layers["cell original (HR)"]
    bright = np.argwhere(hr.data >= np.quantile(hr.data, 0.99))
    centre = tuple(hr.data_to_world(bright.mean(axis=0))[-2:])
    half = 28 * viewer.layers["cell"].scale[-1]          # 28 input pixels each side
    _compare(viewer, [viewer.layers["cell"], sr, hr],
             ["'cell' (input)", f"'{sr.name}'", "'cell original (HR)'"],
             centre, half, "microscopy_compare.png")
    viewer.close()

    # 4: photo sample, per-tile run: kernel map and FWHM ellipses
    viewer, widget = _viewer()
    viewer.open_sample("napari-dan", "photo")
    model, what = _model(args.model, 3, 4)
    notes.append(f"photo screenshot: {what}")
    widget.add_model(model)
    widget.layer_combo.setCurrentText("astronaut")
    widget.mode_combo.setCurrentText("per tile (PSF map)")
    widget.tile_spin.setValue(48)
    widget.run()
    _wait(widget)
    notes.append("  widget: " + widget.kernel_label.text().replace("\n", "\n  widget: "))
    viewer.layers["astronaut"].visible = False
    viewer.layers.selection.active = viewer.layers["astronaut kernel map"]
    _focus(viewer, [viewer.layers["astronaut DAN x4"], viewer.layers["astronaut kernel map"]],
           margin=0.03)
    _shot(viewer, "per_tile_map.png")
    viewer.close()

    (OUT / "MODEL.txt").write_text("\n".join(notes) + "\n")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
