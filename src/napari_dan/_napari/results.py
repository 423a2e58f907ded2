"""Engine results as napari layers, placed on the source layer's grid.

Layers made from one run of the source layer ``<name>`` at scale ``s``:

- ``<name> DAN x<s>``: the SR image, same dtype, colormap, contrast limits and blending as the
  source, overlaying it exactly (napari puts pixel centres at integer coordinates, so an s-fold
  upsample of a layer with scale S and translate T has scale S/s and translate T - S(s-1)/(2s) on
  the two spatial axes);
- ``<name> kernel``: the estimated kernel (PSF) on the HR pixel grid (scale S/s), beside the
  image's right edge, top-aligned; one kernel per plane for per-plane runs (it follows the dims
  slider, and its contrast follows the plane shown, so a wide kernel is as visible as a narrow one);
- per-tile runs also give ``<name> kernel map`` (every tile's kernel at its place on the tile grid,
  the mosaic as large as the image, right of the kernel) and ``<name> FWHM ellipses (xF)``: one
  ellipse per tile over the image, its axes the kernel's FWHM along its principal axes, enlarged
  F times so it can be seen (F is in the name and the metadata).

Every layer's ``metadata["napari_dan"]`` holds the source name, the run parameters, the model,
the mode and the kernel statistics (:func:`napari_dan.model.kernels.kernel_stats`).

Every layer also gets the source's rotation, shear and affine (:func:`_place`), so it overlays
the source however that is placed.

Re-running (:func:`add_result_layers`): layers of an earlier run of the same source layer (an id
kept in its metadata, not only its name) with the same parameters are replaced (same names, same
place in the layer list), unless the user renamed them; a run with different parameters, or of
another layer of the same name, adds a new set with a version suffix, ``<name> DAN x4 [2]``,
``[3]``, ...; the layers beside the image (kernel, PSF from spots, kernel map) of version *v*
move right by *v - 1* times their group's width plus a gap, so versions do not cover each other.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..model.kernels import kernel_stats
from .request import RunRequest, square_pixels

__all__ = ["sr_geometry", "kernel_geometry", "place_beside", "result_layers", "add_result_layers",
           "physical_pixel", "tile_grid", "ellipse_corners", "nice_factor", "KEY", "BESIDE"]

KEY = "napari_dan"  # metadata key of every layer this plugin makes
LayerDataTuple = tuple[Any, dict, str]


def sr_geometry(req: RunRequest, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale and translate (layer axes) of an s-fold upsample of the request's pixels."""
    scale, translate = req.layer_scale.copy(), req.layer_translate.copy()
    for a in req.spatial:
        scale[a] = req.layer_scale[a] / s
        translate[a] = req.layer_translate[a] - req.layer_scale[a] * (s - 1) / (2 * s)
    for a, i in req.plane.items():  # one plane kept as a length-1 axis: put it at its index
        translate[a] = req.layer_translate[a] + req.layer_scale[a] * i
    return scale, translate


def _gap(req: RunRequest) -> float:
    """Space between the image and what is placed beside it: 4% of its width, at least 2 px."""
    ax = req.spatial[1]
    return max(2.0, 0.04 * req.data_shape[ax]) * float(req.layer_scale[ax])


def place_beside(scale: np.ndarray, translate: np.ndarray, shape: tuple[int, ...],
                 spatial: tuple[int, int], s: int, row_offset: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Scale (HR pixels: S/s) and translate of a kernel image just right of an image with
    ``scale``/``translate``/``shape``, its top at the image's top edge plus ``row_offset``
    (world units; to stack several kernels below each other)."""
    ay, ax = spatial
    k_scale, k_translate = np.array(scale, dtype=float), np.array(translate, dtype=float)
    k_scale[ay], k_scale[ax] = scale[ay] / s, scale[ax] / s
    right = translate[ax] + (shape[ax] - 0.5) * scale[ax]  # pixel centres at integers
    gap = max(2.0, 0.04 * shape[ax]) * scale[ax]
    k_translate[ax] = right + gap + 0.5 * k_scale[ax]
    k_translate[ay] = translate[ay] - 0.5 * scale[ay] + 0.5 * k_scale[ay] + row_offset
    return k_scale, k_translate


def kernel_geometry(req: RunRequest, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale and translate of the estimated kernel: beside the source image, on the HR grid, at
    the run's plane for a current-plane run."""
    _, plane_translate = sr_geometry(req, s)
    k_scale, k_translate = place_beside(req.layer_scale, req.layer_translate, req.data_shape,
                                        req.spatial, s)
    for a in req.plane:
        k_translate[a] = plane_translate[a]
    return k_scale, k_translate


def physical_pixel(req: RunRequest, s: int) -> tuple[float | None, str | None]:
    """HR pixel size and unit for the kernel statistics: typed in, the layer's, the source
    file's (``req.pixel``), or the layer's scale without a unit; (None, None) when none is known
    (scale 1 and pixel units)."""
    if req.pixel is not None:
        return req.pixel[0] / s, req.pixel[1]
    if not square_pixels(req.layer_scale, req.spatial):
        return None, None
    ax = req.spatial[1]
    size = float(req.layer_scale[ax]) / s
    unit = None
    if req.units:
        u = req.units[ax]
        text = f"{u:~P}" if hasattr(u, "dimensionality") else str(u)
        unit = None if text in ("px", "pixel", "") else text
    if unit is None and abs(float(req.layer_scale[ax]) - 1.0) < 1e-12:
        return None, None
    return size, unit


def _restore_planes(image: np.ndarray, req: RunRequest) -> np.ndarray:
    """Put back the length-1 plane axes a current-plane run squeezed away."""
    if req.plane:
        image = np.expand_dims(image, axis=tuple(sorted(req.plane)))
    return image


def _lead_axes(req: RunRequest) -> list[int]:
    """Layer axes of a kernel image other than its two spatial ones (planes, non-RGB channels)."""
    return [a for a in range(req.layer_ndim) if a not in req.spatial]


def _lead_sizes(req: RunRequest) -> list[int]:
    return [1 if a in req.plane else req.data_shape[a] for a in _lead_axes(req)]


def _plane_kernels(req: RunRequest, result: Any) -> np.ndarray:
    """Kernels arranged as the layer's non-spatial axes + (k, k): one per plane where the engine
    gave one per plane, otherwise the single kernel repeated (so it shows on every plane)."""
    lead, sizes = _lead_axes(req), _lead_sizes(req)
    kernel = np.asarray(result.kernel, dtype=np.float32)
    k = kernel.shape[-1]
    out = np.empty(sizes + [k, k], dtype=np.float32)
    out[...] = kernel
    kernels = np.asarray(result.kernels, dtype=np.float32).reshape(-1, k, k)
    planes = [a for a in lead if a in req.other_axes and a not in req.plane]
    n_planes = int(np.prod([req.data_shape[a] for a in planes])) if planes else 1
    if (req.options.kernel_mode == "per-plane" and planes
            and len(kernels) == n_planes):
        idx_shape = [req.data_shape[a] if a in planes else 1 for a in lead]
        out[...] = kernels.reshape(idx_shape + [k, k])
    return out


def _to_layer_order(arr: np.ndarray, req: RunRequest) -> np.ndarray:
    """(lead..., y, x) -> the layer's axis order (spatial axes where the source has them)."""
    return np.moveaxis(arr, [-2, -1], list(req.spatial))


def tile_grid(centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows and columns of a tile grid from tile centres (N, 2) as (y, x): the sorted distinct
    centre rows and columns and each tile's row and column index."""
    ys, iy = np.unique(np.round(centers[:, 0], 3), return_inverse=True)
    xs, ix = np.unique(np.round(centers[:, 1], 3), return_inverse=True)
    return ys, xs, iy.ravel(), ix.ravel()


def nice_factor(x: float) -> float:
    """The largest of 1, 2, 5, 10, 20, 50, ... not above ``x`` (at least 1)."""
    if not np.isfinite(x) or x <= 1:
        return 1.0
    e = 10 ** math.floor(math.log10(x))
    return float(max(m * e for m in (1, 2, 5) if m * e <= x))


def ellipse_corners(center: np.ndarray, major: float, minor: float, angle_deg: float
                    ) -> np.ndarray:
    """The 4 corners (y, x) of the box napari draws an ellipse in: full axes ``major``/``minor``,
    the major axis ``angle_deg`` from the x axis (counter-clockwise, y pointing down the rows, as
    :class:`~napari_dan.model.kernels.KernelStats` measures it)."""
    t = math.radians(angle_deg)
    u = np.array([math.sin(t), math.cos(t)]) * major / 2  # (dy, dx) along the major axis
    v = np.array([math.cos(t), -math.sin(t)]) * minor / 2
    c = np.asarray(center, dtype=float)
    return np.stack([c - u - v, c + u - v, c + u + v, c - u + v])


def _tile_centres(req: RunRequest, result: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-tile kernels (N, k, k), their centres (N, 2) as (y, x) in source pixels, and their
    planes (N, L): indices along the engine's leading axes (the source's plane axes that were
    run, in order; L = 0 for a single plane)."""
    kernels = np.asarray(result.kernels, dtype=np.float32)
    c = np.asarray(result.kernel_centers, dtype=float)
    if c.ndim != 2 or c.shape[1] < 2 or len(c) != len(kernels):
        raise ValueError(f"engine gave tile centres of shape {c.shape} for {len(kernels)} kernels")
    return kernels, c[:, -2:], c[:, :-2]


def _kernel_map(req: RunRequest, s: int, result: Any, left: float, model_name: str,
                meta: dict) -> tuple[LayerDataTuple, LayerDataTuple, float]:
    """The per-tile kernel mosaic and the FWHM ellipses; returns them and the map's right edge."""
    kernels, yx, planes = _tile_centres(req, result)
    k = kernels.shape[-1]
    ys, xs, iy, ix = tile_grid(yx)
    nr, nc = len(ys), len(xs)
    ay, ax = req.spatial
    h, w = req.data_shape[ay], req.data_shape[ax]
    # mosaic as large as the image: every tile's kernel in its cell, HR pixels kept square in
    # physical terms (the same factor f on both axes)
    f = min(h / (nr * k), w / (nc * k))
    lead, sizes = _lead_axes(req), _lead_sizes(req)
    plane_axes = [a for a in lead if a in req.other_axes and a not in req.plane]
    mosaic = np.zeros(sizes + [nr * k, nc * k], dtype=np.float32)
    for n, kern in enumerate(kernels):
        idx = [slice(None)] * len(lead)
        for j, a in enumerate(plane_axes):  # whole-stack runs: the tile's own plane
            if planes.shape[1] > j:
                idx[lead.index(a)] = int(round(planes[n, j]))
        mosaic[tuple(idx) + (slice(iy[n] * k, (iy[n] + 1) * k),
                             slice(ix[n] * k, (ix[n] + 1) * k))] = kern
    scale, translate = sr_geometry(req, s)
    scale[ay] = req.layer_scale[ay] * f
    scale[ax] = req.layer_scale[ax] * f
    translate[ax] = left + 0.5 * scale[ax]
    translate[ay] = req.layer_translate[ay] - 0.5 * req.layer_scale[ay] + 0.5 * scale[ay]
    stats = [kernel_stats(kern) for kern in kernels]
    map_meta = dict(meta, kind="kernel map", tile_rows=nr, tile_cols=nc,
                    tile_centers_yx=yx.tolist(),
                    tile_fwhm_px=[st.fwhm for st in stats],
                    note="each cell holds one tile's kernel on the HR grid, magnified "
                         f"{f * s:.3g}x relative to the HR pixel")
    name = req.source_name
    map_tuple = (_to_layer_order(mosaic, req),
                 dict(name=f"{name} kernel map", scale=scale, translate=translate,
                      colormap="inferno", contrast_limits=[0.0, float(max(mosaic.max(), 1e-12))],
                      blending="translucent", interpolation2d="nearest", metadata={KEY: map_meta}),
                 "image")
    right = left + mosaic.shape[-1] * scale[ax]

    # FWHM ellipses over the image, in source pixel coordinates (the layer gets the source's
    # scale and translate). Axes in LR pixels = HR FWHM / s, enlarged by a "nice" factor so the
    # mean ellipse spans about 60% of the typical tile spacing (the median: the last row and
    # column of tiles are moved back to end at the border and sit closer).
    spacing = min(np.median(np.diff(ys)) if nr > 1 else h, np.median(np.diff(xs)) if nc > 1 else w)
    mean_major = float(np.mean([st.fwhm_major for st in stats])) / s
    factor = nice_factor(0.6 * spacing / max(mean_major, 1e-6))
    shapes = []
    for n, st in enumerate(stats):
        corners = ellipse_corners(yx[n], factor * st.fwhm_major / s, factor * st.fwhm_minor / s,
                                  st.angle)
        full = np.zeros((4, req.layer_ndim))
        full[:, ay], full[:, ax] = corners[:, 0], corners[:, 1]
        for a in lead:
            if a in req.plane:
                full[:, a] = req.plane[a]
            elif a in plane_axes and planes.shape[1] > plane_axes.index(a):
                full[:, a] = planes[n, plane_axes.index(a)]
        shapes.append(full)
    px, unit = physical_pixel(req, s)
    features = {"fwhm_px": [st.fwhm for st in stats],
                "fwhm_major_px": [st.fwhm_major for st in stats],
                "fwhm_minor_px": [st.fwhm_minor for st in stats],
                "anisotropy": [st.anisotropy for st in stats],
                "angle_deg": [st.angle for st in stats]}
    if px is not None:
        features[f"fwhm_{unit or 'world'}"] = [st.fwhm * px for st in stats]
    ell_meta = dict(meta, kind="FWHM ellipses", exaggeration=factor,
                    note=f"ellipse axes = kernel FWHM (major, minor) x {factor:g}, "
                         "drawn at each tile's centre")
    edge = max(0.6, 0.004 * min(h, w))
    ell_tuple = (shapes, dict(name=f"{name} FWHM ellipses (x{factor:g})", shape_type="ellipse",
                              scale=req.layer_scale.copy(), translate=req.layer_translate.copy(),
                              edge_color="cyan", face_color=[0, 0, 0, 0], edge_width=edge,
                              features=features, metadata={KEY: ell_meta}), "shapes")
    return map_tuple, ell_tuple, right


def result_layers(req: RunRequest, result: Any, model_name: str, s: int) -> list[LayerDataTuple]:
    """LayerDataTuples for the SR image, the kernel and (per tile) the kernel map and ellipses.

    Parameters
    ----------
    req : RunRequest
        What was run (from :func:`~napari_dan._napari.request.build_request`).
    result : SRResult
        The engine's result.
    model_name : str
        Shown in the metadata.
    s : int
        The model's scale factor.
    """
    name = req.source_name
    mode = {"estimated": req.options.kernel_mode, "spots": "PSF from spots",
            "optics": "PSF from optics", "array": "user PSF"}[req.options.kernel_source]
    px, unit = physical_pixel(req, s)
    stats = kernel_stats(result.kernel, px, unit)
    meta = {"source": name, "source_id": req.source_id, "params": req.params,
            "model": model_name, "scale": s, "mode": mode,
            "kernel_stats": stats.to_dict(), "kernel_summary": stats.summary(),
            "engine": dict(getattr(result, "metadata", {}) or {}), "notes": list(req.notes)}

    sr_scale, sr_translate = sr_geometry(req, s)
    sr_kw = dict(name=f"{name} DAN x{s}", scale=sr_scale, translate=sr_translate,
                 metadata={KEY: dict(meta, kind="super-resolved")}, **req.display)
    if req.rgb:
        sr_kw["rgb"] = True
    layers: list[LayerDataTuple] = [(_restore_planes(result.image, req), sr_kw, "image")]

    kernels = _plane_kernels(req, result)
    k_scale, k_translate = kernel_geometry(req, s)
    flat = kernels.reshape(-1, *kernels.shape[-2:])
    kmeta = dict(meta, kind="kernel", grid="HR pixels",
                 plane_kernel_stats=[kernel_stats(kk).to_dict() for kk in flat][:64])
    if len(flat) > 1 and not np.allclose(flat, flat[:1]):
        # a wide kernel's peak is a small fraction of a narrow one's (1/30 between 1.5 and
        # 9 px): with one contrast range for the stack the wide ones would show black
        kmeta["contrast"] = "per plane"
    layers.append((_to_layer_order(kernels, req),
                   dict(name=f"{name} kernel", scale=k_scale, translate=k_translate,
                        colormap="inferno", blending="translucent", interpolation2d="nearest",
                        contrast_limits=[0.0, float(max(kernels.max(), 1e-12))],
                        metadata={KEY: kmeta}), "image"))

    engine_meta = getattr(result, "metadata", {}) or {}
    spots = engine_meta.get("spots_comparison") or {}
    if "kernel" in spots:  # the PSF measured from spots, below DAN's kernel, same grid
        ks = np.asarray(spots["kernel"], np.float32)
        ay = req.spatial[0]
        s_translate = k_translate.copy()
        s_translate[ay] += (kernels.shape[-2] + 2) * k_scale[ay]
        sst = kernel_stats(ks, px, unit)
        smeta = dict(meta, kind="spots PSF", grid="HR pixels", kernel_stats=sst.to_dict(),
                     kernel_summary=sst.summary(),
                     spots={k: v for k, v in spots.items() if k != "kernel"})
        sp = list(req.spatial)
        layers.append((ks, dict(name=f"{name} PSF from spots", scale=k_scale[sp],
                                translate=s_translate[sp], colormap="inferno",
                                **({"units": [req.units[a] for a in sp]} if req.units else {}),
                                blending="translucent", interpolation2d="nearest",
                                contrast_limits=[0.0, float(max(ks.max(), 1e-12))],
                                metadata={KEY: smeta}), "image"))
    res_map = getattr(result, "residual", None)
    if res_map is not None:  # input - SR seen through its kernel: on the source's grid
        r_scale, r_translate = sr_geometry(req, 1)
        if req.rgb:  # one map: the colour channels' mean
            res_map = np.asarray(res_map).mean(axis=-1)
        lim = float(np.percentile(np.abs(res_map), 99.5)) or 1.0
        layers.append((_restore_planes(res_map, req),
                       dict(name=f"{name} residual", scale=r_scale, translate=r_translate,
                            colormap="bwr", contrast_limits=[-lim, lim], blending="translucent",
                            visible=True, metadata={KEY: dict(meta, kind="residual",
                            note="input minus the SR image blurred with its kernel and "
                                 "sampled back; structure marks what the network invented "
                                 "or lost")}), "image"))

    if mode == "per-tile" and getattr(result, "kernel_centers", None) is not None:
        ax = req.spatial[1]
        left = (k_translate[ax] - 0.5 * k_scale[ax] + kernels.shape[-1] * k_scale[ax]
                + _gap(req))
        map_tuple, ell_tuple, _ = _kernel_map(req, s, result, left, model_name, meta)
        layers += [map_tuple, ell_tuple]
    if req.units:  # every layer in the source's units, or napari stops using units at all
        for _, kw, _ in layers:
            kw.setdefault("units", req.units)
    _beside_step(req, layers)
    for _, kw, _ in layers:
        _place(req, kw)
    return layers


# the layers placed beside the image (not over it): a later version of the run is moved right
# by the width of this group, so versions sit side by side instead of covering each other
BESIDE = ("kernel", "spots PSF", "kernel map")


def _beside_step(req: RunRequest, layers: list[LayerDataTuple]) -> None:
    """Record in each layer placed beside the image how far right (world units, before the
    source's affine) each later version moves it: the group's width plus a gap."""
    group = []
    for data, kw, _ in layers:
        if kw["metadata"][KEY]["kind"] in BESIDE:
            axis = req.spatial[1] if len(kw["scale"]) == req.layer_ndim else len(kw["scale"]) - 1
            left = float(kw["translate"][axis]) - 0.5 * float(kw["scale"][axis])
            group.append((kw, axis, left, left + np.shape(data)[axis] * float(kw["scale"][axis])))
    if not group:
        return
    step = max(g[3] for g in group) - min(g[2] for g in group) + _gap(req)
    for kw, axis, _, _ in group:
        kw["metadata"][KEY]["beside_step"] = {"axis": axis, "step": step}


def _place(req: RunRequest, kw: dict) -> None:
    """Give a result layer the source's rotation, shear and affine. Its scale and translate were
    computed as if the source had none (``P = scale * x + translate``); napari maps a layer's
    data as ``world = A(R Sh diag(scale) x + translate)``, so with ``M = R Sh`` of the source
    (scale ``S``, translate ``T``) the layer gets the affine ``A @ [M, T - M T]``: exactly
    where the same point of the source lands. A layer over fewer axes (the spots PSF: the two
    spatial ones) takes those rows and columns."""
    if req.layer_linear is None and req.layer_affine is None:
        return
    n = req.layer_ndim
    axes = list(range(n)) if len(kw["scale"]) == n else list(req.spatial)
    m = np.eye(n) if req.layer_linear is None else req.layer_linear
    t = req.layer_translate
    inner = np.eye(n + 1)
    inner[:n, :n] = m
    inner[:n, n] = t - m @ t
    full = inner if req.layer_affine is None else req.layer_affine @ inner
    keep = axes + [n]
    kw["affine"] = full[np.ix_(keep, keep)]


def _versioned(name: str, version: int) -> str:
    return name if version == 1 else f"{name} [{version}]"


def per_slice_contrast(layer: Any) -> None:
    """Let an image layer's contrast limits follow the data of the slice shown (napari's
    "auto-contrast: continuous": the public ``auto_contrast`` where this napari has it, else
    the older private ``_keep_auto_contrast``)."""
    if hasattr(type(layer), "auto_contrast"):
        layer.auto_contrast = True
    elif hasattr(layer, "_keep_auto_contrast"):
        layer._keep_auto_contrast = True
        layer.reset_contrast_limits()


def add_result_layers(viewer: Any, tuples: list[LayerDataTuple]) -> list[Any]:
    """Add a run's layers to ``viewer``: replace an earlier run of the same source with the same
    parameters (in place in the layer list), else add them under the first free version suffix."""
    from napari.layers import Layer

    meta0 = tuples[0][1]["metadata"][KEY]
    source, params, sid = meta0["source"], meta0["params"], meta0.get("source_id", "")
    existing = [ly for ly in viewer.layers if isinstance(ly.metadata.get(KEY), dict)
                and ly.metadata[KEY].get("source") == source]
    # replaced: results of this very layer (not of another of the same name) with the same
    # parameters, under the names they were given (a result the user renamed is kept)
    same = [ly for ly in existing if ly.metadata[KEY].get("params") == params
            and ly.metadata[KEY].get("source_id", "") == sid
            and ly.name == ly.metadata[KEY].get("layer_name", ly.name)]
    if same:
        version = same[0].metadata[KEY].get("version", 1)
    else:
        taken = {ly.metadata[KEY].get("version", 1) for ly in existing}
        version = next(v for v in range(1, len(taken) + 2) if v not in taken)
    added = []
    for data, kw, kind in tuples:
        kw = dict(kw, name=_versioned(kw["name"], version))
        step = kw["metadata"][KEY].get("beside_step")
        if step and version > 1:  # beside the earlier versions' kernels, not over them
            kw["translate"] = np.array(kw["translate"], dtype=float)
            kw["translate"][step["axis"]] += (version - 1) * step["step"]
        kw["metadata"] = {KEY: dict(kw["metadata"][KEY], version=version, layer_name=kw["name"])}
        layer = Layer.create(data, kw, kind)
        if kw["metadata"][KEY].get("contrast") == "per plane":
            per_slice_contrast(layer)
        old = [ly for ly in same if ly.metadata[KEY].get("kind") == kw["metadata"][KEY]["kind"]]
        if old:
            index = viewer.layers.index(old[0])
            viewer.layers.remove(old[0])
            viewer.layers.insert(index, layer)
        else:
            viewer.layers.append(layer)
        added.append(layer)
    for ly in same:  # a replaced run that made more layers (e.g. per tile before) loses the rest
        if ly in viewer.layers and ly.metadata[KEY].get("kind") not in \
                {kw["metadata"][KEY]["kind"] for _, kw, _ in tuples}:
            viewer.layers.remove(ly)
    return added
