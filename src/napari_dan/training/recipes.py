"""How each bundled model was trained: one recipe per name, so the weights can be reproduced
with ``napari-dan train --recipe NAME`` (see docs/models.md for what each run cost)."""

from __future__ import annotations

from pathlib import Path

from .train import TrainConfig

__all__ = ["BENCHMARK_COPIES", "RECIPES", "recipe"]

_COMPACT = dict(nf=32, nb=4, ng=2, est_nf=32, est_nb=2, code_len=10, kernel_size=21, loop=4)

#: training images that are benchmark images: BSD 302003 is Set5's "woman" (rotated), found by
#: tests/training/test_data_separation.py on 2026-11-26. Every recipe leaves it out; the models bundled
#: before session 5 had trained on it and were replaced (docs/models.md, History).
BENCHMARK_COPIES = ("302003.jpg",)


def _shared(*parts: str) -> str:
    return str(Path("..", "shared", "data", *parts))


# natural images in luma plus two microscopy stacks (the others stay held out for benchmarks)
_GRAY_DATA = [_shared("train"), _shared("microscopy", "nuclei3d_cells3d.tif"),
              _shared("microscopy", "Bead_Image1_crop.tif")]
_GRAY_NOISE = dict(noise=True, noise_fraction=0.5, photons_range=(100.0, 10000.0),
                   read_noise_range=(0.0, 0.01))

# Every bundled model (2026-11-26, session 5) was trained from scratch on one NVIDIA H200, the
# four side by side (scripts/train-gpu.sh), each for 7 minutes of training time
# (--budget-minutes 7): batch 64, Adam lr 4e-4 with cosine decay to 1e-5, the first 70% of the
# schedule the Restorer on true kernel codes with the Estimator trained beside it, then the whole
# unrolled loop. ``steps`` is the count that budget reached, so ``--recipe NAME`` repeats the run
# by steps on any device.
_GPU = dict(batch=64, lr=4e-4, restorer_frac=0.7, stage1_estimator=True, val_every=500,
            checkpoint_every=500)

RECIPES: dict[str, dict] = {
    "dan-x4-rgb": dict(
        scale=4, in_nc=3, sigma_range=(0.2, 4.0), data=[_shared("train")], nf=64, lr_patch=32,
        **_GPU, steps=7271,
        description="DANv2 x4 for RGB photographs (1.0M-parameter Restorer), isotropic Gaussian "
                    "blur (setting 1)"),
    "dan-x2-rgb": dict(
        scale=2, in_nc=3, sigma_range=(0.2, 3.0), data=[_shared("train")], lr_patch=48,
        **_GPU, steps=8422,
        description="Compact DANv2 x2 for RGB photographs, isotropic Gaussian blur"),
    "dan-x4-gray": dict(
        scale=4, in_nc=1, sigma_range=(0.2, 4.0), **_GRAY_NOISE, data=_GRAY_DATA, nf=64, lr_patch=32,
        **_GPU, steps=6270,
        description="DANv2 x4 for grey/microscopy data (1.0M-parameter Restorer): Gaussian PSFs, "
                    "Poisson-Gaussian noise"),
    "dan-x2-gray": dict(
        scale=2, in_nc=1, sigma_range=(0.2, 3.0), **_GRAY_NOISE, data=_GRAY_DATA, nf=64, lr_patch=48,
        **_GPU, steps=5764,
        description="DANv2 x2 for grey/microscopy data (0.84M-parameter Restorer): Gaussian PSFs, "
                    "Poisson-Gaussian noise"),
}

# The microscopy models (issue 13), in two runs. First (session 7, 2026-12-01) synthetic
# fluorescence fields only, through the microscope model of napari_dan.imaging.microscope (PSFs
# of FWHM 1.6-10.5 HR px on the HR grid, camera binning, Poisson-Gaussian noise with offset, the
# engine's normalisation), starting from the grey models above (the Restorer's code input
# remapped to the new PCA basis), the Estimator pooling with learned weights: both at once on the
# CPU, one thread each, for a 105-minute training-time budget (restarted twice to change the
# budget: 75 -> 120 -> 105 min). Then (session 9) that run continued with 35% of the fields'
# specimens taken from real images: the cells3d confocal stack (nuclei) and the training
# photographs in luma, each entry drawn equally often (the other microscopy files are benchmark
# images), zoomed out 1.5-2x so that their own blur (cells3d is a confocal recording) falls to
# about the HR target's 1.5 px and the PSF label stays the whole blur: both at once on the CPU,
# one thread each, Adam lr 1e-4 with cosine decay to 1e-5 over a 70-minute training-time budget,
# the whole unrolled loop from the start (the "-real" recipes; bundled in sessions 9-11). Then
# (session 11) the loop trained as the engine runs it (``stage2="matched"``) with a loss on the
# kernel's width in its first, relative form (the "-matched" recipes, 110-minute budget), and
# (session 12) continued with the symmetric log form (100-minute budget; bundled x2, and the
# "dan-x4-fluo-width" stage). Then (session 13) x4 continued with three times the bead fields
# and twice the puncta fields (``specimen_kinds``), Adam 5e-5 -> 1e-5, 100-minute budget (the
# "dan-x4-fluo-beads" stage), and (session 15, bundled in session 16) with the width loss ten
# times heavier (1.0) on LR patches of 40 px at batch 5 (48 did not run with the real
# specimens' sizes), 100-minute budget. That run left out the cells3d stack (256 px, too small
# for 160 px HR patches zoomed out 2x) before session 16 kept such images at a smaller zoom, so
# the recipe now draws from it too and no longer repeats the bundled weights' draws exactly.
# ``steps`` is the count each budget reached. Logs: docs/training-logs/ (dan-x2-fluo-synthetic.txt
# is the synthetic run, dan-x2-fluo-real.txt the continuation, dan-x2-fluo-real-try1.txt an
# abandoned first try with half the fields real at 1-2x zoom, dan-x2-fluo-matched-s11.txt and
# dan-x2-fluo-s12.txt the last two; dan-x4-fluo-s13.txt the x4 bead stage,
# dan-x4-fluo-w10-s15.txt the last x4 stage). Since session 23 the bundled dan-x4-fluo is that
# model (the "dan-x4-fluo" recipe) with its Estimator replaced by one of the LR image alone,
# trained on this recipe's batches without the Restorer: ``python -m
# napari_dan.training.lr_estimator train --recipe dan-x4-fluo --minutes 75`` then ``export``
# (training/lr_estimator.py; log dan-x4-fluo-lr-estimator-s23.txt). Since session 25 the
# bundled dan-x2-fluo likewise: the "dan-x2-fluo" recipe's model with an LR-only Estimator
# trained by ``train --recipe dan-x2-fluo --lr-patch 48 --minutes 75``, then 40 minutes more with
# ``specimen_kinds=_BEAD_WEIGHTED`` (logs dan-x2-fluo-lr-estimator-s24.txt and
# dan-x2-fluo-lr-estimator-beads-s25.txt; the command in docs/models.md, Sessions 24-25).
# Since sessions 27 and 28 the bundled dan-x4-fluo's Restorer is fine-tuned with that Estimator
# frozen, on its kernels (training/restorer.py): on L1, then on the squared error (logs
# dan-x4-fluo-restorer-s27.txt, dan-x4-fluo-restorer-l2-s28.txt; docs/models.md, Sessions 27-28).
# Since session 29 the bundled dan-x2-fluo reads its kernel with dan-x4-fluo's Estimator from
# the LR image binned 2x2 (nothing trained: ``python -m napari_dan.training.lr_estimator combine
# --base <dan-x2-fluo of session 25> --coarse dan-x4-fluo --share 1``; docs/models.md, Session 29).
_MICRO = dict(in_nc=1, nf=64, data_kind="microscopy", est_attention=1, noise=True,
              photons_range=(30.0, 30000.0), clean_fraction=0.2, psf_fwhm_range=(1.6, 10.5),
              lr=2e-4, restorer_frac=0.3, stage1_estimator=True, val_every=100,
              checkpoint_every=25, val_images=4)
_REAL = dict(data=[_shared("train"), _shared("microscopy", "nuclei3d_cells3d.tif")],
             real_fraction=0.35, real_zoom=(1.5, 2.0), lr=1e-4, restorer_frac=0.0)
_MATCHED = dict(_REAL, stage2="matched", width_weight=0.1)
_BEAD_WEIGHTED = ("beads", "beads", "beads", "puncta", "puncta", "filaments", "actin", "rings",
                  "membranes", "nuclei")
RECIPES.update({
    "dan-x2-fluo-synthetic": dict(
        scale=2, lr_patch=48, batch=8, steps=4939, init_from="src/napari_dan/model/weights/dan-x2-gray.pt",
        **_MICRO,
        description="DANv2 x2 for fluorescence microscopy, first run: synthetic specimens only"),
    "dan-x4-fluo-synthetic": dict(
        scale=4, lr_patch=32, batch=8, steps=4407, init_from="src/napari_dan/model/weights/dan-x4-gray.pt",
        **_MICRO,
        description="DANv2 x4 for fluorescence microscopy, first run: synthetic specimens only"),
    "dan-x2-fluo-real": dict(
        scale=2, lr_patch=48, batch=8, steps=3470,
        init_from="runs/dan-x2-fluo-synthetic/dan-x2-fluo-synthetic.pt", **{**_MICRO, **_REAL},
        description="DANv2 x2 for fluorescence microscopy, second run: synthetic and real "
                    "specimens"),
    "dan-x4-fluo-real": dict(
        scale=4, lr_patch=32, batch=8, steps=3407,
        init_from="runs/dan-x4-fluo-synthetic/dan-x4-fluo-synthetic.pt", **{**_MICRO, **_REAL},
        description="DANv2 x4 for fluorescence microscopy, second run: synthetic and real "
                    "specimens"),
    "dan-x2-fluo-matched": dict(
        scale=2, lr_patch=48, batch=8, steps=5156,
        init_from="runs/dan-x2-fluo-real/dan-x2-fluo-real.pt", **{**_MICRO, **_MATCHED},
        width_form="relative",
        description="DANv2 x2 for fluorescence microscopy, third run: the loop trained as it runs"),
    "dan-x4-fluo-matched": dict(
        scale=4, lr_patch=32, batch=8, steps=5214,
        init_from="runs/dan-x4-fluo-real/dan-x4-fluo-real.pt", **{**_MICRO, **_MATCHED},
        width_form="relative",
        description="DANv2 x4 for fluorescence microscopy, third run: the loop trained as it runs"),
    "dan-x2-fluo": dict(
        scale=2, lr_patch=48, batch=8, steps=5661,
        init_from="runs/dan-x2-fluo-matched/dan-x2-fluo-matched.pt", **{**_MICRO, **_MATCHED},
        description="DANv2 x2 for fluorescence microscopy: synthetic and real specimens through "
                    "microscope PSFs, camera pixel integration, Poisson-Gaussian noise"),
    "dan-x4-fluo-width": dict(
        scale=4, lr_patch=32, batch=8, steps=5638,
        init_from="runs/dan-x4-fluo-matched/dan-x4-fluo-matched.pt", **{**_MICRO, **_MATCHED},
        description="DANv2 x4 for fluorescence microscopy, fourth run: the symmetric width loss"),
    "dan-x4-fluo-beads": dict(
        scale=4, lr_patch=32, batch=8, steps=4292,
        init_from="runs/dan-x4-fluo-width/dan-x4-fluo-width.pt",
        **{**_MICRO, **_MATCHED, "lr": 5e-5}, specimen_kinds=_BEAD_WEIGHTED,
        description="DANv2 x4 for fluorescence microscopy, fifth run: bead-weighted specimens"),
    "dan-x4-fluo": dict(
        scale=4, lr_patch=40, batch=5, steps=4899,
        init_from="runs/dan-x4-fluo-beads/dan-x4-fluo-beads.pt",
        **{**_MICRO, **_MATCHED, "lr": 5e-5, "width_weight": 1.0}, specimen_kinds=_BEAD_WEIGHTED,
        description="DANv2 x4 for fluorescence microscopy: synthetic and real specimens through "
                    "microscope PSFs, camera pixel integration, Poisson-Gaussian noise"),
})


def recipe(recipe_name: str, /, **overrides) -> TrainConfig:
    """The TrainConfig of a bundled model, with optional overrides (``name=`` renames the
    model: ``--recipe X --name Y``)."""
    if recipe_name not in RECIPES:
        raise KeyError(f"no recipe {recipe_name!r}; recipes: {', '.join(RECIPES)}")
    return TrainConfig(**{"name": recipe_name, **_COMPACT, "exclude": BENCHMARK_COPIES,
                          **RECIPES[recipe_name], **overrides})
