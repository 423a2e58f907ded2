"""napari sample data: degraded images with the true kernel beside them, and the original hidden.

The pictures and degradations come from :func:`napari_dan.samples.make_sample`; here they only
become layers. The true kernel sits on the HR pixel grid in the column where a run's estimated
``<name> kernel`` layer will appear, just above the image's top edge (a run's kernels start at
that edge and go down), so no result layer of any model or version can cover it.
"""

from __future__ import annotations

import numpy as np

from ..samples import make_sample
from .results import place_beside

__all__ = ["sample_layers", "sample_photo", "sample_microscopy", "sample_stack",
           "sample_fluorescence"]


def sample_layers(kind: str, scale: int) -> list[tuple]:
    """LayerDataTuples of one sample: the degraded image, its true kernel and the hidden original."""
    s = make_sample(kind, scale)
    lr, rgb = s["lr"], s["rgb"]
    nd = lr.ndim - (1 if rgb else 0)
    spatial = (nd - 2, nd - 1)
    px = s["pixel_size"]
    scale_lr = np.ones(nd)
    if px is not None:
        scale_lr[list(spatial)] = px
    translate = np.zeros(nd)
    units = {"units": ("pixel",) * (nd - 2) + (s["unit"],) * 2} if s["unit"] else {}
    meta = {"napari_dan_sample": {k: s[k] for k in ("kind", "scale", "sigma", "pixel_size",
                                                    "hr_pixel_size", "unit", "description")}}

    kernel = np.asarray(s["kernel"], dtype=np.float32)
    k = kernel.shape[-1]
    hr_px = scale_lr[spatial[0]] / scale
    # above the image's top edge, its bottom 3 HR px above where a run's kernel begins
    k_scale, k_translate = place_beside(scale_lr, translate, lr.shape, spatial, scale,
                                        row_offset=-(k + 3) * hr_px)
    # the original on the HR grid overlays the degraded image exactly (pixel-centre rule)
    hr_scale, hr_translate = scale_lr.copy(), translate.copy()
    for a in spatial:
        hr_scale[a] = scale_lr[a] / scale
        hr_translate[a] = translate[a] - scale_lr[a] * (scale - 1) / (2 * scale)

    name = s["name"]
    return [
        (s["hr"], dict(name=f"{name} original (HR)", scale=hr_scale, translate=hr_translate,
                       rgb=rgb, visible=False,
                       metadata={"napari_dan_sample": dict(meta["napari_dan_sample"],
                                                           role="original")}, **units), "image"),
        (lr, dict(name=name, scale=scale_lr, translate=translate, rgb=rgb, metadata=meta,
                  **units), "image"),
        (kernel, dict(name=f"{name} true kernel", scale=k_scale, translate=k_translate,
                      colormap="inferno", interpolation2d="nearest",
                      contrast_limits=[0.0, float(kernel.max())],
                      metadata={"napari_dan_sample": dict(meta["napari_dan_sample"],
                                                          role="true kernel")}, **units),
         "image"),
    ]


def sample_photo() -> list[tuple]:
    """scikit-image's astronaut, blurred (sigma 2.5 HR px) and downsampled x4."""
    return sample_layers("photo", 4)


def sample_microscopy() -> list[tuple]:
    """scikit-image's cell (0.107 µm pixels), blurred (sigma 2.5 HR px) and sampled x4."""
    return sample_layers("microscopy", 4)


def sample_stack() -> list[tuple]:
    """A fluorescence focus series: seven planes 0.3 µm below to 0.3 µm above focus, x2, for
    per-plane kernels (the PSF widens away from focus)."""
    return sample_layers("fluorescence-stack", 2)


def sample_fluorescence() -> list[tuple]:
    """Synthetic filaments and beads through a 1.4-NA objective, 80 nm camera pixels, 1,000
    photons (uint16 counts), for x2: what dan-x2-fluo is made for."""
    return sample_layers("fluorescence", 2)
