"""Training data: folders of images (PNG, JPEG, TIFF; 8/16 bit; gray or RGB) as random HR crops.

Images are held in memory as float32 in [0, 1] (the classic SR sets are small); crops get random
flips and 90-degree rotations. Degradation happens on the fly, batched, in
:mod:`napari_dan.imaging.degradations`.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "find_images", "read_image", "to_gray", "PatchSampler", "SpecimenImages",
           "noise_level"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def find_images(folders, exclude=()) -> list[Path]:
    """Every image file in the given folders (recursively) or the files themselves, sorted,
    less those whose file name or path matches one of the ``exclude`` glob patterns."""
    out: list[Path] = []
    for f in folders:
        p = Path(f)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return [q for q in out if not any(fnmatch.fnmatch(q.name, pat) or fnmatch.fnmatch(q.as_posix(), pat)
                                      for pat in exclude)]


def _to_unit(a: np.ndarray, robust: bool) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    a = a.astype(np.float32)
    if robust:  # microscopy: percentiles, as the engine normalises at inference
        lo, hi = np.percentile(a, [0.1, 99.9])
    else:
        lo, hi = (0.0, 65535.0) if a.max() > 255 else (0.0, 255.0)
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)


def read_image(path: Path) -> list[np.ndarray]:
    """One file -> list of (H, W, C) float32 planes in [0, 1] (a TIFF stack gives several)."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        a = tifffile.imread(path)
        if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4)):
            planes = [a]
        else:  # a stack of 2D planes
            planes = list(a.reshape(-1, *a.shape[-2:]))
        return [_to_unit(p, robust=p.dtype != np.uint8)[..., None] if p.ndim == 2
                else _to_unit(p[..., :3], robust=False) for p in planes]
    from skimage import io

    a = io.imread(path)
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    a = _to_unit(a, robust=False)
    return [a if a.ndim == 3 else a[..., None]]


def to_gray(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W, 1) BT.601 luma; gray input is returned as is."""
    if img.shape[-1] == 1:
        return img
    return (img[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]


class PatchSampler:
    """Random HR crops of ``size`` x ``size`` with flips and rotations.

    Parameters
    ----------
    images : list of (H, W, C) float32 arrays in [0, 1]
    channels : 1 or 3; RGB images are converted to luma for 1, gray images replicated for 3
    size : crop side (HR pixels)
    rng : numpy Generator
    """

    def __init__(self, images: list[np.ndarray], channels: int, size: int,
                 rng: np.random.Generator):
        self.size, self.rng = size, rng
        imgs = []
        for im in images:
            im = to_gray(im) if channels == 1 else (np.repeat(im, 3, -1) if im.shape[-1] == 1 else im)
            if min(im.shape[:2]) >= size:
                imgs.append(np.ascontiguousarray(im, dtype=np.float32))
        if not imgs:
            raise ValueError(f"no training image is at least {size}x{size} pixels")
        self.images = imgs
        areas = np.array([im.shape[0] * im.shape[1] for im in imgs], np.float64)
        self.p = areas / areas.sum()  # sample big images more often: uniform over pixels

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, n: int) -> np.ndarray:
        """(n, C, size, size) float32."""
        s, out = self.size, []
        for i in self.rng.choice(len(self.images), n, p=self.p):
            im = self.images[i]
            y = self.rng.integers(0, im.shape[0] - s + 1)
            x = self.rng.integers(0, im.shape[1] - s + 1)
            c = im[y:y + s, x:x + s]
            if self.rng.random() < 0.5:
                c = c[:, ::-1]
            c = np.rot90(c, self.rng.integers(0, 4))
            out.append(np.ascontiguousarray(c.transpose(2, 0, 1)))
        return np.stack(out)


def noise_level(plane: np.ndarray) -> float:
    """Standard deviation of white noise in a 2D plane, estimated from its second differences
    (Immerkaer 1996); fine texture counts as noise too, so it is an upper bound."""
    from scipy.signal import convolve2d

    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    c = convolve2d(np.asarray(plane, np.float64), k, mode="valid")
    return float(np.sqrt(np.pi / 2) * np.abs(c).mean() / 6)


class SpecimensTooSmall(ValueError):
    """No real specimen image is large (and clean) enough for the HR patch; ``largest`` is the
    smallest side of the largest clean image (0 if none is clean)."""

    def __init__(self, message: str, largest: int):
        super().__init__(message)
        self.largest = largest


class SpecimenImages:
    """Real images used as fluorescence specimens (the microscopy models' ``data``).

    Each sample is a random crop of a grey plane, zoomed out by a factor uniform in
    ``zoom_range`` (area averaging: the image's own blur shrinks with it, so the specimens range
    from "as recorded" to about half their recorded blur), flipped and rotated, then shifted so
    its 1st percentile is 0 and scaled so its brightest pixel is 1 (the microscope model adds
    background and noise). Crops with almost no structure (most of a fluorescence field is
    empty) are redrawn, up to four times. An image too small for the drawn zoom is zoomed out as
    far as it allows (at least ``zoom_range[0]``; smaller images are left out), so large HR
    patches do not silently drop a small stack from the mix. Planes whose noise (:func:`noise_level`) exceeds
    ``max_noise`` of their range are left out: a specimen's own noise would become part of the
    HR target, and the network would learn to draw noise.

    Parameters
    ----------
    images : list of (H, W, C) float32 arrays in [0, 1] (as :func:`read_image` gives them)
    size : crop side on the HR grid
    rng : numpy Generator
    groups : optional group label per image; every group is drawn equally often (so one
        stack weighs as much as a folder of photographs)
    """

    def __init__(self, images: list[np.ndarray], size: int, rng: np.random.Generator,
                 zoom_range: tuple[float, float] = (1.0, 2.0), groups: list[int] | None = None,
                 max_noise: float = 0.05):
        self.size, self.rng, self.zoom_range = size, rng, tuple(zoom_range)
        need = int(np.ceil(size * self.zoom_range[0]))
        groups = [0] * len(images) if groups is None else list(groups)
        if len(groups) != len(images):
            raise ValueError("groups needs one entry per image")
        clean = [i for i, im in enumerate(images) if noise_level(to_gray(im)[..., 0]) <= max_noise]
        keep = [i for i in clean if min(images[i].shape[:2]) >= need]
        if not keep:
            largest = max((min(images[i].shape[:2]) for i in clean), default=0)
            raise SpecimensTooSmall(
                f"no specimen image is at least {need}x{need} pixels with noise at most "
                f"{max_noise} (HR patches of {size} px, zoomed out at least "
                f"{self.zoom_range[0]:g}x); "
                + (f"the largest such image's shorter side is {largest} px" if largest
                   else "none of the images is that clean"), largest)
        self.images = [np.ascontiguousarray(to_gray(images[i])[..., 0], dtype=np.float32) for i in keep]
        # each group (a data entry: a folder, a stack) is drawn equally often, and within a group
        # every pixel equally often
        g = np.array([groups[i] for i in keep])
        areas = np.array([im.size for im in self.images], np.float64)
        p = np.zeros_like(areas)
        for v in np.unique(g):
            p[g == v] = areas[g == v] / areas[g == v].sum()
        self.p = p / p.sum()

    def __len__(self) -> int:
        return len(self.images)

    def _crop(self, rng: np.random.Generator | None = None) -> np.ndarray:
        import torch

        rng = self.rng if rng is None else rng
        zoom = rng.uniform(*self.zoom_range)
        for _ in range(5):
            im = self.images[rng.choice(len(self.images), p=self.p)]
            side = min(int(round(self.size * zoom)), min(im.shape))
            y = rng.integers(0, im.shape[0] - side + 1)
            x = rng.integers(0, im.shape[1] - side + 1)
            c = im[y:y + side, x:x + side]
            lo, hi = np.percentile(c, [1, 99.9])
            if hi - lo > 0.05:
                break
        if side != self.size:
            t = torch.from_numpy(np.ascontiguousarray(c))[None, None]
            c = torch.nn.functional.interpolate(t, size=(self.size, self.size), mode="area")[0, 0].numpy()
        if rng.random() < 0.5:
            c = c[:, ::-1]
        c = np.rot90(c, rng.integers(0, 4))
        c = np.clip(c - np.percentile(c, 1), 0, None)
        return c / max(float(c.max()), 1e-6)

    def sample(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """(n, size, size) float32 specimens, peak 1, drawn with ``rng`` (default: this
        object's own generator)."""
        return np.stack([self._crop(rng) for _ in range(n)]).astype(np.float32)
