"""The dock widget "Blind super-resolution (DAN)": choices in, layers out, the GUI never blocked.

The widget only collects choices and shows state. Checking the input and working out the axes is
:mod:`napari_dan._napari.request`; running the engine off the GUI thread is
:mod:`napari_dan._napari.worker`; turning results into layers (and replace-or-version on re-runs)
is :mod:`napari_dan._napari.results`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from magicgui.widgets import ComboBox
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import Cancelled, DanError
from ..model import DEFAULT_MODEL, GREY_MODEL, DanModel, list_models, load_model
from ..model.kernels import kernel_stats
from .request import KERNEL_MODES, SCOPES, RunOptions, build_request, psf_from_layer
from .results import KEY, add_result_layers, physical_pixel, result_layers
from .worker import sr_worker

if TYPE_CHECKING:
    import napari

__all__ = ["DanWidget"]

LOAD_CHECKPOINT = "Load checkpoint..."
NO_MODELS = ("No bundled models are installed. Use 'Load checkpoint...' to open a napari-dan "
             "checkpoint (.pt) or one of the authors' DANv1/DANv2 releases (.pth).")


def _channels(n: int) -> str:
    return "RGB" if n == 3 else "gray" if n == 1 else f"{n} ch"


def _spots_line(spots: dict, px: float | None, unit: str | None) -> str:
    """One line on the PSF measured from isolated spots, on the output (HR) grid."""
    g = spots["output_grid"]
    text = (f"PSF from {spots['n_spots']} isolated spots (HR grid): FWHM {g['fwhm_px']:.2f} px "
            f"(major {g['fwhm_major_px']:.2f}, minor {g['fwhm_minor_px']:.2f})")
    if px:
        text += f" = {g['fwhm_px'] * px:.4g} {unit or ''}".rstrip()
    return text + f", angle {g['angle_deg']:.0f} deg"


def _model_label(name: str, scale: int, in_channels: int) -> str:
    return f"{name}  (x{scale}, {_channels(in_channels)})"


class DanWidget(QWidget):
    """Super-resolve an image layer with a DAN model and show the estimated kernel.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers the widget reads and adds to.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._worker = None
        self._cancel: threading.Event | None = None
        self._last_model_index = 0
        self.last_result = None       # (request, model, SRResult) of the last finished run
        self.last_layers: list = []   # the layers it added or replaced

        self._build_ui()
        self._fill_models()
        # the layer choosers are magicgui ComboBoxes; napari calls reset_choices whenever a
        # layer is added, removed, moved or renamed (as for any magicgui dock widget)
        self.reset_choices()

    # ---------------------------------------------------------------- UI
    def _build_ui(self) -> None:
        self.layer_box = ComboBox(choices=self._source_choices,
                                  tooltip="Image layer to super-resolve (RGB, grey, any dtype)")
        self.layer_combo = self.layer_box.native
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("A bundled model, or 'Load checkpoint...' for a file of "
                                    "ours or of the authors' DANv1/DANv2 releases")
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(list(KERNEL_MODES))
        self.mode_combo.setToolTip(
            "global: one kernel for the image/stack; per plane: one per plane of a stack; "
            "per tile: one per tile (a PSF map); PSF from layer: a known PSF (non-blind); "
            "PSF from spots: measured from isolated beads/puncta of the image (non-blind)")
        self.psf_box = ComboBox(choices=self._psf_choices,
                                tooltip="Image layer holding the PSF on the high-resolution grid")
        self.psf_combo = self.psf_box.native
        self.scope_combo = QComboBox()
        self.scope_combo.addItems(list(SCOPES))
        self.scope_combo.setToolTip("For stacks: the plane under the dims slider, or every plane")
        self.residual_check = QCheckBox("add the residual map")
        self.residual_check.setToolTip(
            "Consistency check: the input minus the result blurred with its kernel and sampled "
            "back to the input grid. Flat noise means consistent; structure marks what the "
            "network invented or lost. Its relative size is always shown below.")
        self.pixel_spin = QDoubleSpinBox()
        self.pixel_spin.setRange(0.0, 1000.0)
        self.pixel_spin.setDecimals(4)
        self.pixel_spin.setSingleStep(0.01)
        self.pixel_spin.setSuffix(" µm")
        self.pixel_spin.setSpecialValueText("from layer or file")
        self.pixel_spin.setToolTip(
            "Input pixel size, for the PSF's width in µm. Left at 0: the layer's scale and units, "
            "else what its TIFF file states (napari's own reader drops it).")
        self.channel_combo = QComboBox()
        self.channel_combo.setToolTip("Axis of independent channels (each is run as a gray "
                                      "image); RGB layers use their colour axis")

        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSingleStep(32)
        self.tile_spin.setSpecialValueText("auto")
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setToolTip("Tile side in input pixels; auto fits the device memory")
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(-1, 512)
        self.overlap_spin.setValue(-1)
        self.overlap_spin.setSpecialValueText("auto")
        self.overlap_spin.setSuffix(" px")
        self.overlap_spin.setToolTip("Overlap of neighbouring tiles in input pixels; auto covers "
                                     "the network's receptive field")
        self.device_combo = QComboBox()
        devices = ["auto", "cpu"]
        if torch.cuda.is_available():
            devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            devices.append("mps")
        self.device_combo.addItems(devices)
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(["auto", "fp32", "fp16", "bf16"])
        self.precision_combo.setToolTip("auto: bf16/fp16 on GPUs, fp32 on most CPUs")

        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        # progress lives in the widget itself (napari's global activity dialog re-enters the Qt
        # event loop from inside the worker's signal and crashed the GUI tests on some machines)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v / %m")
        self.progress_bar.setVisible(False)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.kernel_label = QLabel("Kernel: (run to estimate)")
        self.kernel_label.setWordWrap(True)
        self.kernel_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Image", self.layer_combo)
        form.addRow("Model", self.model_combo)
        form.addRow("", self.model_info)
        form.addRow("Kernel", self.mode_combo)
        form.addRow("PSF layer", self.psf_combo)
        form.addRow("Stack", self.scope_combo)
        form.addRow("Channel axis", self.channel_combo)
        form.addRow("Pixel size", self.pixel_spin)
        form.addRow("Check", self.residual_check)
        adv = QGroupBox("Tiles and device")
        adv_form = QFormLayout(adv)
        adv_form.addRow("Tile size", self.tile_spin)
        adv_form.addRow("Overlap", self.overlap_spin)
        adv_form.addRow("Device", self.device_combo)
        adv_form.addRow("Precision", self.precision_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(adv)
        lay.addLayout(buttons)
        lay.addWidget(self.progress_bar)
        lay.addWidget(self.status)
        lay.addWidget(self.kernel_label)
        lay.addStretch(1)

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        # a model picked by hand is kept; until then the model follows the layer (grey or RGB)
        self.model_combo.activated.connect(lambda *_: setattr(self, "_model_chosen", True))
        self.layer_box.changed.connect(self._on_layer_changed)
        self.mode_combo.currentIndexChanged.connect(self._update_enabled)

    def _message(self, text: str, level: str = "info") -> None:
        """Show ``text`` in the widget and as a napari notification."""
        self.status.setText(text)
        {"error": show_error, "warning": show_warning}.get(level, show_info)(text)

    # ---------------------------------------------------------------- models
    def _fill_models(self) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        try:
            bundled = list_models()
        except Exception as exc:  # a broken weights folder must not take the widget down
            bundled = []
            self.status.setText(f"could not list the bundled models: {exc}")
        for m in bundled:
            self.model_combo.addItem(_model_label(m["name"], m["scale"], m["in_channels"]),
                                     ("bundled", m))
        if not bundled:
            self.model_combo.addItem("(no bundled model)", None)
            self.status.setText(NO_MODELS)
        self.model_combo.addItem(LOAD_CHECKPOINT, ("load", None))
        self.model_combo.setCurrentIndex(0)
        self.model_combo.blockSignals(False)
        self._last_model_index = 0
        self._show_model_info()

    def add_model(self, model: DanModel) -> None:
        """Offer an already loaded model (from a checkpoint or a script) and select it."""
        combo = self.model_combo
        combo.blockSignals(True)  # removing the placeholder must not select "Load checkpoint..."
        if combo.itemData(0) is None:  # the "(no bundled model)" placeholder
            combo.removeItem(0)
        index = combo.count() - 1  # just before "Load checkpoint..."
        src = getattr(model, "source", None)
        label = Path(str(src)).name if src and Path(str(src)).suffix else model.name
        combo.insertItem(index, _model_label(label, model.scale, model.in_channels),
                         ("model", model))
        combo.setCurrentIndex(index)
        combo.blockSignals(False)
        self._last_model_index = index
        self._show_model_info()
        if self.status.text() == NO_MODELS:
            self.status.setText("")

    def load_checkpoint(self, path: str | Path) -> DanModel | None:
        """Load a checkpoint file and select it; a bad file gives a message, not a crash."""
        try:
            model = load_model(Path(path))
        except DanError as exc:
            self._message(str(exc), "error")
            return None
        except Exception as exc:  # torch's own errors on a file that is no checkpoint at all
            self._message(f"could not load {path}: {type(exc).__name__}: {exc}", "error")
            return None
        self.add_model(model)
        self._message(f"loaded {Path(path).name}: {model.architecture}, x{model.scale}, "
                      f"{_channels(model.in_channels)}")
        return model

    def _on_model_changed(self, index: int) -> None:
        data = self.model_combo.itemData(index)
        if data is not None and data[0] == "load":
            path, _ = QFileDialog.getOpenFileName(
                self, "Load a DAN checkpoint", str(Path.home()),
                "Checkpoints (*.pt *.pth *.ckpt);;All files (*)")
            self.model_combo.blockSignals(True)
            self.model_combo.setCurrentIndex(self._last_model_index)
            self.model_combo.blockSignals(False)
            if path:
                self.load_checkpoint(path)
        self._last_model_index = self.model_combo.currentIndex()
        self._show_model_info()

    def selected_model(self) -> Any:
        """A bundled model's name, a loaded :class:`DanModel`, or None."""
        data = self.model_combo.currentData()
        if not data or data[0] == "load":
            return None
        return data[1]["name"] if data[0] == "bundled" else data[1]

    def _model_facts(self) -> dict | None:
        data = self.model_combo.currentData()
        if not data or data[0] == "load":
            return None
        if data[0] == "bundled":
            return data[1]
        m = data[1]
        return {"name": m.name, "architecture": m.architecture, "scale": m.scale,
                "in_channels": m.in_channels, "kernel_size": m.kernel_size,
                "iterations": m.iterations, "description": m.description}

    def _show_model_info(self) -> None:
        f = self._model_facts()
        if f is None:
            self.model_info.setText("no model selected")
            return
        text = (f"{f.get('architecture', 'DAN')}, x{f['scale']}, {_channels(f['in_channels'])}, "
                f"{f['kernel_size']}x{f['kernel_size']} kernel, {f['iterations']} iterations")
        if f.get("description"):
            text += f"\n{f['description']}"
        self.model_info.setText(text)

    # ---------------------------------------------------------------- layers
    def _image_layers(self) -> list:
        from napari.layers import Image

        return [ly for ly in self.viewer.layers if isinstance(ly, Image)]

    def _source_choices(self, _widget=None) -> list[tuple[str, Any]]:
        """Image layers that can be super-resolved (not our kernel layers, not a sample's true
        kernel)."""
        own = {"kernel", "kernel map"}
        layers = [ly for ly in self._image_layers()
                  if not (isinstance(ly.metadata.get(KEY), dict)
                          and ly.metadata[KEY].get("kind") in own)
                  and ly.metadata.get("napari_dan_sample", {}).get("role") != "true kernel"]
        return [(ly.name, ly) for ly in layers] or [("(no image layer: open an image)", None)]

    def _psf_choices(self, _widget=None) -> list[tuple[str, Any]]:
        layers = [ly for ly in self._image_layers() if not ly.rgb]
        return [(ly.name, ly) for ly in layers] or [("(no image layer)", None)]

    def reset_choices(self, *_) -> None:
        """Re-read the viewer's layers into the choosers (napari calls this on every layer
        added, removed, moved or renamed). A choice that still exists is kept; otherwise the
        active layer is picked, else the top one."""
        for box in (self.layer_box, self.psf_box):
            before = box.value
            with box.changed.blocked():
                box.native.clear()  # magicgui keeps old items first; list in the viewer's order
                box.reset_choices()
                layers = [v for v in box.choices if v is not None]
                if before is None or not any(ly is before for ly in layers):
                    active = self.viewer.layers.selection.active
                    before = active if any(ly is active for ly in layers) else (
                        layers[-1] if layers else None)
                box.value = before
        self._on_layer_changed()

    def selected_layer(self):
        return self.layer_combo.currentData()

    def _suggest_model(self, layer) -> None:
        """Until a model is picked by hand: the microscopy model for grey layers, the default
        (photo) model for RGB ones, when both are bundled."""
        if getattr(self, "_model_chosen", False) or layer is None:
            return
        want = DEFAULT_MODEL if layer.rgb else GREY_MODEL
        cur = self.model_combo.currentData()
        if cur is None or cur[0] != "bundled" or cur[1]["name"] == want:
            return
        for i in range(self.model_combo.count()):
            d = self.model_combo.itemData(i)
            if d is not None and d[0] == "bundled" and d[1]["name"] == want:
                self.model_combo.setCurrentIndex(i)
                return

    def _on_layer_changed(self, *_) -> None:
        layer = self.selected_layer()
        self._suggest_model(layer)
        self.channel_combo.clear()
        if layer is None:
            self.channel_combo.addItem("auto", "auto")
        elif layer.rgb:
            self.channel_combo.addItem("RGB (colour axis)", "auto")
        else:
            self.channel_combo.addItem("none", "auto")
            shape = layer.data[0].shape if layer.multiscale else layer.data.shape
            for a, n in enumerate(shape[:-2]):
                self.channel_combo.addItem(f"axis {a} ({n} channels)", a)
        self._update_enabled()

    def _update_enabled(self, *_) -> None:
        layer = self.selected_layer()
        running = self._worker is not None
        self.psf_combo.setEnabled(KERNEL_MODES[self.mode_combo.currentText()] == "psf")
        self.scope_combo.setEnabled(layer is not None and layer.ndim > 2)
        self.channel_combo.setEnabled(layer is not None and not layer.rgb and layer.ndim > 2)
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    # ---------------------------------------------------------------- running
    def options(self) -> RunOptions:
        """The current choices as plain values."""
        mode = KERNEL_MODES[self.mode_combo.currentText()]
        psf = psf_name = None
        if mode == "psf":
            psf_layer = self.psf_combo.currentData()
            psf = psf_from_layer(psf_layer, self.viewer.dims.point)
            psf_name = psf_layer.name
        tile = self.tile_spin.value()
        overlap = self.overlap_spin.value()
        return RunOptions(model=self.selected_model(), tile_size=tile if tile > 0 else "auto",
                          tile_overlap=overlap if overlap >= 0 else "auto", kernel_mode=mode,
                          psf=psf, psf_name=psf_name, device=self.device_combo.currentText(),
                          precision=self.precision_combo.currentText(),
                          scope=SCOPES[self.scope_combo.currentText()],
                          channel_axis=self.channel_combo.currentData(),
                          residual=self.residual_check.isChecked(),
                          pixel_size=self.pixel_spin.value() or None)

    @property
    def is_running(self) -> bool:
        return self._worker is not None

    def run(self, layer=None) -> None:
        """Start a run on ``layer`` (default: the chosen one) in a thread worker."""
        if self._worker is not None:
            self._message("a run is already going; cancel it first", "warning")
            return
        layer = self.selected_layer() if layer is None or isinstance(layer, bool) else layer
        try:
            options = self.options()
            if options.model is None:
                raise DanError(NO_MODELS if self.model_combo.itemData(0) is None
                               else "choose a model first")
            request = build_request(layer, options, self.viewer.dims.point)
        except DanError as exc:
            self._message(str(exc), "error")
            return
        self._cancel = threading.Event()
        worker = sr_worker(request, options.model, self._cancel)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda out, req=request: self._on_returned(req, out))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda: self._on_error(Cancelled("stopped")))
        worker.finished.connect(self._on_finished)
        worker.warned.connect(lambda w: self._message(str(w[0]), "warning"))
        self._worker = worker
        self._update_enabled()
        self.status.setText(f"running on {layer.name!r}..." +
                            ("\n" + "; ".join(request.notes) if request.notes else ""))
        worker.start()

    def cancel(self) -> None:
        """Stop at the next tile; no layer is added or changed."""
        if self._cancel is not None:
            self._cancel.set()
            self.status.setText("cancelling at the next tile...")

    def _on_progress(self, value) -> None:
        done, total = value
        bar = self.progress_bar
        if bar.maximum() != total:  # the engine re-tiles after running out of memory
            bar.setMaximum(max(int(total), 1))
        bar.setValue(int(done))
        bar.setVisible(True)

    def _on_returned(self, request, out) -> None:
        model, result = out
        try:
            tuples = result_layers(request, result, model.name, model.scale)
            self.last_layers = add_result_layers(self.viewer, tuples)
        except Exception as exc:  # a bug here must not leave the widget stuck in "running"
            self._message(f"the result could not be shown: {type(exc).__name__}: {exc}", "error")
            return
        self.last_result = (request, model, result)
        self._show_kernel(request, model, result)
        notes = "; ".join(request.notes)
        self.status.setText(f"done: added {', '.join(repr(ly.name) for ly in self.last_layers)}"
                            + (f"\n{notes}" if notes else ""))

    def _show_kernel(self, request, model, result) -> None:
        px, unit = physical_pixel(request, model.scale)
        st = kernel_stats(result.kernel, px, unit)
        lines = [f"Kernel ({model.name}, HR grid): {st.summary()}"]
        if len(result.kernels) > 1:
            fwhm = np.array([kernel_stats(k).fwhm for k in result.kernels])
            what = "tiles" if request.options.kernel_mode == "per-tile" else "planes"
            lines.append(f"{len(fwhm)} {what}: FWHM {fwhm.min():.2f} to {fwhm.max():.2f} px "
                         f"(the line above is their mean kernel)")
        meta = result.metadata
        if meta.get("spots"):
            lines[0] = f"Kernel used ({model.name}, HR grid): {st.summary()}"
            lines.insert(0, _spots_line(meta["spots"], px, unit))
        spots = meta.get("spots_comparison") or {}
        if "kernel" in spots:
            lines.append(_spots_line(spots, px, unit))
        elif "unavailable" in spots:
            lines.append("PSF from spots: none measured (no isolated beads or puncta)")
        cons = meta.get("consistency")
        if cons:
            per = cons["per_plane"]
            rng = f" (planes {min(per):.3f} to {max(per):.3f})" if len(per) > 1 else ""
            lines.append(f"Consistency residual {cons['relative_residual']:.3f}{rng}: input vs "
                         "result re-blurred and sampled back (includes noise)")
        self.kernel_label.setText("\n".join(lines))

    def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, Cancelled):
            self._message("cancelled: no layers were added or changed")
        elif isinstance(exc, DanError):
            self._message(str(exc), "error")
        else:
            self._message(f"super-resolution failed: {type(exc).__name__}: {exc}", "error")

    def _on_finished(self) -> None:
        self.progress_bar.setVisible(False)
        self.progress_bar.reset()
        self._worker = None
        self._cancel = None
        self._update_enabled()
