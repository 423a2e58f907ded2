"""Batch super-resolution of TIFF files: the work behind ``napari-dan super-resolve``.

For every input ``<stem>.tif`` two files are written into the output directory:
``<stem>_x<s>.tif`` (same dtype, axes and metadata, Y/X pixel size divided by ``s``; OME inputs
keep the ``.ome.tif`` ending) and ``<stem>_x<s>_kernel.tif`` (float32 kernels on the output
grid, their statistics as JSON in the TIFF description).

Files are processed one plane at a time: the engine reads planes through
:class:`~napari_dan.io.TiffArray` and writes them through :class:`~napari_dan.io.StackWriter`
into a hidden ``.<name>.partial`` file that is renamed only when complete. The engine owns every
decision about the whole stack (value normalisation, the single kernel of ``global`` mode), so a
stack gets the same result here as in napari or from Python.

Safety: inputs are never written; an existing output is skipped unless ``overwrite``; a file that
cannot be read is reported by name and the others still run; Ctrl-C leaves no partial file.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .engine.normalize import analyse
from .engine.options import KERNEL_MODES, SROptions
from .engine.threads import check_threads
from .errors import DanError, InputError, UsageError, clean_message
from .imaging.psf import Optics
from .io import (
    IJ_INPUT_GRID_SHAPES,
    OutputLock,
    StackWriter,
    file_fingerprint,
    micrometres,
    open_tiff,
    read_kernels,
    read_tiff,
    scaled_metadata,
    tiff_stem,
    write_kernels,
)
from .model import DanModel, load_model
from .model.kernels import kernel_stats, regrid_kernel

__all__ = ["FileResult", "BatchSummary", "expand_inputs", "output_paths", "load_psf",
           "process_file", "run_batch", "KERNEL_MODES"]

#: the engine settings of a batch unless told otherwise: threads follow what other processes
#: leave idle (engine.threads)
BATCH_DEFAULTS = SROptions(threads="auto")
_TIFF_RE = re.compile(r"\.tiff?$", re.IGNORECASE)
_OUTPUT_RE = re.compile(r"^(?P<stem>.+)_x\d+(_kernel)?(\.ome)?\.tiff?$", re.IGNORECASE)


@dataclass
class FileResult:
    """What happened to one input."""

    input: Path
    status: str  # "done" | "skipped" | "failed"
    output: Path | None = None
    kernel_output: Path | None = None
    planes: int = 0
    seconds: float = 0.0
    fwhm: float | None = None  # kernel FWHM (HR pixels) of the stack's (mean) kernel
    fwhm_physical: float | None = None
    unit: str | None = None
    consistency: float | None = None  # relative residual of the consistency check
    #: per-plane / per-tile runs: FWHM (HR px) of the kernels, {"what", "count", "min",
    #: "median", "max"} (the engine's ``metadata["kernel_fwhm"]``)
    fwhm_spread: dict | None = None
    #: the lowest signal-to-noise ratio of the fields its kernels were estimated from (the
    #: engine's ``metadata["kernel_fwhm"]["snr_min"]``; None with a given kernel)
    snr: float | None = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    #: what of the input's metadata the output leaves out (e.g. "ImageJ ROI", "ImageJ
    #: overlays"); said once in the summary
    dropped: list[str] = field(default_factory=list)


@dataclass
class BatchSummary:
    """All files of a run, with the totals the CLI prints."""

    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    model: str = ""

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def planes(self) -> int:
        return sum(r.planes for r in self.results if r.status == "done")

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    def text(self) -> str:
        """A few lines for people: files, planes, time, kernel widths, failures by name."""
        done, skipped, failed = self.count("done"), self.count("skipped"), self.count("failed")
        lines = [f"{done} file(s) super-resolved, {skipped} skipped (output exists), "
                 f"{failed} failed; {self.planes} plane(s) in {self.seconds:.1f} s"
                 + (f" with {self.model}" if self.model else "")]
        done_ = [r for r in self.results if r.status == "done" and r.fwhm is not None]
        fw = [r.fwhm for r in done_]
        if fw:
            sp = done_[0].fwhm_spread if len(fw) == 1 else None
            if sp:
                lines.append(f"kernel FWHM {sp['min']:.2f}-{sp['max']:.2f} px over "
                             f"{sp['count']} {sp['what']} (median {sp['median']:.2f}; their mean "
                             f"kernel {fw[0]:.2f}) (output grid)")
            elif len(fw) == 1:
                lines.append(f"kernel FWHM {fw[0]:.2f} px (output grid)")
            else:
                lines.append(f"kernel FWHM {np.mean(fw):.2f} px mean, {min(fw):.2f}-"
                             f"{max(fw):.2f} px range (output grid)")
        dropped = [r for r in self.results if r.status == "done" and r.dropped]
        if dropped:
            what = sorted({d for r in dropped for d in r.dropped})
            names = ", ".join(r.input.name for r in dropped[:3]) + (
                f" and {len(dropped) - 3} more" if len(dropped) > 3 else "")
            lines.append(f"note: {' and '.join(what)} left out of the output of {names}: they "
                         "mark regions on the input's pixel grid, not the super-resolved one")
        for r in self.failed:
            # the message names this input's full path, or it is prefixed (a name alone can
            # be another file's: two inputs of one name in different folders)
            lines.append(f"FAILED {r.message}" if str(r.input) in r.message else
                         f"FAILED {r.input}: {r.message}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# inputs and outputs


def _is_tiff(p: Path) -> bool:
    return bool(_TIFF_RE.search(p.name))


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[FileResult]]:
    """Files, directories (their ``.tif``/``.tiff`` files, not recursive) and glob patterns.

    Hidden files (e.g. our ``.partial`` files) are ignored in directories and globs, and so are
    files that look like this program's outputs (``<stem>_x<s>.tif``, ``<stem>_x<s>_kernel.tif``)
    when ``<stem>.tif`` is among the inputs too, so an output directory equal to the input
    directory can be re-run safely. Returns the files (in order, without duplicates) and a failed
    :class:`FileResult` for every argument that matched nothing.
    """
    files: list[Path] = []
    problems: list[FileResult] = []
    expanded: set[Path] = set()  # files found by directory/glob expansion (may be filtered)
    for arg in inputs:
        s = os.fspath(arg)
        p = Path(s).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.iterdir()
                           if q.is_file() and _is_tiff(q) and not q.name.startswith("."))
            expanded.update(q.resolve() for q in found)
            if not found:
                problems.append(FileResult(p, "failed", message="directory has no .tif/.tiff "
                                                                "files"))
        elif p.is_file():
            found = [p]
        elif glob.has_magic(s):
            found = []
            for m in sorted(glob.glob(os.path.expanduser(s), recursive=True)):
                q = Path(m)
                if q.is_dir():
                    found += sorted(r for r in q.iterdir() if r.is_file() and _is_tiff(r)
                                    and not r.name.startswith("."))
                elif q.is_file() and _is_tiff(q) and not q.name.startswith("."):
                    found.append(q)
            expanded.update(q.resolve() for q in found)
            if not found:
                problems.append(FileResult(p, "failed", message="no TIFF file matches this "
                                                                "pattern"))
        elif p.exists():  # a FIFO, socket or device: reading it would block or mean nothing
            problems.append(FileResult(p, "failed", message="is not a regular file (a pipe, "
                                                            "socket or device); give a TIFF file"))
            found = []
        else:
            problems.append(FileResult(p, "failed", message="no such file or directory"))
            found = []
        files.extend(found)
    out, seen = [], set()
    for f in files:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            out.append(f)
    stems = {(f.resolve().parent, tiff_stem(f)) for f in out}
    keep = []
    for f in out:
        m = _OUTPUT_RE.match(f.name)
        if (f.resolve() in expanded and m
                and (f.resolve().parent, tiff_stem(m.group("stem") + ".tif")) in stems):
            continue  # an output of another input of this run
        keep.append(f)
    return keep, problems


def output_paths(src: str | os.PathLike, output_dir: str | os.PathLike, scale: int,
                 ome: bool = False) -> tuple[Path, Path]:
    """``(DIR/<stem>_x<s>.tif, DIR/<stem>_x<s>_kernel.tif)`` (``.ome.tif`` for OME inputs)."""
    stem = tiff_stem(src)
    d = Path(output_dir)
    return (d / f"{stem}_x{scale}{'.ome' if ome else ''}.tif",
            d / f"{stem}_x{scale}_kernel.tif")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _is_spots(psf) -> bool:
    """``--psf spots``: measure the PSF from isolated spots of each input."""
    return isinstance(psf, str) and psf == "spots"


def optics_for_file(optics: Optics, meta, name: str) -> tuple[Optics, str]:
    """``optics`` with the file's input pixel size (µm) when it has none of its own, and a
    sentence saying what the PSF is. InputError when neither states a pixel size."""
    if optics.pixel_size is None:
        px, unit = meta.spatial_pixel_size()
        um = micrometres(px, unit)
        if um is None:
            raise InputError(f"{name} states no pixel size in a length unit"
                             + (f" (it says {px:g} {unit})" if px is not None else "")
                             + ": a PSF from optics needs one; give --pixel-size (µm)")
        optics, where = optics.with_pixel_size(um), "from the file"
    else:
        where = "given"
    return optics, (f"theoretical PSF ({optics.summary()}; input pixel size "
                    f"{optics.pixel_size:g} µm, {where})")


#: a pixel size given that differs from the file's by more than this share is warned about
PIXEL_SIZE_TOLERANCE = 0.05


def _pixel_size_disagrees(given_um: float, meta) -> str | None:
    """A sentence when ``given_um`` (--pixel-size) differs from the file's own pixel size by
    more than :data:`PIXEL_SIZE_TOLERANCE`, else None."""
    px, unit = meta.spatial_pixel_size()
    file_um = micrometres(px, unit)
    if not file_um or abs(given_um / file_um - 1) <= PIXEL_SIZE_TOLERANCE:
        return None
    return (f"the pixel size given ({given_um:g} µm, --pixel-size) differs from the file's own "
            f"({px:g} {unit}) by {100 * abs(given_um / file_um - 1):.0f}%; the PSF and the "
            f"sizes reported use {given_um:g} µm, the output image keeps the file's pixel size "
            "(divided by the scale)")


def load_psf(path: str | os.PathLike, hr_pixel_size: float | None = None,
             unit: str | None = None) -> tuple[np.ndarray, str]:
    """A PSF for non-blind super-resolution from a TIFF (or ``.npy``) file, on the output grid.

    A 3D PSF (Z, Y, X) gives its in-focus plane (the one with the brightest pixel). When the PSF
    file and the image both state a pixel size in the same unit, the PSF is resampled from its
    pixel size to the output (HR) pixel size; otherwise it must already be on the output grid.
    Sides are made odd by cropping one row/column when needed. Returns the kernel (sum 1) and a
    sentence saying what was done.
    """
    p = Path(path)
    note = []
    if p.is_dir():
        raise InputError(f"{p}: is a directory; pass the PSF file (TIFF or .npy)")
    if not p.exists():
        raise InputError(f"{p}: no such file")
    try:
        if p.suffix.lower() == ".npy":
            k = np.load(p, allow_pickle=False)
            px, pu = None, None
        else:
            k, meta = read_tiff(p)
            px, pu = meta.spatial_pixel_size()
    except InputError:
        raise
    except (OSError, ValueError) as e:
        raise InputError(f"{p}: cannot read the PSF ({clean_message(e, 200)})") from None
    # a colour picture (samples last, YXS); a planar 3-plane stack (SYX) is how tifffile
    # writes a (3, Y, X) float array by default, and is read as Z planes as before
    if p.suffix.lower() != ".npy" and meta.photometric == "rgb" and meta.axes.endswith("S"):
        raise InputError(f"{p}: the PSF is a colour (RGB) image (axes {meta.axes}); a PSF is "
                         "one grey plane or a (Z, Y, X) stack")
    k = np.asarray(k)
    if not (np.issubdtype(k.dtype, np.integer) or np.issubdtype(k.dtype, np.floating)) \
            or k.dtype == bool:
        raise InputError(f"{p}: a PSF must hold real numbers, got dtype {k.dtype}")
    k = k.astype(np.float64)
    shape = k.shape  # as stored: a 1 x 1 PSF squeezes to shape ()
    k = np.squeeze(k)
    if k.ndim == 3:
        z = int(np.argmax(k.reshape(k.shape[0], -1).max(1)))
        note.append(f"in-focus plane {z} of {k.shape[0]}")
        k = k[z]
    if k.ndim != 2:
        raise InputError(f"{p}: a PSF must be 2D (Y, X) or 3D (Z, Y, X) with at least 2 pixels "
                         f"along Y and X, got shape {shape}")
    if not np.all(np.isfinite(k)) or k.max() <= 0:
        raise InputError(f"{p}: the PSF has no positive finite values")
    k = np.clip(k - np.median(np.concatenate([k[0], k[-1], k[:, 0], k[:, -1]])), 0, None) \
        if min(k.shape) >= 5 else np.clip(k, 0, None)  # remove a flat background
    if not k.sum() > 0:
        raise InputError(f"{p}: the PSF is flat: nothing in it rises above its border "
                         f"(shape {k.shape}); a PSF is a peak on a dark background")
    if k.shape[0] % 2 == 0:
        k = k[:-1]
    if k.shape[1] % 2 == 0:
        k = k[:, :-1]
    # both sizes in µm when both are lengths (a PSF in nm beside an image in µm), else as stated
    psf_um, out_um = micrometres(px, pu), micrometres(hr_pixel_size, unit)
    same = (psf_um, out_um) if psf_um and out_um else (px, hr_pixel_size) if pu == unit \
        else (None, None)
    if same[0] and same[1] and abs(same[0] / same[1] - 1) > 0.01:
        # the one kernel regridding of the package (integrated over the new pixels, centred)
        k = regrid_kernel(k, same[0] / same[1])
        note.append(f"resampled from {px:.4g} {pu} to {hr_pixel_size:.4g} {unit} pixels")
    elif not (px and hr_pixel_size):
        note.append("used as given (assumed on the output grid)")
    k = k / k.sum()
    return k.astype(np.float32), "; ".join(note)


# --------------------------------------------------------------------------------------------
# one file


def _resolve_channel_axis(axes: str, shape: tuple[int, ...], asked: int | str | None) -> int | None:
    """The series axis the model takes as channels: asked for, else S, else C."""
    if asked is not None:
        if isinstance(asked, str) and not asked.lstrip("-").isdigit():
            if asked.upper() not in axes:
                raise InputError(f"no axis {asked!r} in this file's axes {axes!r} "
                                 f"(shape {shape})")
            return axes.index(asked.upper())
        n = int(asked)
        if not -len(shape) <= n < len(shape):
            raise InputError(f"--channel-axis {n} is out of range: the file has {len(shape)} "
                             f"axes {axes!r} (shape {shape})")
        return n % len(shape)
    for a in ("S", "C"):
        if a in axes:
            return axes.index(a)
    return None


class _PlaneCounter:
    """Array-like wrapper of the output that reports every plane written."""

    def __init__(self, out: StackWriter, on_plane: Callable[[], Any] | None):
        self._out, self._on_plane = out, on_plane
        self.shape, self.dtype, self.ndim = out.shape, out.dtype, out.ndim

    def __setitem__(self, key, value) -> None:
        self._out[key] = value
        if self._on_plane is not None:
            self._on_plane()


def _kernel_info(res, model: DanModel, src: Path, mode: str, meta, hr_px, unit,
                 psf_note: str | None) -> dict:
    compact = ("fwhm", "fwhm_major", "fwhm_minor", "angle", "anisotropy", "sigma_major",
               "sigma_minor")
    per = []
    snrs = (res.metadata.get("kernel_fwhm") or {}).get("snr") or []
    for i, (k, c) in enumerate(zip(res.kernels, res.kernel_centers, strict=True)):
        st = kernel_stats(k, hr_px, unit).to_dict()
        per.append({"center": [float(v) for v in np.atleast_1d(c)],
                    **{n: st[n] for n in compact}})
        if len(snrs) == len(res.kernels):
            per[-1]["snr"] = snrs[i]
    main = kernel_stats(res.kernel, hr_px, unit)
    info = {"napari_dan": __version__, "what": "estimated blur kernel(s) on the output grid",
            "input": src.name, "model": model.name, "model_source": model.source,
            "scale": model.scale, "kernel_mode": res.metadata.get("mode", mode),
            "axes": meta.axes, "centers": _centers_doc(res.metadata.get("mode", mode)),
            "pixel_size": hr_px, "unit": unit, "kernel_stats": main.to_dict(),
            "kernel_summary": main.summary(), "kernels": per}
    if psf_note:
        info["psf"] = psf_note
    for k in ("channels", "normalisation", "device", "precision", "runtime", "tile_size",
              "tile_overlap", "consistency", "spots", "optics", "iterations", "kernel_views",
              "kernel_fwhm"):
        if k in res.metadata:
            info[k] = res.metadata[k]
    return info


def _centers_doc(mode: str) -> str:
    return {"per-plane": "index of the plane along the looped axes",
            "per-tile": "looped-axes index, then y, x of the tile centre in input pixels",
            }.get(mode, "centre of the array (looped axes..., y, x)")


def _input_record(src: Path, series: int) -> dict:
    st = src.stat()
    return {"name": src.name, "path": str(src.resolve()), "size": st.st_size,
            "modified": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime)),
            "fingerprint": file_fingerprint(src), "series": series}


def _describe_difference(old: dict, new: dict) -> str | None:
    """Why an existing output's record does not match what this run would produce (None: it
    does)."""
    oi, ni = old.get("input", {}), new["input"]
    if oi.get("fingerprint") != ni["fingerprint"]:
        where = oi.get("path") or oi.get("name") or "another file"
        return f"it was made from another input ({where}, {oi.get('size', '?')} bytes)"
    if oi.get("series", 0) != ni["series"]:
        return f"it was made from series {oi.get('series', 0)} of this input"
    om, nm = old.get("model", {}), new["model"]
    if om.get("fingerprint") != nm["fingerprint"]:
        return f"it was made by another model ({om.get('name', '?')})"
    oo, no = old.get("options", {}), new["options"]
    diff = [f"{k} {oo.get(k)!r} -> {v!r}" for k, v in no.items() if oo.get(k) != v]
    if diff:
        return "it was made with other options (" + ", ".join(diff) + ")"
    return None


def _existing_output(out_img: Path, out_ker: Path, record: dict) -> tuple[str, str]:
    """("skipped", why) when ``out_img`` is what this run would write, else ("failed", why)."""
    hint = "use --overwrite to replace it, or another --output-dir"
    try:
        _, info = read_kernels(out_ker)
        old = info.get("produced_by")
    except (InputError, OSError):
        old = None
    if not isinstance(old, dict):
        return "failed", (f"{out_img} exists but there is no record of what produced it "
                          f"({out_ker.name} is missing or was written by an older napari-dan); "
                          f"not replaced: {hint}")
    why = _describe_difference(old, record)
    if why is None:
        return "skipped", f"{out_img} exists, made from this input with the same model and options"
    return "failed", f"{out_img} exists and {why}; not replaced: {hint}"


def process_file(src: str | os.PathLike, output_dir: str | os.PathLike, model: DanModel,
                 options: SROptions | None = None, *,
                 psf: str | os.PathLike | Optics | None = None,
                 channel_axis: int | str | None = None,
                 series: int | None = None, overwrite: bool = False,
                 inputs: Sequence[Path] = (), runner=None,
                 on_start: Callable[[int, str], Any] | None = None,
                 on_plane: Callable[[], Any] | None = None,
                 progress: Callable[[int, int], Any] | None = None, **settings) -> FileResult:
    """Super-resolve one TIFF into ``output_dir`` (see the module docstring).

    Errors about this file (unreadable, unsupported, bad option for it, its output busy or made
    from something else) come back as a failed :class:`FileResult`; ``KeyboardInterrupt`` (and
    :class:`~napari_dan.errors.Terminated`) propagate after the partial files are removed.

    Parameters
    ----------
    src, output_dir
        Input file and output directory (created if needed).
    model
        A loaded model.
    options, **settings
        The engine settings (:class:`~napari_dan.engine.options.SROptions`: kernel_mode,
        tile_size, tile_overlap, device, precision, threads, runtime, compiled), or keywords replacing
        them; the batch's defaults are ``threads="auto"``. ``kernel`` and ``channel_axis`` are
        set per file from ``psf`` and ``channel_axis`` below. Threads and compilation are not
        used on a cluster.
    psf, channel_axis
        As for the CLI options of the same names: a PSF file, "spots" or an
        :class:`~napari_dan.imaging.psf.Optics` (the file's pixel size fills a missing one);
        ``channel_axis``
        indexes the file's axes (or is a letter such as ``"C"``).
    series
        Which image series of a multi-series file (None: the first, with a warning when there
        are more).
    overwrite
        Replace an existing output instead of skipping the file.
    inputs
        Every input of the run: no output may be one of them.
    runner
        A :class:`~napari_dan.distributed.ClusterRunner`, or None to run here.
    on_start(n_planes, description), on_plane(), progress(done, total)
        Progress hooks (files, planes, engine steps).
    """
    src = Path(src)
    t0 = time.perf_counter()
    opts = SROptions.build(options or BATCH_DEFAULTS, **settings)
    result = FileResult(src, "failed")
    try:
        with open_tiff(src, series=series or 0) as stack:
            meta = stack.meta
            if series is None and meta.series_count > 1:
                result.warnings.append(
                    f"{src.name} holds {meta.series_count} image series "
                    f"({', '.join('x'.join(map(str, sh)) for sh in meta.series_shapes[:4])}"
                    f"{', ...' if meta.series_count > 4 else ''}); only series 0 was processed "
                    "(choose another with --series N)")
            s = model.scale
            out_img, out_ker = output_paths(src, output_dir, s, ome=meta.kind == "ome")
            result.output, result.kernel_output = out_img, out_ker
            for other in [src, *inputs]:
                if out_img.resolve() == Path(other).resolve() or _same_file(out_img, Path(other)) \
                        or out_ker.resolve() == Path(other).resolve():
                    raise InputError(f"its output {out_img.name} would replace the input "
                                     f"{Path(other).name}; choose another --output-dir")
            ch = _resolve_channel_axis(meta.axes, meta.shape, channel_axis)
            layout = stack.layout(ch)  # checks the channel axis against the page structure
            # dtype and shape, before writing
            analyse(stack.array(), ch, model.in_channels, s)
            out_meta = scaled_metadata(meta, s)
            result.dropped = [f"ImageJ {k if k == 'ROI' else k.lower()}"
                              for k in IJ_INPUT_GRID_SHAPES if meta.imagej.get(k) is not None]
            hr_px, unit = out_meta.spatial_pixel_size()
            kernel = psf_note = None
            if _is_spots(psf):
                kernel, psf_note = "spots", "measured from isolated spots in the input"
            elif isinstance(psf, Optics):
                kernel, psf_note = optics_for_file(psf, meta, src.name)
                if psf.pixel_size is not None:
                    # a pixel size given wins over the file's: the PSF is built on it, so the
                    # sizes reported (and the kernel file's) use it too
                    warn = _pixel_size_disagrees(psf.pixel_size, meta)
                    if warn:
                        result.warnings.append(f"{src.name}: {warn}")
                    hr_px, unit = psf.pixel_size / s, "µm"
            elif psf is not None:
                kernel, psf_note = load_psf(psf, hr_px, unit)
            record = {"input": _input_record(src, meta.series),
                      "model": {"name": model.name, "fingerprint": model.fingerprint},
                      # what decides the result; the "run" settings change speed and memory
                      # (and pixels by at most about a grey level), so a re-run may differ there
                      "options": {"scale": s, "kernel_mode": opts.kernel_mode,
                                  "psf": ("spots" if _is_spots(psf) else
                                          {"optics": kernel.describe()}
                                          if isinstance(psf, Optics) else file_fingerprint(psf)
                                          if psf is not None else None),
                                  "channel_axis": ch, "iterations": opts.iterations,
                                  "kernel_views": opts.kernel_views},
                      "run": {"tile_size": opts.tile_size, "tile_overlap": opts.tile_overlap,
                              "precision": opts.precision, "device": opts.device,
                              "runtime": opts.runtime, "napari_dan": __version__}}
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            with OutputLock(out_img) as lock:  # OutputBusy when another run writes it now
                if out_img.exists() and not overwrite:
                    result.status, result.message = _existing_output(out_img, out_ker, record)
                    return result
                lock.clean_stale_partials()
                if on_start is not None:
                    on_start(layout.n_blocks, src.name)
                with StackWriter(out_img, out_meta, layout.scaled(s)) as writer:
                    file_opts = SROptions.build(opts, channel_axis=ch, kernel=kernel)
                    # the engine's warnings (few grey levels, a kernel out of the model's range)
                    # become this file's warning lines, not Python's "file:line: UserWarning"
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", UserWarning)
                        if runner is None:
                            from .engine import super_resolve

                            res = super_resolve(stack.array(), model, progress=progress,
                                                out=_PlaneCounter(writer, on_plane),
                                                options=file_opts)
                        else:
                            res = runner.super_resolve(
                                stack.array(), file_opts, out=writer,
                                on_plane=lambda d, n: on_plane and on_plane())
                    for w in caught:
                        if issubclass(w.category, UserWarning):
                            if f"{src.name}: {w.message}" not in result.warnings:
                                result.warnings.append(f"{src.name}: {w.message}")
                        else:
                            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                    info = _kernel_info(res, model, src, opts.kernel_mode, meta, hr_px, unit,
                                        psf_note)
                    info["produced_by"] = record
                    write_kernels(out_ker, res.kernels if len(res.kernels) > 1 else res.kernel,
                                  info, hr_px, unit)
                    writer.commit()  # the image is renamed last: it existing means it is done
            st = res.kernel_stats if hr_px is None else kernel_stats(res.kernel, hr_px, unit)
            result.status, result.planes = "done", layout.n_blocks
            result.fwhm, result.fwhm_physical, result.unit = st.fwhm, st.fwhm_physical, unit
            result.message = st.summary()
            spread = res.metadata.get("kernel_fwhm") or {}
            if spread.get("count", 1) > 1:
                result.fwhm_spread = {k: spread[k] for k in ("what", "count", "min", "median",
                                                             "max")}
                # the spread first: the mean of kernels that differ is wider than their median
                # and narrower than the widest, so its width alone (in µm, too) misleads
                med = (f" = {spread['median'] * hr_px:.4g} {unit}" if hr_px is not None else "")
                result.message = (f"FWHM {spread['min']:.2f}-{spread['max']:.2f} px over "
                                  f"{spread['count']} {spread['what']}, median "
                                  f"{spread['median']:.2f} px{med}; their mean kernel "
                                  f"{st.fwhm:.2f} px")
            if spread.get("snr_min") is not None:
                result.snr = spread["snr_min"]
                result.message += (f"; signal-to-noise {result.snr:.0f}"
                                   + (" (lowest)" if spread.get("count", 1) > 1 else ""))
            # (spread["warning"] reached the file's warning lines above, as the engine's
            # EstimateWarning; a wholly flat image's is left out there, said once already)
            if spread.get("all_flat"):  # the kernel is where the loop started, not a PSF
                result.fwhm = result.fwhm_physical = result.fwhm_spread = None
                result.message = "no PSF estimated (the image is flat)"
            cons = res.metadata.get("consistency")
            if cons:
                result.consistency = cons["relative_residual"]
                result.message += f"; consistency residual {result.consistency:.3f}"
            if res.metadata.get("optics"):
                result.message += f"; from optics ({kernel.summary()})"
            if res.metadata.get("spots"):
                sp = res.metadata["spots"]
                result.message += f"; from {sp['n_spots']} spots"
                if sp.get("fwhm_rel_error") is not None and sp["fwhm_rel_error"] < 1:
                    result.message += f" (FWHM +-{100 * sp['fwhm_rel_error']:.1f}%)"
    except DanError as e:
        result.message = clean_message(e)
    except (OSError, ValueError, MemoryError) as e:
        result.message = clean_message(f"{type(e).__name__}: {e}")
    finally:
        result.seconds = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------------------------
# many files


def _usable_output_dir(output_dir: str | os.PathLike) -> tuple[Path, list[Path]]:
    """The output folder, created if needed, and the folders this made (deepest first, so that
    a run that writes nothing can leave none behind); :class:`UsageError` when it cannot be
    written."""
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--output-dir {out_dir} exists and is not a directory")
    made = []
    d = out_dir.absolute()
    while not d.exists() and d != d.parent:
        made.append(d)
        d = d.parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".napari-dan-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--output-dir {out_dir} cannot be written ({e.strerror or e})") from None
    return out_dir, made


def run_batch(inputs: Sequence[str | os.PathLike], output_dir: str | os.PathLike,
              model: str | os.PathLike | DanModel, options: SROptions | None = None, *,
              psf: str | os.PathLike | Optics | None = None,
              channel_axis: int | str | None = None, series: int | None = None,
              overwrite: bool = False,
              scheduler: str | None = None, workers: int | None = None,
              quiet: bool = False, log: Callable[[str], Any] | None = None,
              **settings) -> BatchSummary:
    """Super-resolve every input TIFF into ``output_dir``; see :mod:`napari_dan.batch`.

    Parameters
    ----------
    inputs
        Files, directories and glob patterns.
    output_dir
        Where ``<stem>_x<s>.tif`` and ``<stem>_x<s>_kernel.tif`` go.
    model
        Bundled model name, checkpoint path or a loaded :class:`DanModel`.
    options, **settings
        The engine settings (:class:`~napari_dan.engine.options.SROptions`), or keywords
        replacing them (kernel_mode "global"/"per-plane"/"per-tile", tile_size, tile_overlap,
        device, precision, threads (default "auto": the cores other processes leave idle),
        runtime, compiled); see :func:`process_file`.
    psf
        A measured PSF file, "spots", or an :class:`~napari_dan.imaging.psf.Optics` (its pixel
        size, when left out, is each file's): non-blind, no kernel estimation.
    series
        Which image series of multi-series files (None: the first, with a warning per file
        that has more).
    scheduler, workers
        Process the planes on a dask.distributed cluster: the address of a running scheduler,
        or the number of local worker processes to start.
    quiet
        No progress bars or per-file lines.
    log
        Where per-file lines go (default: stdout, failures to stderr, between progress bars).

    Returns
    -------
    BatchSummary
        Per-file results; ``summary.failed`` is non-empty when something could not be done.

    Raises
    ------
    KeyboardInterrupt
        After removing the partial files of the file being written (completed files stay).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    try:
        opts = SROptions.build(options or BATCH_DEFAULTS, **settings)
    except TypeError as e:
        raise UsageError(str(e)) from None
    if opts.kernel_mode not in KERNEL_MODES:
        raise UsageError(f"unknown kernel mode {opts.kernel_mode!r}; use one of "
                         f"{', '.join(KERNEL_MODES)}")
    if scheduler and workers:
        raise UsageError("use either --scheduler or --workers, not both")
    if series is not None and (isinstance(series, bool) or not isinstance(series, int)
                               or series < 0):
        raise UsageError(f"--series must be a whole number >= 0, got {series!r}")
    try:
        check_threads(opts.threads)
    except InputError as e:
        raise UsageError(str(e)) from None
    if not (scheduler or workers):  # a cluster resolves the device on each worker
        from .engine import resolve_device

        try:
            resolve_device(opts.device)  # a missing GPU: one message, not one failure per file
        except InputError as e:
            raise UsageError(str(e)) from None
    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise UsageError(f"--output-dir {output_dir} exists and is not a directory")
    if psf is not None and not _is_spots(psf) and not isinstance(psf, Optics):
        # a bad PSF is one message, not one per file
        try:
            load_psf(psf)
        except InputError as e:
            raise UsageError(f"--psf {e}") from None
    files, problems = expand_inputs(inputs)
    loaded = load_model(model)
    # options that depend on the model: one message before any output folder is made
    from .engine.plan import resolve_iterations

    try:
        resolve_iterations(opts.iterations, loaded)
    except InputError as e:
        raise UsageError(str(e)) from None
    out_dir, made = _usable_output_dir(output_dir)
    summary = BatchSummary(results=list(problems), model=f"{loaded.name} (x{loaded.scale})")
    # two inputs with the same stem would write the same output: the later one is refused
    claimed: dict[Path, Path] = {}
    todo = []
    for f in files:
        o = out_dir / tiff_stem(f)
        if o in claimed:
            summary.results.append(FileResult(f, "failed", message=(
                f"writes the same output name as {claimed[o]}; process it into another "
                "--output-dir")))
            continue
        claimed[o] = f
        todo.append(f)

    write = log or tqdm.write
    warn = log or (lambda m: tqdm.write(m, file=sys.stderr))
    runner = None
    off = True if quiet else None  # None: tqdm hides the bars when stderr is not a terminal
    files_bar = tqdm(total=len(todo), desc="files", unit="file", disable=off, position=0)
    planes_bar = tqdm(total=0, desc="planes", unit="plane", disable=off, position=1,
                      leave=False)
    steps_bar = tqdm(total=0, desc="tiles", unit="tile", disable=off, position=2, leave=False)

    def on_start(n: int, desc: str) -> None:
        planes_bar.reset(total=n)
        planes_bar.set_description(desc[:40])

    def progress(done: int, total: int) -> None:
        if steps_bar.total != total:
            steps_bar.reset(total=total)
        steps_bar.n = done
        steps_bar.refresh()

    try:
        if scheduler or workers:
            from .distributed import ClusterRunner, start_cluster

            if isinstance(model, DanModel) and not model.source:
                raise InputError("a cluster run needs a bundled model name or a checkpoint file")
            client = start_cluster(scheduler, workers)
            try:
                runner = ClusterRunner(client, model if not isinstance(model, DanModel)
                                       else model.source)
            except BaseException:
                client.close()
                raise
            if not quiet:
                write(f"cluster: {runner.n_workers} worker(s) at {client.scheduler.address}, "
                      f"{runner.max_in_flight} planes in flight")
        for f in todo:
            r = process_file(f, out_dir, loaded, opts, psf=psf,
                             channel_axis=channel_axis, series=series, overwrite=overwrite,
                             inputs=files,
                             runner=runner, on_start=on_start, on_plane=planes_bar.update,
                             progress=progress)
            summary.results.append(r)
            files_bar.update(1)
            for w in r.warnings:
                warn(f"warning: {w}")
            if not quiet:
                if r.status == "done":
                    write(f"{f.name} -> {r.output.name}: {r.planes} plane(s), "
                          f"{r.seconds:.1f} s, " + ("kernel " if r.fwhm is not None else "")
                          + r.message)
                elif r.status == "skipped":
                    write(f"{f.name}: skipped, {r.message}")
            if r.status == "failed" and not quiet:
                warn(f"FAILED {r.message}" if str(f) in r.message else
                     f"FAILED {f}: {r.message}")
    finally:
        for bar in (steps_bar, planes_bar, files_bar):
            bar.close()
        if runner is not None:
            runner.close()
        for d in made:  # folders this run made and left empty (every input failed): removed
            try:
                d.rmdir()
            except OSError:
                break
        summary.seconds = time.perf_counter() - t0
    return summary
