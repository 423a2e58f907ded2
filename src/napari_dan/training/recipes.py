"""How each bundled model was trained: one recipe per name, so the weights can be reproduced
with ``napari-dan train --recipe NAME`` (see docs/models.md for what each run cost)."""

from __future__ import annotations

from pathlib import Path

from .train import TrainConfig

__all__ = ["BENCHMARK_COPIES", "RECIPES", "recipe"]

_COMPACT = dict(nf=32, nb=4, ng=2, est_nf=32, est_nb=2, code_len=10, kernel_size=21, loop=4)

#: training images that are benchmark images: BSD 302003 is Set5's "woman" (rotated), found by
#: tests/test_data_separation.py on 2026-11-26. Every recipe leaves them out from then on; the
#: models bundled on that date were trained with it (docs/models.md says what that means).
BENCHMARK_COPIES = ("302003.jpg",)


def _shared(*parts: str) -> str:
    return str(Path("..", "shared", "data", *parts))


# natural images in luma plus two microscopy stacks (the others stay held out for benchmarks)
_GRAY_DATA = [_shared("train"), _shared("microscopy", "nuclei3d_cells3d.tif"),
              _shared("microscopy", "Bead_Image1_crop.tif")]
_GRAY_NOISE = dict(noise=True, noise_fraction=0.5, photons_range=(100.0, 10000.0),
                   read_noise_range=(0.0, 0.01))

# the default x4 RGB model: a 1.0M-parameter Restorer (nf 64), the Estimator at the compact size
_X4_LARGE = dict(scale=4, in_nc=3, sigma_range=(0.2, 4.0), data=[_shared("train")], nf=64,
                 batch=16, lr_patch=32,
                 description="DANv2 x4 for RGB photographs (1.0M-parameter Restorer), isotropic "
                             "Gaussian blur (setting 1)")

# the bundled models since 2026-11-26 (session 5): each trained from scratch on a GPU, batch 64,
# the first 70% of the schedule Restorer and Estimator on true codes, then the whole loop
_GPU = dict(batch=64, lr=4e-4, restorer_frac=0.7, stage1_estimator=True, val_every=500,
            checkpoint_every=500)

RECIPES: dict[str, dict] = {
    "dan-x4-rgb": dict(**{**_X4_LARGE, **_GPU}, steps=4000),
    "dan-x2-rgb": dict(scale=2, in_nc=3, sigma_range=(0.2, 3.0), data=[_shared("train")], lr_patch=48,
                       **_GPU, steps=4000,
                       description="Compact DANv2 x2 for RGB photographs, isotropic Gaussian blur"),
    "dan-x4-gray": dict(scale=4, in_nc=1, sigma_range=(0.2, 4.0), **_GRAY_NOISE, data=_GRAY_DATA, nf=64,
                        lr_patch=32, **_GPU, steps=4000,
                        description="DANv2 x4 for grey/microscopy data (1.0M-parameter Restorer): "
                                    "Gaussian PSFs, Poisson-Gaussian noise"),
    "dan-x2-gray": dict(scale=2, in_nc=1, sigma_range=(0.2, 3.0), **_GRAY_NOISE, data=_GRAY_DATA, nf=64,
                        lr_patch=48, **_GPU, steps=4000,
                        description="DANv2 x2 for grey/microscopy data (0.84M-parameter Restorer): "
                                    "Gaussian PSFs, Poisson-Gaussian noise"),
    # the default model (bundled since 2026-11-26 05:35), a third run: more Restorer training on
    # true codes (with the Estimator trained beside it), then the whole loop
    "dan-x4-rgb-cpu": dict(
        **_X4_LARGE, steps=1300, lr=2e-4, restorer_frac=0.7, stage1_estimator=True,
        init_from="runs/dan-x4-rgb-r2/dan-x4-rgb-r2.pt"),
    # bundled as dan-x4-rgb until 2026-11-26 05:35, a short second run on the base model:
    # Estimator and Restorer on true codes, then the loop
    "dan-x4-rgb-r2": dict(
        **_X4_LARGE, steps=400, lr=1e-4, restorer_frac=0.6, stage1_estimator=True,
        init_from="runs/dan-x4-rgb-base/dan-x4-rgb-base.pt"),
    # the Estimator (and the Restorer's 3-value output bias, the only other tensor whose shape
    # fits) comes from the compact x4 model trained 5,500 steps in all; see checkpoints/README.md
    "dan-x4-rgb-base": dict(
        **_X4_LARGE, steps=2600, lr=4e-4, restorer_frac=0.85, stage1_estimator=False,
        init_from="checkpoints/dan-x4-rgb-cont.pt"),
    "dan-x4-rgb-compact": dict(
        scale=4, in_nc=3, sigma_range=(0.2, 4.0), data=[_shared("train")],
        steps=3500, lr=4e-4, batch=16, lr_patch=32,
        description="Compact DANv2 x4 for RGB photographs, isotropic Gaussian blur (setting 1); "
                    "bundled as dan-x4-rgb until 2026-11-26, the start of the x2 and grey models"),
    "dan-x2-rgb-cpu": dict(
        scale=2, in_nc=3, sigma_range=(0.2, 3.0), data=[_shared("train")],
        steps=1200, lr=2e-4, batch=16, lr_patch=32,
        init_from="runs/dan-x4-rgb-compact/dan-x4-rgb-compact.pt",
        description="Compact DANv2 x2 for RGB photographs, isotropic Gaussian blur"),
    # an experiment, not bundled (docs/models.md): x2 at the default model's width, from its
    # Restorer body (its x4 upsampler does not fit) and the compact x2 model's Estimator
    "dan-x2-rgb-large": dict(
        scale=2, in_nc=3, sigma_range=(0.2, 3.0), data=[_shared("train")], nf=64,
        steps=1500, lr=2e-4, batch=16, lr_patch=32, restorer_frac=0.8, stage1_estimator=False,
        init_from=["runs/dan-x4-rgb-r2/dan-x4-rgb-r2.pt", "runs/dan-x2-rgb-cpu/dan-x2-rgb-cpu.pt"],
        description="DANv2 x2 for RGB photographs (1.0M-parameter Restorer), isotropic Gaussian "
                    "blur (experiment)"),
    # the x4 grey model at the default model's width: its Restorer body (input and output
    # convolutions converted to one channel) and the compact grey Estimator
    "dan-x4-gray-cpu": dict(
        scale=4, in_nc=1, sigma_range=(0.2, 4.0), **_GRAY_NOISE,
        data=_GRAY_DATA, nf=64,
        steps=1000, lr=2e-4, batch=16, lr_patch=32, restorer_frac=0.8, stage1_estimator=False,
        init_from=["runs/dan-x4-rgb-r2/dan-x4-rgb-r2.pt", "runs/dan-x4-gray-compact/dan-x4-gray-compact.pt"],
        description="DANv2 x4 for grey/microscopy data (1.0M-parameter Restorer): Gaussian PSFs, "
                    "Poisson-Gaussian noise"),
    "dan-x4-gray-compact": dict(
        scale=4, in_nc=1, sigma_range=(0.2, 4.0), **_GRAY_NOISE,
        data=_GRAY_DATA,
        steps=1200, lr=2e-4, batch=16, lr_patch=32,
        init_from="runs/dan-x4-rgb-compact/dan-x4-rgb-compact.pt",
        description="Compact DANv2 x4 for grey/microscopy data: Gaussian PSFs, Poisson-Gaussian "
                    "noise; bundled as dan-x4-gray until 2026-11-26"),
    # the x2 grey model at the default model's width (bundled since 2026-11-26): the body and
    # x2 upsampler of the wide x2 RGB experiment (converted to one channel) and the compact grey
    # x2 Estimator
    "dan-x2-gray-cpu": dict(
        scale=2, in_nc=1, sigma_range=(0.2, 3.0), **_GRAY_NOISE,
        data=_GRAY_DATA, nf=64,
        steps=2600, lr=2e-4, batch=16, lr_patch=32, restorer_frac=0.7, stage1_estimator=False,
        init_from=["runs/dan-x2-rgb-large/dan-x2-rgb-large.pt",
                   "runs/dan-x2-gray-compact/dan-x2-gray-compact.pt"],
        description="DANv2 x2 for grey/microscopy data (0.84M-parameter Restorer): Gaussian PSFs, "
                    "Poisson-Gaussian noise"),
    "dan-x2-gray-compact": dict(
        scale=2, in_nc=1, sigma_range=(0.2, 3.0), **_GRAY_NOISE,
        data=_GRAY_DATA,
        steps=1500, lr=2e-4, batch=16, lr_patch=32,
        init_from="runs/dan-x2-rgb-cpu/dan-x2-rgb-cpu.pt",
        description="Compact DANv2 x2 for grey/microscopy data: Gaussian PSFs, Poisson-Gaussian noise; "
                    "bundled as dan-x2-gray until 2026-11-26"),
    # two experiments on the compact one, not bundled (docs/models.md): better on Set5/Set14 in
    # grey, worse on clean microscopy. First mostly Estimator training (on SR images made with codes between the
    # Dirac's and the truth), then the loop ...
    "dan-x2-gray-est": dict(
        scale=2, in_nc=1, sigma_range=(0.2, 3.0), **_GRAY_NOISE,
        data=_GRAY_DATA,
        steps=1500, lr=1e-4, batch=16, lr_patch=32, restorer_frac=0.7, stage1_estimator=True,
        init_from="runs/dan-x2-gray-compact/dan-x2-gray-compact.pt",
        description="Compact DANv2 x2 for grey/microscopy data (experiment)"),
    # ... then the whole loop only, so the Restorer learns to read the Estimator's codes
    "dan-x2-gray-loop": dict(
        scale=2, in_nc=1, sigma_range=(0.2, 3.0), **_GRAY_NOISE,
        data=_GRAY_DATA,
        steps=1000, lr=1e-4, batch=16, lr_patch=32, restorer_frac=0.0,
        init_from="runs/dan-x2-gray-est/dan-x2-gray-est.pt",
        description="Compact DANv2 x2 for grey/microscopy data (experiment)"),
}


def recipe(name: str, **overrides) -> TrainConfig:
    """The TrainConfig of a bundled model, with optional overrides."""
    if name not in RECIPES:
        raise KeyError(f"no recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return TrainConfig(name=name, **{**_COMPACT, "exclude": BENCHMARK_COPIES, **RECIPES[name], **overrides})
