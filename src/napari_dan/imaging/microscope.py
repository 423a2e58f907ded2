"""The forward model of a fluorescence microscope, as used to train and benchmark the grey models.

A specimen (:mod:`.specimens`) rendered on the HR grid is

* the **HR target**: the specimen seen through a narrow Gaussian of ``TARGET_FWHM`` HR pixels,
  i.e. at the HR grid's resolution limit (the way a SIM or STED image is the target of a
  widefield one; the grid cannot carry finer detail);
* the **LR input**: the specimen blurred by the optical PSF (:mod:`.psf`, sampled on the HR grid),
  integrated over camera pixels ``scale`` times larger (:func:`.camera.bin_pixels`), with
  Poisson shot noise at ``photons`` per unit brightness, Gaussian read noise and a camera offset.

The kernel a model learns to estimate is that optical PSF on the HR (output) grid, so the FWHM
it reports in pixels times the output pixel size is the PSF's FWHM in micrometres.

Both images are then normalised exactly as the engine normalises an input at inference: the LR
image's 0.1 and 99.9 percentiles go to 0 and 1, and the HR target (in the same counts) gets the
same affine map, so the network's output means what the engine will make of it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model.danv2 import percentile_bounds
from ..model.kernels import FWHM_PER_SIGMA, gaussian_kernel
from .camera import bin_pixels_torch
from .degradations import blur_torch
from .psf import ASTIGMATISM, MICROSCOPY_FWHM_RANGE, random_psfs
from .specimens import KINDS, random_specimen

__all__ = ["TARGET_FWHM", "FieldPool", "MicroscopyFields", "degrade_microscopy_torch", "target_kernel",
           "validation_fields"]

#: FWHM (HR pixels) of the HR target's own blur: the resolution limit of the HR grid
TARGET_FWHM = 1.5
#: the training fields' camera (:meth:`MicroscopyFields.draw` and ``field``): read noise up to
#: this many electrons, these offsets on OFFSET_SHARE of the fields (else none), and the photons
#: of a noise-free field (its noise is switched off; the count only sets the scale)
READ_NOISE_MAX, OFFSETS, OFFSET_SHARE, CLEAN_PHOTONS = 2.0, [0.0, 100.0, 500.0], 0.8, 10000.0


def target_kernel(size: int = 9) -> np.ndarray:
    """The Gaussian through which the HR target sees the specimen."""
    return gaussian_kernel(size, TARGET_FWHM / FWHM_PER_SIGMA)


def degrade_microscopy_torch(spec: torch.Tensor, psfs: torch.Tensor, scale: int,
                             photons: torch.Tensor, read_noise: torch.Tensor,
                             offset: torch.Tensor, generator: torch.Generator | None = None,
                             noise_free: torch.Tensor | None = None):
    """Batched microscope: specimens (B, 1, H, W) -> normalised (HR target, LR input).

    ``photons``, ``read_noise`` (electrons) and ``offset`` (counts) are per-sample (B,) tensors;
    ``noise_free`` (B,) bool marks samples recorded without noise. Returns (hr, lr) float tensors normalised by the
    LR image's percentiles, as the engine does.
    """
    b = spec.shape[0]
    sh = (-1, 1, 1, 1)
    optical = blur_torch(spec, psfs)
    lr_int = bin_pixels_torch(optical, scale)
    p = photons.reshape(sh).to(spec.dtype)
    noisy = (torch.zeros(b, dtype=torch.bool) if noise_free is None else noise_free)
    noisy = (~noisy).reshape(sh).to(spec.device)
    shot = torch.poisson(lr_int.clamp_min(0) * p, generator=generator)
    read = read_noise.reshape(sh).to(spec.dtype) * torch.randn(
        lr_int.shape, generator=generator, dtype=spec.dtype, device=spec.device)
    e = torch.where(noisy, shot + read, lr_int * p)
    lr = e + offset.reshape(sh).to(spec.dtype)
    tk = torch.from_numpy(target_kernel()).to(spec)[None].expand(b, -1, -1)
    hr = blur_torch(spec, tk) * p + offset.reshape(sh).to(spec.dtype)
    lo, hi = (t.reshape(sh) for t in percentile_bounds(lr.reshape(b, -1)))  # as the engine
    span = (hi - lo).clamp_min(1.0)  # a flat image: one count, as the engine
    return (hr - lo) / span, (lr - lo) / span


class MicroscopyFields:
    """Draws training batches of the microscope: specimens, PSFs and camera settings.

    Everything random comes from the numpy generator ``rng`` (reproducible and resumable);
    ``size`` is the HR side. Photons per unit brightness are log-uniform in ``photons_range``,
    except a ``clean_fraction`` of noise-free samples (10,000 photons, no noise); read noise 0-2
    electrons; offset 0, 100 or 500 counts.

    ``images`` (optional) supplies real specimens: any object whose ``sample(n)`` returns ``n``
    (size, size) fields with peak 1 (``training.data.SpecimenImages``); a ``real_fraction`` of
    the fields are drawn from it, each with a flat background added, the rest are synthetic.

    ``bead_fraction``: share of the fields whose PSF is one as measured from beads of finite
    size (:func:`.psf.bead_psf`; flat-topped for beads about as wide as the PSF), blurring the
    field and labelling it alike. ``lumpy_fraction``: share of irregular PSFs
    (:func:`.psf.lumpy_psf`: uneven lobes, maximum off centre, faint texture), likewise.
    ``astigmatism``: (share of astigmatic PSFs, largest stretch), :func:`.psf.random_psfs`'.
    ``bright_background``: (share of fields, largest background): that share of the fields is
    as bright as widefield recordings often are (:func:`.specimens.random_specimen`'s
    ``bright``; a real specimen gets the background alone); (0, 0), the default, none.
    """

    def __init__(self, size: int, kernel_size: int, rng: np.random.Generator,
                 fwhm_range=MICROSCOPY_FWHM_RANGE, photons_range=(30.0, 30000.0),
                 clean_fraction: float = 0.2, kinds=KINDS, images=None, real_fraction: float = 0.0,
                 bead_fraction: float = 0.0, lumpy_fraction: float = 0.0,
                 nuclei_edge: tuple[float, float] | None = None,
                 astigmatism: tuple[float, float] = ASTIGMATISM,
                 bright_background: tuple[float, float] = (0.0, 0.0)):
        if not 0.0 <= real_fraction <= 1.0 or (real_fraction > 0 and images is None):
            raise ValueError(f"real_fraction must be in [0, 1] and needs images, got {real_fraction}")
        self.size, self.kernel_size, self.rng = size, kernel_size, rng
        self.fwhm_range, self.photons_range = tuple(fwhm_range), tuple(photons_range)
        self.clean_fraction, self.kinds = clean_fraction, tuple(kinds)
        self.images, self.real_fraction = images, float(real_fraction)
        if not 0.0 <= bead_fraction <= 1.0:
            raise ValueError(f"bead_fraction must be in [0, 1], got {bead_fraction}")
        self.bead_fraction = float(bead_fraction)
        if not 0.0 <= lumpy_fraction <= 1.0:
            raise ValueError(f"lumpy_fraction must be in [0, 1], got {lumpy_fraction}")
        self.lumpy_fraction = float(lumpy_fraction)
        if nuclei_edge is not None and not 0 < nuclei_edge[0] <= nuclei_edge[1]:
            raise ValueError(f"nuclei_edge must be (low, high) with 0 < low <= high, got "
                             f"{nuclei_edge}")
        self.nuclei_edge = tuple(nuclei_edge) if nuclei_edge else None
        self.astigmatism = tuple(float(v) for v in astigmatism)
        share, high = (float(v) for v in bright_background)
        if not (0.0 <= share <= 1.0 and (share == 0 or 0.0 < high <= 1.0)):
            raise ValueError("bright_background must be (share in [0, 1], largest background in "
                             f"(0, 1]), got {tuple(bright_background)}")
        self.bright_background = (share, high)

    def _specimen(self, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = self.rng if rng is None else rng
        share, high = self.bright_background
        # drawn only when asked for, so that runs without it draw the numbers they always did
        bright = high if share > 0 and rng.random() < share else 0.0
        if self.real_fraction > 0 and rng.random() < self.real_fraction:
            return (self.images.sample(1, rng)[0].astype(np.float64)
                    + rng.uniform(0, bright or 0.08))
        return random_specimen((self.size, self.size), rng, self.kinds,
                               nuclei_edge=self.nuclei_edge, bright=bright)[0]

    def field(self, seed: int) -> tuple:
        """One field wholly from its own generator ``default_rng(seed)``: (specimen (S,S)
        float32, psf (k,k) float32, photons, read noise, offset, noise-free). What
        :meth:`draw` returns with ``pool``, field by field; the same wherever it runs."""
        rng = np.random.default_rng(seed)
        spec = self._specimen(rng).astype(np.float32)
        psf, _ = random_psfs(1, self.kernel_size, self.fwhm_range, rng,
                             bead_fraction=self.bead_fraction, lumpy_fraction=self.lumpy_fraction,
                             astigmatism=self.astigmatism)
        lo, hi = np.log(self.photons_range[0]), np.log(self.photons_range[1])
        photons = float(np.exp(rng.uniform(lo, hi)))
        clean = bool(rng.random() < self.clean_fraction)
        read = float(rng.uniform(0, READ_NOISE_MAX))
        offset = float(rng.choice(OFFSETS) * (rng.random() < OFFSET_SHARE))
        return spec, psf[0], CLEAN_PHOTONS if clean else photons, read, offset, clean

    def draw(self, n: int, pool: FieldPool | None = None):
        """(specimens (n,1,S,S) float32, psfs (n,k,k) float32, photons, read_noise, offset (n,),
        noise_free (n,) bool).

        ``pool`` (a :class:`FieldPool` over this object): each field is drawn by :meth:`field`
        from a seed this generator draws, in the pool's processes; the fields are then the same
        for any number of processes (but not those drawn without a pool)."""
        rng = self.rng
        if pool is not None:
            parts = pool.fields(self, rng.integers(0, 2**63, size=n))
            f = lambda a, dt=np.float32: torch.from_numpy(np.asarray(a, dt))  # noqa: E731
            return (f(np.stack([p[0] for p in parts])[:, None]), f(np.stack([p[1] for p in parts])),
                    f([p[2] for p in parts]), f([p[3] for p in parts]), f([p[4] for p in parts]),
                    torch.from_numpy(np.array([p[5] for p in parts], bool)))
        spec = np.stack([self._specimen() for _ in range(n)])[:, None].astype(np.float32)
        psfs, _ = random_psfs(n, self.kernel_size, self.fwhm_range, rng,
                              bead_fraction=self.bead_fraction,
                              lumpy_fraction=self.lumpy_fraction,
                              astigmatism=self.astigmatism)
        lo, hi = np.log(self.photons_range[0]), np.log(self.photons_range[1])
        photons = np.exp(rng.uniform(lo, hi, n))
        clean = rng.random(n) < self.clean_fraction
        photons[clean] = CLEAN_PHOTONS
        read = rng.uniform(0, READ_NOISE_MAX, n)
        offset = rng.choice(OFFSETS, n) * (rng.random(n) < OFFSET_SHARE)
        f = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
        return f(spec), f(psfs), f(photons), f(read), f(offset), torch.from_numpy(clean)


_POOL_FIELDS: dict = {}


def _pool_init(fields: dict) -> None:
    import torch as _torch

    _torch.set_num_threads(1)  # one process per core: no thread pools inside them
    _POOL_FIELDS.update(fields)


def _pool_ready(_: int) -> bool:
    import time

    time.sleep(0.05)  # held briefly, so that every process gets one
    return True


def _pool_field(key_seed: tuple[int, int]) -> tuple:
    key, seed = key_seed
    return _POOL_FIELDS[key].field(int(seed))


class FieldPool:
    """Processes that draw training fields (:meth:`MicroscopyFields.field`) so that a GPU, or
    a machine of many cores, is not left waiting for the CPU-bound specimens and PSFs (64 x4
    fields of 192 px: about 0.8 s on one core). ``workers`` processes (started with "spawn", so
    safe beside CUDA); each gets a copy of the ``fields`` objects once, at start. 1 worker
    draws in the calling process. Use as a context manager, or :meth:`close` it."""

    def __init__(self, fields: list[MicroscopyFields], workers: int):
        if workers < 1:
            raise ValueError(f"a FieldPool needs at least 1 worker, got {workers}")
        self.workers, self._keys = int(workers), {id(f): i for i, f in enumerate(fields)}
        self._local = {i: f for i, f in enumerate(fields)}
        self._ex = None
        if self.workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._ex = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                           initializer=_pool_init, initargs=(self._local,))
            # start them all now (a few seconds each: Python, torch), not inside the first
            # training step, whose time the schedules count
            list(self._ex.map(_pool_ready, range(self.workers)))

    def fields(self, owner: MicroscopyFields, seeds) -> list[tuple]:
        """``owner.field(seed)`` for each seed, in order (owner: one of the pool's objects, as
        it was when the pool started)."""
        key = self._keys[id(owner)]
        if self._ex is None:
            return [self._local[key].field(int(s)) for s in seeds]
        n = len(seeds)
        chunk = max(1, -(-n // self.workers))
        return list(self._ex.map(_pool_field, [(key, int(s)) for s in seeds], chunksize=chunk))

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(cancel_futures=True)
            self._ex = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def validation_fields(n: int, size: int, kernel_size: int, scale: int, seed: int = 777):
    """Fixed (hr, lr, psf, fwhm) validation batches for training logs: ``n`` fields of every
    specimen kind at three PSF widths, 1,000 photons, offset 100 (seeded, so comparable)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    lo, hi = MICROSCOPY_FWHM_RANGE
    widths = [lo + 0.2 * (hi - lo), 0.5 * (lo + hi), lo + 0.8 * (hi - lo)]
    out = []
    for kind in KINDS:
        for _ in range(n):
            spec, _ = random_specimen((size, size), rng, kind=kind)
            for w in widths:
                psf = gaussian_kernel(kernel_size, w / FWHM_PER_SIGMA)
                t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
                hr, lr = degrade_microscopy_torch(
                    t(spec)[None, None], t(psf)[None], scale, t([1000.0]), t([1.5]), t([100.0]),
                    generator=gen)
                out.append((hr, lr, torch.from_numpy(psf)[None], w, kind))
    return out

