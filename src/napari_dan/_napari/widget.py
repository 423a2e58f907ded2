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

import torch  # noqa: F401  (before Qt: PyTorch imported after Qt has crashed on some machines)
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
)
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QFrame,
    QGroupBox,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..engine.devices import available_devices
from ..errors import Cancelled, DanError, EstimateWarning
from ..imaging.psf import OPTICS_FIELDS, Optics
from ..model import DEFAULT_MODEL, GREY_MODEL, DanModel, list_models, load_model
from ..model.kernels import kernel_stats
from ..samples import model_for_sample
from .request import (
    KERNEL_MODES,
    SCOPES,
    RunOptions,
    build_request,
    psf_from_layer,
    spatial_axes,
    stated_pixel,
)
from .results import KEY, add_result_layers, physical_pixel, result_layers
from .worker import sr_worker

if TYPE_CHECKING:
    import napari

__all__ = ["DanWidget"]

LOAD_CHECKPOINT = "Load checkpoint..."
LOAD = ("load", None)  # the model chooser's value for "Load checkpoint..."
NO_MODELS = ("No bundled models are installed. Use 'Load checkpoint...' to open a napari-dan "
             "checkpoint (.pt) or one of the authors' DANv1/DANv2 releases (.pth).")


def _channels(n: int) -> str:
    return "RGB" if n == 3 else "gray" if n == 1 else f"{n} ch"


def _spots_line(spots: dict, px: float | None, unit: str | None, of: str = "") -> str:
    """One line on the PSF measured from isolated spots, on the output (HR) grid (``of``: the
    layer's name, for the text's first line)."""
    g = spots["output_grid"]
    err = spots.get("fwhm_rel_error")
    sure = f" ±{100 * err:.1f}%" if err is not None and err == err and err < 1 else ""
    plane = spots.get("plane") or []  # the stack's brightest plane, where they were measured
    where = f" of plane {', '.join(str(i) for i in plane)}" if plane else ""
    text = (f"PSF{of} from {spots['n_spots']} isolated spots{where} (HR grid): FWHM "
            f"{g['fwhm_px']:.2f} px{sure} (major {g['fwhm_major_px']:.2f}, minor {g['fwhm_minor_px']:.2f})")
    if px:
        text += f" = {g['fwhm_px'] * px:.4g} {unit or ''}".rstrip()
    return text + f", angle {g['angle_deg']:.0f} deg"


def _is_original(layer) -> bool:
    """A sample's hidden original (the answer to compare with, not an input)."""
    md = getattr(layer, "metadata", None)
    return isinstance(md, dict) and md.get("napari_dan_sample", {}).get("role") == "original"


def _is_psf(layer) -> bool:
    """A layer that holds a PSF: a sample's true kernel, or a kernel or spots PSF of a run."""
    md = getattr(layer, "metadata", None)
    if not isinstance(md, dict):
        return False
    own = md.get(KEY)
    return (md.get("napari_dan_sample", {}).get("role") == "true kernel"
            or (isinstance(own, dict) and own.get("kind") in ("kernel", "spots PSF")))


def _model_label(name: str, scale: int, in_channels: int) -> str:
    return f"{name} (x{scale}, {_channels(in_channels)})"


class _DownScroll(QScrollArea):
    """A scroll area that may be short but is never narrower than its widget's minimum (a
    plain one let napari's dock cut the form's right side off)."""

    def minimumSizeHint(self):  # noqa: N802 (Qt's name)
        hint = super().minimumSizeHint()
        inner = self.widget()
        if inner is not None:
            hint.setWidth(inner.minimumSizeHint().width()
                          + self.verticalScrollBar().sizeHint().width())
        return hint


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
        self._models: list[tuple[str, Any]] = []  # (label, value) of the models on offer
        self._last_model = None
        self.last_result = None       # (request, model, SRResult) of the last finished run
        self.last_layers: list = []   # the layers it added or replaced

        self._build_ui()
        self._align_labels()  # again when shown, in napari's font
        self._fill_models()
        # the layer choosers are magicgui ComboBoxes; napari calls reset_choices whenever a
        # layer is added, removed, moved or renamed (as for any magicgui dock widget)
        self.reset_choices()

    # ---------------------------------------------------------------- UI
    def _build_ui(self) -> None:
        """The form is built from magicgui widgets; Qt only where magicgui has nothing (the
        group box, special "auto" values, a spin box's suffix, word wrap, the file dialog).
        The ``*_box``/``*_button`` attributes are the magicgui widgets; ``layer_combo``,
        ``mode_combo``, ``tile_spin``... are their Qt widgets, for tests and scripts."""
        self.layer_box = ComboBox(label="Image", choices=self._source_choices,
                                  tooltip="Image layer to super-resolve (RGB, grey, any dtype)")
        self.model_box = ComboBox(label="Model", choices=self._model_choices,
                                  tooltip="A bundled model, or 'Load checkpoint...' for a file of "
                                  "ours or of the authors' DANv1/DANv2 releases")
        self.model_info_box = Label(label="")
        self.mode_box = ComboBox(label="Kernel", choices=list(KERNEL_MODES), tooltip=(
            "global: one kernel for the image/stack; per plane: one per plane of a stack; "
            "per tile: one per tile (a PSF map); PSF from layer: a known PSF (non-blind); "
            "PSF from spots: measured from isolated beads/puncta of the image (non-blind); "
            "PSF from optics: the theoretical PSF of the objective's NA, the emission "
            "wavelength and the pixel size (non-blind; a lower bound on a real PSF)"))
        self.psf_box = ComboBox(label="PSF layer", choices=self._psf_choices,
                                tooltip="Image layer holding the PSF on the high-resolution grid")
        self.na_box = FloatSpinBox(label="NA", min=0.05, max=1.65, step=0.05, value=1.4,
                                   tooltip="Numerical aperture of the objective")
        self.emission_box = FloatSpinBox(label="Emission", min=200, max=2000, step=10, value=520,
                                         tooltip="Emission wavelength")
        self.excitation_box = FloatSpinBox(
            label="Excitation", min=0, max=2000, step=10, value=0,
            tooltip="Excitation wavelength for a confocal PSF (pinhole closed); left at "
            "'widefield' for a widefield PSF. With a pinhole of about one Airy unit the "
            "lateral PSF lies between the two.")
        self.immersion_box = FloatSpinBox(label="Immersion n", min=1.0, max=1.8, step=0.01,
                                          value=1.515, tooltip="Refractive index of the "
                                          "immersion medium: 1.515 oil, 1.33 water, 1.0 air")
        self.scope_box = ComboBox(label="Stack", choices=list(SCOPES),
                                  tooltip="For stacks: the plane under the dims slider, or every plane")
        self.channel_box = ComboBox(label="Channel axis", choices=[("auto", "auto")],
                                    tooltip="Axis of independent channels (each is run as a gray "
                                    "image); RGB layers use their colour axis")
        self.pixel_box = FloatSpinBox(
            label="Pixel size", min=0.0, max=1000.0, step=0.01, value=0.0,
            tooltip="Input pixel size, for the PSF's width in µm. Left at 0: the layer's scale and "
            "units, else what its TIFF file states (napari's own reader drops it).")
        self.residual_box = CheckBox(text="add the residual map", tooltip=(
            "Consistency check: the input minus the result blurred with its kernel and sampled "
            "back to the input grid. Flat noise means consistent; structure marks what the "
            "network invented or lost. Its relative size is always shown below."))
        # whole numbers in float spin boxes: magicgui's integer spin box cannot show "auto"
        self.tile_box = FloatSpinBox(label="Tile size", min=0, max=8192, step=32, value=0,
                                     tooltip="Tile side in input pixels; auto fits the device memory")
        self.overlap_box = FloatSpinBox(label="Overlap", min=-1, max=512, step=1, value=-1,
                                        tooltip="Overlap of neighbouring tiles in input pixels; "
                                        "auto covers the network's receptive field")
        self.device_box = ComboBox(label="Device", choices=available_devices())
        self.precision_box = ComboBox(label="Precision", choices=["auto", "fp32", "fp16", "bf16"],
                                      tooltip="auto: bf16/fp16 on GPUs, fp32 on most CPUs")
        self.run_box = PushButton(text="Run")
        self.cancel_box = PushButton(text="Cancel", enabled=False)
        # progress lives in the widget itself (napari's global activity dialog re-enters the Qt
        # event loop from inside the worker's signal and crashed the GUI tests on some machines)
        self.progress_box = ProgressBar(visible=False)
        self.status_box = Label()
        self.kernel_box = Label(value="Kernel: (run to estimate)")

        # Qt where magicgui has nothing
        for box, suffix in ((self.emission_box, " nm"), (self.excitation_box, " nm")):
            box.native.setDecimals(0)
            box.native.setSuffix(suffix)
        self.excitation_box.native.setSpecialValueText("widefield")
        self.immersion_box.native.setDecimals(3)
        self.immersion_box.value = 1.515  # set again: magicgui made the box with 2 decimals
        self.pixel_box.native.setDecimals(4)
        self.pixel_box.native.setSuffix(" µm")
        self.pixel_box.native.setSpecialValueText("from layer or file")
        for box in (self.tile_box, self.overlap_box):
            box.native.setDecimals(0)
            box.native.setSpecialValueText("auto")
            box.native.setSuffix(" px")
        self.progress_box.native.setFormat("%v / %m")
        for label in (self.model_info_box, self.status_box, self.kernel_box):
            label.native.setWordWrap(True)
        for label in (self.status_box, self.kernel_box):
            # wrap at the width the dock gives: a long result text must not widen the dock
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.kernel_box.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # the Qt widgets under the magicgui ones (tests and scripts drive these)
        self.layer_combo, self.model_combo = self.layer_box.native, self.model_box.native
        self.model_info, self.mode_combo = self.model_info_box.native, self.mode_box.native
        self.psf_combo, self.scope_combo = self.psf_box.native, self.scope_box.native
        self.channel_combo, self.pixel_spin = self.channel_box.native, self.pixel_box.native
        self.residual_check, self.tile_spin = self.residual_box.native, self.tile_box.native
        self.overlap_spin, self.device_combo = self.overlap_box.native, self.device_box.native
        self.precision_combo, self.run_button = self.precision_box.native, self.run_box.native
        self.cancel_button, self.progress_bar = self.cancel_box.native, self.progress_box.native
        self.status, self.kernel_label = self.status_box.native, self.kernel_box.native

        # magicgui never labels a check box in a form: a one-widget row gives it its label
        # ("Check", as in the user guide), aligned with the other fields
        check_row = Container(widgets=[self.residual_box], label="Check", labels=False,
                              layout="horizontal")
        form = Container(widgets=[self.layer_box, self.model_box, self.model_info_box,
                                  self.mode_box, self.psf_box, *self._optics_boxes(),
                                  self.scope_box, self.channel_box,
                                  self.pixel_box, check_row], labels=True)
        advanced = Container(widgets=[self.tile_box, self.overlap_box, self.device_box,
                                      self.precision_box], labels=True)
        buttons = Container(widgets=[self.run_box, self.cancel_box], layout="horizontal",
                            labels=False)
        for c in (form, advanced, buttons, check_row):
            c.margins = (0, 0, 0, 0)
        group = QGroupBox("Tiles and device")
        QVBoxLayout(group).addWidget(advanced.native)
        # the form scrolls: napari's dock can then shrink below its full height (at 1024 x 768
        # its last lines, the run's results, were cut off with no way to reach them)
        inner = QWidget()
        lay = QVBoxLayout(inner)
        for w in (form.native, group, buttons.native, self.progress_bar, self.status,
                  self.kernel_label):
            lay.addWidget(w)
        lay.addStretch(1)
        self.scroll_area = _DownScroll()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll_area.setWidget(inner)
        # it scrolls down, not sideways: the dock keeps the form's width
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll_area)
        self._containers = (form, advanced, buttons, check_row)  # alive with the widget

        self.run_box.changed.connect(lambda *_: self.run())
        self.cancel_box.changed.connect(lambda *_: self.cancel())
        self.model_box.changed.connect(self._on_model_changed)
        # a model picked by hand is kept; until then the model follows the layer (grey or RGB);
        # Qt's "activated" fires on the user's picks only (magicgui's "changed" on every change)
        self.model_combo.activated.connect(lambda *_: setattr(self, "_model_chosen", True))
        self.layer_combo.activated.connect(lambda *_: setattr(self, "_layer_chosen", True))
        self.psf_combo.activated.connect(lambda *_: setattr(self, "_psf_chosen", True))
        self.layer_box.changed.connect(self._on_layer_changed)
        self.mode_box.changed.connect(self._update_enabled)
        self.channel_box.changed.connect(self._update_enabled)

    def _optics_boxes(self) -> tuple:
        return self.na_box, self.emission_box, self.excitation_box, self.immersion_box

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """Align the form's labels once napari's style (its font) is applied: magicgui sizes
        them with the default font, so rows with long labels would start further right."""
        super().showEvent(event)
        self._align_labels()

    def _align_labels(self) -> None:
        labels = [lab for c in self._containers[:2] for row in c
                  if (lab := getattr(row, "_labeled_widget", lambda: None)()) is not None]
        width = max((lab._label_widget.native.sizeHint().width() for lab in labels), default=0)
        for lab in labels:
            lab._label_widget.native.setMinimumWidth(width)
        self.scroll_area.updateGeometry()  # the form's width may have changed

    def _alive(self) -> bool:
        """False once Qt has deleted the widget (its viewer was closed during a run): the
        worker's last signals then have nowhere to go and are dropped."""
        try:
            self.status_box.native.objectName()
            return True
        except RuntimeError:
            return False

    def _message(self, text: str, level: str = "info") -> None:
        """Show ``text`` in the widget and as a napari notification."""
        if not self._alive():
            return
        self.status_box.value = text
        {"error": show_error, "warning": show_warning}.get(level, show_info)(text)

    # ---------------------------------------------------------------- models
    def _model_choices(self, _widget=None) -> list[tuple[str, Any]]:
        """The models on offer (label, ("bundled", facts) or ("model", DanModel)), then
        "Load checkpoint..."."""
        models = list(getattr(self, "_models", []))
        return (models or [("(no bundled model)", None)]) + [(LOAD_CHECKPOINT, LOAD)]

    def _select_model(self, value) -> None:
        """Re-list the models and select ``value`` without firing the change handler."""
        box = self.model_box
        with box.changed.blocked():
            box.native.clear()  # a fresh list, in our order
            box.reset_choices()
            box.value = value
        self._last_model = value
        self._show_model_info()

    def _fill_models(self) -> None:
        try:
            bundled = list_models()
        except Exception as exc:  # a broken weights folder must not take the widget down
            bundled = []
            self.status_box.value = f"could not list the bundled models: {exc}"
        self._models = [(_model_label(m["name"], m["scale"], m["in_channels"]), ("bundled", m))
                        for m in bundled]
        if not bundled:
            self.status_box.value = NO_MODELS
        self._select_model(self._models[0][1] if self._models else None)

    def add_model(self, model: DanModel) -> None:
        """Offer an already loaded model (from a checkpoint or a script) and select it."""
        src = getattr(model, "source", None)
        name = Path(str(src)).name if src and Path(str(src)).suffix else model.name
        labels = {t for t, _ in self._models}
        label, n = _model_label(name, model.scale, model.in_channels), 1
        while label in labels:  # magicgui merges items of equal text
            tag = "loaded" if n == 1 else f"loaded {n}"
            label, n = _model_label(f"{name}, {tag}", model.scale, model.in_channels), n + 1
        self._models.append((label, ("model", model)))
        self._select_model(("model", model))
        if self.status_box.value == NO_MODELS:
            self.status_box.value = ""

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

    def _on_model_changed(self, value) -> None:
        if value == LOAD:
            path, _ = QFileDialog.getOpenFileName(
                self, "Load a DAN checkpoint", str(Path.home()),
                "Checkpoints (*.pt *.pth *.ckpt);;All files (*)")
            self._select_model(self._last_model)
            if path:
                self.load_checkpoint(path)
            return
        self._last_model = value
        self._show_model_info()

    def selected_model(self) -> Any:
        """A bundled model's name, a loaded :class:`DanModel`, or None."""
        data = self.model_box.value
        if not data or data == LOAD:
            return None
        return data[1]["name"] if data[0] == "bundled" else data[1]

    def _model_facts(self) -> dict | None:
        data = self.model_box.value
        if not data or data == LOAD:
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
            self.model_info_box.value = "no model selected"
            return
        text = (f"{f.get('architecture', 'DAN')}, x{f['scale']}, {_channels(f['in_channels'])}, "
                f"{f['kernel_size']}x{f['kernel_size']} kernel, {f['iterations']} iterations")
        # the description (a paragraph for our models) as the tooltip: shown in the form, its
        # wrapped width made the dock at least 673 px wide and left the image little room
        self.model_info_box.value = text
        self.model_info.setToolTip(f.get("description") or "")

    # ---------------------------------------------------------------- layers
    def _image_layers(self) -> list:
        from napari.layers import Image

        return [ly for ly in self.viewer.layers if isinstance(ly, Image)]

    def _source_choices(self, _widget=None) -> list[tuple[str, Any]]:
        """Image layers that can be super-resolved: of the layers this plugin makes only the
        super-resolved images (not kernels, spots PSFs, kernel maps, residuals), and not a
        sample's true kernel. A sample's hidden original is offered but never picked by itself:
        with no other layer the list starts with an empty choice."""
        layers = [ly for ly in self._image_layers()
                  if not (isinstance(ly.metadata.get(KEY), dict)
                          and ly.metadata[KEY].get("kind") != "super-resolved")
                  and ly.metadata.get("napari_dan_sample", {}).get("role") != "true kernel"]
        if not layers:
            return [("(no image layer: open an image)", None)]
        if all(_is_original(ly) for ly in layers):
            return [("(choose an image layer)", None)] + [(ly.name, ly) for ly in layers]
        return [(ly.name, ly) for ly in layers]

    def _psf_choices(self, _widget=None) -> list[tuple[str, Any]]:
        layers = [ly for ly in self._image_layers() if not ly.rgb]
        return [(ly.name, ly) for ly in layers] or [("(no image layer)", None)]

    def reset_choices(self, *_) -> None:
        """Re-read the viewer's layers into the choosers (napari calls this on every layer
        added, removed, moved or renamed). A choice that still exists is kept; otherwise the
        active layer is picked, else the top one."""
        for box, chosen in ((self.layer_box, "_layer_chosen"), (self.psf_box, "_psf_chosen")):
            before = box.value
            with box.changed.blocked():
                box.native.clear()  # magicgui keeps old items first; list in the viewer's order
                box.reset_choices()
                layers = [v for v in box.choices if v is not None]
                order = [ly for ly in self.viewer.layers if any(ly is c for c in layers)]
                # what is picked by itself: never a sample's original (hidden, the answer; it
                # comes first when a sample opens and would otherwise stay chosen); for the PSF
                # a layer that holds one (a sample's true kernel, a run's kernel) first
                auto = [ly for ly in order if not _is_original(ly)]
                if box is self.psf_box:
                    auto = [ly for ly in auto if _is_psf(ly)] or auto or order
                keep = before is not None and any(ly is before for ly in layers) and (
                    getattr(self, chosen, False) or any(ly is before for ly in auto))
                if not keep:
                    active = self.viewer.layers.selection.active
                    before = active if any(ly is active for ly in auto) else (
                        auto[-1] if auto else None)
                box.value = before
        self._on_layer_changed()

    def selected_layer(self):
        return self.layer_box.value

    def _suggest_model(self, layer) -> None:
        """Until a model is picked by hand: for one of our samples the bundled model it is made
        for (:func:`napari_dan.samples.model_for_sample`), else the microscopy model for grey
        layers and the default (photo) model for RGB ones, when bundled."""
        if getattr(self, "_model_chosen", False) or layer is None:
            return
        cur = self.model_box.value
        if cur is None or cur == LOAD or cur[0] != "bundled":
            return
        bundled = {value[1]["name"]: value for _, value in self._models if value[0] == "bundled"}
        sample = layer.metadata.get("napari_dan_sample") if isinstance(layer.metadata, dict) \
            else None
        want = None
        if isinstance(sample, dict):
            want = model_for_sample(sample.get("kind"), sample.get("scale"))
        if want not in bundled:
            want = DEFAULT_MODEL if layer.rgb else GREY_MODEL
        if want in bundled and cur[1]["name"] != want:
            self.model_box.value = bundled[want]

    def _on_layer_changed(self, *_) -> None:
        layer = self.selected_layer()
        self._suggest_model(layer)
        if layer is None:
            axes = [("auto", "auto")]
        elif layer.rgb:
            axes = [("RGB (colour axis)", "auto")]
        else:
            shape = layer.data[0].shape if layer.multiscale else layer.data.shape
            axes = [("none", "auto")] + [(f"axis {a} ({n} channels)", a)
                                         for a, n in enumerate(shape[:-2])]
        with self.channel_box.changed.blocked():
            self.channel_box.native.clear()
            self.channel_box.choices = axes
            self.channel_box.value = "auto"
        self._update_enabled()

    def _plane_axes(self, layer) -> list[int]:
        """The layer's axes besides the two spatial ones and the chosen channel axis (what
        'Stack' chooses between); none when a channel axis is the only other axis."""
        nd, ca = int(layer.ndim), self.channel_box.value
        if layer.rgb or not isinstance(ca, int):
            return list(range(nd - 2))
        spatial = spatial_axes(nd, ca)
        return [a for a in range(nd) if a not in spatial and a != ca]

    def _update_enabled(self, *_) -> None:
        layer = self.selected_layer()
        running = self._worker is not None
        self.psf_box.enabled = KERNEL_MODES[self.mode_box.value] == "psf"
        optics = KERNEL_MODES[self.mode_box.value] == "optics"
        if self.na_box.native.isHidden() == optics:  # (isVisible is False in a hidden window)
            for box in self._optics_boxes():  # shown only for "PSF from optics"
                box.visible = optics
            self._align_labels()  # rows shown now were not aligned with the others
        self.scope_box.enabled = layer is not None and bool(self._plane_axes(layer))
        self.channel_box.enabled = layer is not None and not layer.rgb and layer.ndim > 2
        self.run_box.enabled = not running
        self.cancel_box.enabled = running

    # ---------------------------------------------------------------- running
    def options(self) -> RunOptions:
        """The current choices as plain values."""
        mode = KERNEL_MODES[self.mode_box.value]
        psf = psf_name = psf_pixel = None
        if mode == "psf":
            psf_layer = self.psf_box.value
            psf = psf_from_layer(psf_layer, self.viewer.dims.point)
            psf_name, psf_pixel = psf_layer.name, stated_pixel(psf_layer)
        facts = self._model_facts()
        optics = None
        if mode == "optics":
            ex = self.excitation_box.value
            optics = Optics(na=self.na_box.value, wavelength=self.emission_box.value / 1000,
                            ni=self.immersion_box.value, excitation=ex / 1000 if ex else None)
        tile, overlap = round(self.tile_box.value), round(self.overlap_box.value)
        return RunOptions(model=self.selected_model(), tile_size=tile if tile > 0 else "auto",
                          tile_overlap=overlap if overlap >= 0 else "auto", kernel_mode=mode,
                          psf=psf, psf_name=psf_name, device=self.device_box.value,
                          precision=self.precision_box.value, scope=SCOPES[self.scope_box.value],
                          channel_axis=self.channel_box.value, residual=self.residual_box.value,
                          pixel_size=self.pixel_box.value or None, optics=optics,
                          psf_pixel=psf_pixel, model_scale=facts["scale"] if facts else None)

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
                raise DanError(NO_MODELS if not self._models else "choose a model first")
            request = build_request(layer, options, self.viewer.dims.point,
                                    self.viewer.dims.displayed)
        except DanError as exc:
            self._message(str(exc), "error")
            return
        self._cancel = threading.Event()
        # closing the viewer (or the widget) mid-run stops the worker at its next tile
        self.destroyed.connect(self._cancel.set)
        worker = sr_worker(request, options.model, self._cancel)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda out, req=request: self._on_returned(req, out))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda: self._on_error(Cancelled("stopped")))
        worker.finished.connect(self._on_finished)
        worker.warned.connect(self._on_warning)
        self._worker = worker
        self._update_enabled()
        # the last run's numbers must not stay under a run that may fail or be cancelled
        self.kernel_box.value = f"Kernel of {layer.name!r}: (running...)"
        self.status_box.value = (f"running on {layer.name!r}..." +
                                 ("\n" + "; ".join(request.notes) if request.notes else ""))
        worker.start()

    def cancel(self) -> None:
        """Stop at the next tile; no layer is added or changed."""
        if self._cancel is not None:
            self._cancel.set()
            self.status_box.value = "cancelling at the next tile..."

    def _on_progress(self, value) -> None:
        if not self._alive():
            return
        done, total = value
        bar = self.progress_box
        if bar.max != total:  # the engine re-tiles after running out of memory
            bar.max = max(int(total), 1)
        bar.value = int(done)
        bar.visible = True

    def _on_returned(self, request, out) -> None:
        if not self._alive():
            return
        model, result = out
        try:
            tuples = result_layers(request, result, model.name, model.scale)
            self.last_layers = add_result_layers(self.viewer, tuples)
        except Exception as exc:  # a bug here must not leave the widget stuck in "running"
            self._message(f"the result could not be shown: {type(exc).__name__}: {exc}", "error")
            self.kernel_box.value = "Kernel: (no result: it could not be shown)"
            return
        self.last_result = (request, model, result)
        self._show_kernel(request, model, result)
        notes = "; ".join(request.notes)
        self.status_box.value = (f"done: added {', '.join(repr(ly.name) for ly in self.last_layers)}"
                                 + (f"\n{notes}" if notes else ""))

    def _show_kernel(self, request, model, result) -> None:
        px, unit = physical_pixel(request, model.scale)
        # a layer with a scale but no units: the widths are in its world units (said so, or
        # "= 2.039" reads as a number without meaning); the layers' metadata keep unit None
        unit = unit or ("(world units)" if px else None)
        st = kernel_stats(result.kernel, px, unit)
        of = f" of {request.source_name!r}"  # the layer, so no text is read as another's
        lines = [f"Kernel{of} ({model.name}, HR grid): {st.summary()}"]
        meta = result.metadata
        spread = meta.get("kernel_fwhm") or {}
        if spread.get("count", 1) > 1:
            # the spread first: the mean of kernels that differ is no one plane's (or tile's) PSF
            med = f" = {spread['median'] * px:.4g} {unit or ''}".rstrip() if px else ""
            lines = [f"{spread['count']} {spread['what']}{of} ({model.name}, HR grid): FWHM "
                     f"{spread['min']:.2f} to {spread['max']:.2f} px, median "
                     f"{spread['median']:.2f} px{med}",
                     f"Their mean kernel: FWHM {st.fwhm:.2f} px"]
        if spread.get("all_flat"):  # the loop's starting kernel is no measurement
            lines = [f"Kernel{of} ({model.name}): no PSF estimated (the image is flat)"]
        if "snr_median" in spread:
            many = spread.get("count", 1) > 1
            lines.append("Signal-to-noise of the field" + (
                f"s: lowest {spread['snr_min']:.0f}, median {spread['snr_median']:.0f}"
                if many else f": {spread['snr_median']:.0f}"))
        if spread.get("warning"):
            lines.append("Note: " + spread["warning"])
        if meta.get("spots"):
            lines[0] = f"Kernel used ({model.name}, HR grid): {st.summary()}"
            lines.insert(0, _spots_line(meta["spots"], px, unit, of))
        if meta.get("optics"):
            o = meta["optics"]
            lines[0] = f"Kernel used ({model.name}, HR grid): {st.summary()}"
            lines.insert(0, f"PSF{of} from optics ({Optics(**{k: o[k] for k in OPTICS_FIELDS}).summary()}; "
                         f"pixel size {o['pixel_size']:.4g} µm): FWHM {o['fwhm_px']:.2f} px = "
                         f"{o['fwhm_um']:.3g} µm on the HR grid")
            if o.get("note"):
                lines.append("Note: " + o["note"])
        spots = meta.get("spots_comparison") or {}
        if "kernel" in spots:
            lines.append(_spots_line(spots, px, unit))
            if spots.get("note"):
                lines.append("Note: " + spots["note"])
        elif "unavailable" in spots:
            lines.append("PSF from spots: none measured (no isolated beads or puncta)")
        cons = meta.get("consistency")
        if cons:
            per = cons["per_plane"]
            what = "planes"
            if request.channel_axis is not None and not request.rgb:  # one entry per channel
                stack = any(a not in request.plane for a in request.other_axes)
                what = "planes and channels" if stack else "channels"
            rng = f" ({what} {min(per):.3f} to {max(per):.3f})" if len(per) > 1 else ""
            lines.append(f"Consistency residual {cons['relative_residual']:.3f}{rng}: input vs "
                         "result re-blurred and sampled back (includes noise)")
        self.kernel_box.value = "\n".join(lines)

    def _on_warning(self, w: tuple) -> None:
        """A warning from the run (``warnings.showwarning``'s arguments): shown, except the
        estimate's range note, which the kernel text shows as its "Note:" line."""
        if len(w) > 1 and isinstance(w[1], type) and issubclass(w[1], EstimateWarning):
            return
        self._message(str(w[0]), "warning")

    def _on_error(self, exc: Exception) -> None:
        if self._alive():
            self.kernel_box.value = "Kernel: (no result: " + (
                "cancelled)" if isinstance(exc, Cancelled) else "the run failed)")
        if isinstance(exc, Cancelled):
            self._message("cancelled: no layers were added or changed")
        elif isinstance(exc, DanError):
            self._message(str(exc), "error")
        else:
            self._message(f"super-resolution failed: {type(exc).__name__}: {exc}", "error")

    def _on_finished(self) -> None:
        self._worker = None
        self._cancel = None
        if not self._alive():
            return
        self.progress_box.visible = False
        self.progress_box.native.reset()
        self._update_enabled()
