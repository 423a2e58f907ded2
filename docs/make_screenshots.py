"""Re-take the screenshots of docs/user-guide.md (needs a display: run it under Xvfb).

    xvfb-run -a -s "-screen 0 1400x1000x24" python docs/make_screenshots.py [--model NAME_OR_PATH]

Without ``--model`` the bundled default model is used when it is installed; otherwise a small
*untrained* random model stands in (the layers and widgets are real, the pictures and kernels are
not meaningful), and ``docs/images/MODEL.txt`` says so, so the captions can be checked.
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
from napari_dan._widget import DanWidget
from napari_dan.model import DEFAULT_MODEL, create_model

OUT = Path(__file__).resolve().parent / "images"
SIZE = (1360, 900)


def _model(arg: str | None, in_nc: int, scale: int):
    if arg:
        return load_model(arg), f"model {arg}"
    names = {m["name"] for m in list_models()}
    wanted = DEFAULT_MODEL if in_nc == 3 else f"dan-x{scale}-gray"
    if wanted in names:
        return load_model(wanted), f"bundled model {wanted}"
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


def _focus(viewer: napari.Viewer, layers, margin: float = 0.15) -> None:
    """Centre the camera on the world bounding box of ``layers``."""
    lo = np.min([ly.extent.world[0][-2:] for ly in layers], axis=0)
    hi = np.max([ly.extent.world[1][-2:] for ly in layers], axis=0)
    viewer.camera.center = tuple((lo + hi) / 2)
    native = viewer.window._qt_viewer.canvas.native  # the Qt widget: unambiguous width/height
    width, height = native.width(), native.height()
    span = (hi - lo) * (1 + 2 * margin)                   # world: (y, x)
    viewer.camera.zoom = float(min(height / span[0], width / span[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", help="model name or checkpoint for both samples")
    args = p.parse_args()
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
    viewer.layers["cell"].visible = False  # the SR layer overlays it exactly
    viewer.layers.selection.active = viewer.layers["cell DAN x4"]
    _focus(viewer, [viewer.layers["cell DAN x4"], viewer.layers["cell kernel"]], margin=0.03)
    _shot(viewer, "widget_after.png")
    viewer.layers.selection.active = viewer.layers["cell kernel"]
    _focus(viewer, [viewer.layers["cell kernel"], viewer.layers["cell true kernel"]], margin=0.6)
    viewer.text_overlay.visible = True
    viewer.text_overlay.text = "top: 'cell kernel' (estimated)\nbottom: 'cell true kernel'"
    viewer.text_overlay.font_size = 14
    _shot(viewer, "kernel_layer.png")
    viewer.text_overlay.visible = False
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
