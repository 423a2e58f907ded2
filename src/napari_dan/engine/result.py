"""The result of a run: :class:`SRResult`, and :func:`finish`, which gathers the planes' kernels,
statistics, consistency and metadata into it."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import EstimateWarning, InputError
from ..model import DanModel
from ..model.kernels import KernelStats, kernel_stats
from .normalize import HIGH_PERCENTILE, LOW_PERCENTILE
from .plan import (
    Plan,
    PlaneResult,
)

__all__ = ["SRResult", "finish", "model_info", "kernel_report", "spots_note", "blind_fwhm_of_plane",
           "SPOTS_DISAGREE", "SPOTS_ELONGATED", "EDGE_LOW", "EDGE_HIGH", "LOW_SNR"]

#: an estimated FWHM within this factor of the narrowest trained kernel, or above this share of
#: the widest, is "at the edge" of what the model knows (see :func:`kernel_report`)
EDGE_LOW, EDGE_HIGH = 1.25, 0.85

#: below this signal-to-noise ratio (:func:`napari_dan.imaging.camera.signal_to_noise` of the
#: field a kernel was estimated from) a microscopy model's blind estimate is unreliable: it
#: is biased by the noise (toward the middle of the trained PSF range on synthetic fields, to its
#: narrow end on nearly empty planes) (benchmarks/estimate_reliability.py,
#: docs/models.md "Session 17")
LOW_SNR = 20.0


@dataclass
class SRResult:
    """What :func:`super_resolve` returns.

    Attributes
    ----------
    image : numpy.ndarray, dask.array.Array or the caller's ``out``
        Same dtype and axis order as the input; the two spatial axes are ``scale`` times larger.
        Lazy (dask) when the input was a dask array and no ``out`` was given.
    kernel : (k, k) float32
        The blur kernel on the HR grid, sums to 1 (per-plane/per-tile: the mean kernel).
    kernels : (N, k, k) float32
        global or user kernel: ``kernel[None]``; per-plane: one per plane; per-tile: one per tile.
    kernel_centers : (N, D) float64
        global/user kernel: the array's centre (leading axes..., y, x); per-plane: the plane's
        leading-axes index (D = number of leading axes); per-tile: (leading index..., y, x) of the
        tile centre in input pixel coordinates.
    kernel_stats : KernelStats
        Widths, FWHM and angle of ``kernel`` (HR pixels).
    metadata : dict
        model, mode, device, precision, tiles, channel handling, normalisation, timing, the
        consistency check (``metadata["consistency"]``: relative residual, overall and per
        plane), the estimated kernels' FWHM against the model's trained range
        (``metadata["kernel_fwhm"]``, :func:`kernel_report`) and, for ``kernel="spots"``, the
        spot measurement (``metadata["spots"]``).
    residual : numpy.ndarray or None
        With ``residual=True``: the input minus the SR image seen through its kernel and
        sampled back (:mod:`napari_dan.imaging.consistency`), float32, the input's shape and
        units (alpha channels 0).
    """

    image: Any
    kernel: np.ndarray
    kernels: np.ndarray
    kernel_centers: np.ndarray
    kernel_stats: KernelStats
    metadata: dict = field(default_factory=dict)
    residual: np.ndarray | None = None


def kernel_report(kernels: np.ndarray, model: DanModel, what: str = "kernels",
                  snrs: Sequence[float | None] | None = None) -> dict:
    """FWHM (output-grid px, Gaussian fit) of estimated kernels against the range the model was
    trained on (:attr:`DanModel.trained_fwhm_range`), and how noisy the fields they came from were.

    Returns ``count``, ``min``, ``median``, ``max``; with ``snrs`` (one per kernel: the
    signal-to-noise ratio of the field it was estimated from) also ``snr`` (that list, in
    kernel order), ``snr_min`` and ``snr_median``; with a known range also ``trained_range``, ``near_narrow_end`` /
    ``near_wide_end`` (how many kernels are within ``EDGE_LOW`` x the narrowest trained FWHM,
    or above ``EDGE_HIGH`` x the widest), ``low_snr`` (how many came from fields below
    ``LOW_SNR``) and ``warning`` (a sentence for people, or None). Near the wide end the true
    PSF may be wider than the model can report; near the narrow end, or from a noisy field, the
    estimate of a microscopy model says little (for a photo model a narrow kernel just means a
    sharp image, and its noise is not what it was trained to read: no warning).
    """
    fw = np.array([kernel_stats(k).fwhm for k in kernels], np.float64)
    out: dict[str, Any] = {"what": what, "count": int(fw.size), "min": float(fw.min()),
                           "median": float(np.median(fw)), "max": float(fw.max())}
    snr = None
    if snrs is not None and len(snrs) == fw.size and all(s is not None for s in snrs):
        snr = np.array(snrs, np.float64)
        out.update(snr_min=float(snr.min()), snr_median=float(np.median(snr)),
                   snr=[float(v) for v in snr])
        # every field was flat (signal_to_noise 0): the kernels are where the loop starts, no
        # PSF; the UIs then give no width
        out["all_flat"] = bool(np.all(snr <= 0))
    rng = model.trained_fwhm_range
    if rng is None:
        return out
    lo, hi = rng
    narrow, wide = int(np.sum(fw <= EDGE_LOW * lo)), int(np.sum(fw >= EDGE_HIGH * hi))
    out.update(trained_range=[lo, hi], near_narrow_end=narrow, near_wide_end=wide, warning=None)
    one = fw.size == 1
    rng_text = f"of the model's PSF range ({lo:.1f}-{hi:.1f} px)"
    parts = []
    micro = model.sampling == "bin"
    noisy = 0
    if snr is not None:
        flat = int(np.sum(snr <= 0))  # signal_to_noise: 0 for a flat field
        noisy = int(np.sum((snr > 0) & (snr < LOW_SNR)))
        out["low_snr"] = noisy
        out["flat_fields"] = flat
        if flat:
            parts.append(("the image is flat" if one else f"{flat} of {fw.size} {what} come "
                          "from flat fields") + " (no signal): there was no PSF to estimate")
        if noisy and micro:
            parts.append((f"the image is noisy (signal-to-noise {snr[0]:.0f}, below "
                          f"{LOW_SNR:.0f}): noise biases the blind estimate" if one else
                          f"{noisy} of {fw.size} {what} come from noisy fields (signal-to-noise "
                          f"below {LOW_SNR:.0f}, lowest {snr[snr > 0].min():.0f}): noise biases their "
                          "blind estimates") + ", often toward the middle of the PSF range")
    if wide:
        parts.append(("the estimate is" if one else f"{wide} of {fw.size} {what} are") +
                     f" at the wide end {rng_text}: the PSF may be wider than it can report")
    if narrow and micro:
        parts.append(("the estimate is" if one else f"{narrow} of {fw.size} {what} are") +
                     f" at the narrow end {rng_text}: on nearly empty or noisy "
                     f"{'images' if one else what} the estimate means little")
    if parts and (noisy or wide or narrow):
        # on noisy fields the spots PSF usually finds too few spots 8 sigma above the background
        # (docs/models.md, Session 18), so it is pointed to a brighter recording
        ref = ("; a PSF measured from bright isolated spots (a brighter image of beads, if this "
               "one has too few) is the better reference" if out.get("low_snr") else
               "; a PSF measured from isolated spots is the better reference")
        out["warning"] = "; ".join(parts) + (ref if micro else "")
    elif parts:
        out["warning"] = "; ".join(parts)
    return out


#: a blind estimate and a spots PSF whose FWHMs differ by more than this factor get a note
SPOTS_DISAGREE = 1.25


def blind_fwhm_of_plane(result: SRResult, plane: Sequence[int] | None) -> float | None:
    """The blind estimate to compare a spots PSF measured on ``plane`` (its indices along the
    leading axes) with: the median FWHM of that plane's kernels when the result has a kernel per
    plane or per tile, else the result's median (one kernel for everything)."""
    spread = (result.metadata.get("kernel_fwhm") or {})
    centres = getattr(result, "kernel_centers", None)
    if plane and centres is not None and len(result.kernels) > 1:
        c = np.asarray(centres)
        n = len(plane)
        if c.ndim == 2 and c.shape[1] >= n:
            mine = [k for k, row in zip(result.kernels, c, strict=True)
                    if [int(round(v)) for v in row[:n]] == [int(i) for i in plane]]
            if mine:
                return float(np.median([kernel_stats(k).fwhm for k in mine]))
    return spread.get("median")


#: a spots PSF this elongated (major / minor FWHM) beside a round blind kernel gets a note
SPOTS_ELONGATED = 1.2


def spots_note(spots_fwhm: float, model: DanModel, blind_fwhm: float | None = None,
               spots_anisotropy: float | None = None) -> str | None:
    """A sentence when a PSF measured from spots (FWHM in output-grid px) cannot be compared
    with ``model``'s blind estimate as equals, else None: when it is wider than every PSF the
    model was trained on (the blind estimate cannot follow it), or when the two FWHMs differ by
    more than ``SPOTS_DISAGREE`` x (a blind estimator can count part of a spot's width as the
    specimen's, e.g. large beads or a flat-topped PSF, docs/models.md)."""
    rng = model.trained_fwhm_range
    if rng is not None and spots_fwhm > rng[1]:
        return (f"the spots PSF ({spots_fwhm:.1f} px) is wider than any PSF {model.name} was "
                f"trained on (up to {rng[1]:.1f} px): the blind estimate cannot follow it; use the "
                "spots PSF (non-blind)")
    if blind_fwhm is None or not blind_fwhm > 0 or not spots_fwhm > 0:
        return None
    ratio = spots_fwhm / blind_fwhm
    use = "to restore with it, choose the kernel 'PSF from spots' (CLI: --psf spots)"
    if not 1 / SPOTS_DISAGREE <= ratio <= SPOTS_DISAGREE:
        return (f"the spots PSF ({spots_fwhm:.1f} px) is {ratio:.2f}x the blind estimate "
                f"({blind_fwhm:.1f} px): for beads and puncta the spots PSF is the measurement; "
                + use)
    if spots_anisotropy is not None and spots_anisotropy >= SPOTS_ELONGATED:
        # the blind kernel is round whatever the PSF: small objects come out stretched along
        # the PSF's long axis (docs/user-guide.md, Elongated PSFs)
        return (f"the spots PSF is elongated ({spots_anisotropy:.2f}x longer one way) and the "
                "blind kernel is round, so beads come out stretched along its long axis; "
                + use + ", best with the image binned so the PSF is 4-6 px wide")
    return None


def finish(plan: Plan, image, planes: Sequence[PlaneResult], **metadata) -> SRResult:
    """The :class:`SRResult` of a run: kernel(s) and their centres, statistics and metadata.

    Parameters
    ----------
    plan
        The plan every plane was restored with.
    image
        The output array (what ``SRResult.image`` will be).
    planes
        The :class:`PlaneResult` of every plane, in plane order (their ``plane`` may be None).
    **metadata
        Extra or replaced metadata entries (``timing`` is merged).
    """
    lay = plan.layout
    if plan.mode in ("per-plane", "per-tile"):
        ks = [k for p in planes for k in p.kernels]
        if not ks:
            raise InputError(f"no kernels to report: {plan.mode} mode needs the results of "
                             "restore_plane for every plane")
        kernels = np.stack(ks).astype(np.float32)
        centres = np.array([c for p in planes for c in p.centres],
                           np.float64).reshape(len(ks), -1)
        kernel = kernels.mean(0)
    else:
        kernel = plan.estimate.kernel
        kernels = kernel[None].astype(np.float32)
        centres = np.array([(n - 1) / 2 for n in lay.lead_shape] +
                           [(lay.height - 1) / 2, (lay.width - 1) / 2])[None]
    kernel = (kernel / kernel.sum()).astype(np.float32)
    timing = {"estimate_s": plan.estimate_s + sum(p.estimate_s for p in planes),
              "restore_s": sum(p.restore_s for p in planes),
              "total_s": time.perf_counter() - plan.started}
    timing.update(metadata.pop("timing", {}))
    meta = {"model": model_info(plan.model), "mode": plan.mode, "device": str(plan.device),
            "precision": plan.precision.name, "precision_reason": plan.precision.reason,
            "runtime": plan.runner.note if plan.runner is not None else plan.requested_runtime,
            "tile_size": plan.tile, "tile_overlap": plan.overlap,
            "tile_overlap_note": plan.overlap_note, "channels": lay.handling,
            "normalisation": _normalisation(plan, planes), "input_shape": lay.shape,
            "output_shape": lay.out_shape, "dtype": str(lay.dtype), "planes": lay.n_planes,
            "spatial_axes": lay.spatial_axes, "channel_axis": lay.channel_axis,
            "tiles_per_plane": plan.tiles_per_plane, "tiles": sum(p.tiles for p in planes),
            "oom_retries": [r for p in planes for r in p.retries], "lazy": False,
            "timing": timing}
    est = plan.estimate
    if est is not None and est.patches and plan.mode == "global":
        meta["estimation_patches"] = [vars(p) for p in est.patches]
    if plan.mode != "user kernel":
        meta["iterations"] = plan.iterations
        meta["kernel_views"] = plan.views
        if plan.settle is not None:
            run = (est.rounds if est is not None else []) + [n for p in planes for n in p.rounds]
            meta["settled"] = {"l1_threshold": plan.settle, "rounds_run": run}
        snrs = ([est.snr] if plan.mode == "global" and est is not None
                else [s for p in planes for s in p.snrs])
        meta["kernel_fwhm"] = kernel_report(kernels, plan.model, "tiles" if plan.mode ==
                                            "per-tile" else "planes" if len(kernels) > 1
                                            else "kernels", snrs)
        kf = meta["kernel_fwhm"]
        # Python callers are told too, not only the UIs; a wholly flat image was told already
        # by the value map's warning ("the image is flat (uint16, nearly all of it 7) ...")
        said = plan.norm.flat and kf.get("all_flat")
        if kf.get("warning") and not said:
            warnings.warn(kf["warning"], EstimateWarning, stacklevel=2)
    if plan.mode == "user kernel":
        meta["kernel_projection_error"] = est.projection_error
        meta["kernel_source"] = "spots" if plan.spots else "optics" if plan.optics else "user"
    if plan.spots:
        meta["spots"] = plan.spots
    if plan.optics:
        meta["optics"] = plan.optics
    rels = [p.consistency for p in planes if p.consistency is not None]
    if rels:
        meta["consistency"] = {
            "relative_residual": float(np.sqrt(np.mean(np.square(rels)))),
            "per_plane": [float(r) for r in rels], "sampling": plan.model.sampling,
            "note": "||input - D(SR * kernel)|| / ||input|| in network units, interior; "
                    "includes the input's noise"}
    residual = metadata.pop("residual", None)
    meta.update(metadata)
    return SRResult(image, kernel, kernels, centres, kernel_stats(kernel), meta, residual)


def model_info(model: DanModel) -> dict:
    return {"name": model.name, "architecture": model.architecture, "scale": model.scale,
            "in_channels": model.in_channels, "kernel_size": model.kernel_size,
            "iterations": model.iterations, "source": model.source}


def _normalisation(plan: Plan, planes) -> dict:
    """The value map(s) used: the whole array's, or in per-plane mode each plane's (a lazy
    result's are made in its workers, so only the method is known here)."""
    if not plan.per_plane_norm:
        return plan.norm.to_dict()
    norms = [(p.lead, p.norm) for p in planes if p.norm is not None]
    out = {"method": f"percentiles {LOW_PERCENTILE}/{HIGH_PERCENTILE} -> 0/1 (each plane by its "
                     "own)"}
    if norms:
        out["per_plane"] = {"planes": [list(lead) for lead, _ in norms],
                            "low": [n.lo.tolist() for _, n in norms],
                            "high": [n.hi.tolist() for _, n in norms]}
    return out
