"""The benchmark images are not in the training data (docs/models.md says so; this checks it).

Runs only beside ../shared. Each image is reduced to a 24x24 grey thumbnail (zero mean, unit
norm); a Set5/Set14 image whose thumbnail correlates above 0.95 with a training image's, in any of
the 8 flips/rotations, counts as the same picture (resized or re-encoded copies included).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "bench").is_dir() or not (SHARED / "train").is_dir(),
                                reason="needs ../shared/data (bench and train)")

#: the files of ../shared/data/microscopy that benchmarks/microscopy.py scores on
MICROSCOPY_BENCHMARK_FILES = {"microtubules_tirf_widefield.tif", "nuclei2d_dsb2018.tif",
                              "DeconvolutionSampleVerticalGrid1AU-crop.tif", "Bead_Image1_crop.tif",
                              "psf_avg_45cube.tif"}
EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _thumb(path: Path) -> np.ndarray:
    from skimage.io import imread
    from skimage.transform import resize

    img = np.asarray(imread(path), dtype=np.float64)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=-1)
    t = resize(img, (24, 24), anti_aliasing=True)
    t = t - t.mean()
    return t / (np.linalg.norm(t) + 1e-12)


def _best_match(t: np.ndarray, thumbs: np.ndarray) -> np.ndarray:
    """Each row of ``thumbs``' best correlation with ``t`` under the 8 flips/rotations."""
    return np.max([thumbs @ np.rot90(v, k).ravel() for v in (t, t[::-1]) for k in range(4)], axis=0)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTS)


def _lookalikes(bench: list[Path], train: list[Path]) -> list[tuple[float, str, str]]:
    """(correlation, benchmark name, training path) of each benchmark image's closest training image."""
    thumbs = np.stack([_thumb(p).ravel() for p in train])  # (N, 576)
    out = []
    for b in bench:
        corr = _best_match(_thumb(b), thumbs)
        i = int(np.argmax(corr))
        out.append((float(corr[i]), b.name, train[i].relative_to(SHARED).as_posix()))
    return sorted(out, reverse=True)


@pytest.mark.slow
def test_no_benchmark_image_is_in_any_recipes_training_files():
    from napari_dan.training.data import find_images
    from napari_dan.training.recipes import BENCHMARK_COPIES, RECIPES, recipe

    bench = [p for s in ("Set5", "Set14") for p in _images(SHARED / "bench" / s)]
    assert len(bench) == 19
    # the raw training folder holds exactly the copies the recipes know of ...
    raw = [x for x in _lookalikes(bench, _images(SHARED / "train")) if x[0] > 0.95]
    assert [(b, Path(t).name) for _, b, t in raw] == [("woman.png", "302003.jpg")], raw
    assert "302003.jpg" in BENCHMARK_COPIES
    # ... and every recipe leaves them out (the recipes name data relative to the repository)
    root = Path(__file__).resolve().parents[2]
    for name in RECIPES:
        cfg = recipe(name)
        if cfg.data_kind == "microscopy":
            # real specimens only from files no microscopy benchmark uses
            used = {Path(d).name for d in cfg.data}
            assert not used & MICROSCOPY_BENCHMARK_FILES, name
            if not cfg.data:  # synthetic specimens only
                continue
        files = find_images([root / d for d in cfg.data if "train" in Path(d).parts], cfg.exclude)
        assert files and not any(f.name == "302003.jpg" for f in files), name
    clean = _lookalikes(bench, find_images([SHARED / "train"], BENCHMARK_COPIES))
    assert clean[0][0] < 0.95, f"benchmark images that look like training images: {clean[:3]}"


def test_the_check_finds_a_copy(tmp_path):
    # the same comparison does flag a resized, flipped copy of a benchmark image
    from skimage.io import imread, imsave
    from skimage.transform import resize

    src = SHARED / "bench" / "Set5" / "butterfly.png"
    img = imread(src)
    copy = (resize(img, (200, 200), anti_aliasing=True)[:, ::-1] * 255).astype(np.uint8)
    imsave(tmp_path / "copy.png", copy)
    copy_thumb = _thumb(tmp_path / "copy.png").ravel()[None]
    assert _best_match(_thumb(src), copy_thumb)[0] > 0.95
