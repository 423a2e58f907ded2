"""The training loop: resumable, seeded, CPU or GPU, bf16 autocast where the CPU has it.

Schedule (fractions of ``steps``):

1. ``restorer_frac``: the Restorer learns with the TRUE kernel codes (one pass instead of four),
   while the Estimator learns to read the kernel from SR images the Restorer made with codes
   between the Dirac's and the true one (what it sees during the unrolled loop).
2. the rest: the whole unrolled loop, so each part adapts to the other's errors. ``stage2``
   "released": as released (iterations 1..n-1 without gradients, the last one supervised:
   L1(SR, HR) + L1(kernel, true kernel); the image comes from round n-1's code). "matched": as the
   engine runs our models (the image restored with round n's code, engine.plan): n rounds of
   Restorer (no gradients) and Estimator (supervised on every round, so it learns to read the
   kernel from every state of the loop, not only the last), then the image restored with the last
   round's code and supervised.

``width_weight`` adds a loss on the kernel's width: |log| of the ratio of its second moment to
the true kernel's (about twice the FWHM error the benchmarks measure), which the L1 of the
kernel weighs little once two kernels barely overlap.

With ``budget_minutes`` the run is bounded by training time instead of (or as well as) steps:
the schedule's progress is whichever of ``step / steps`` and ``elapsed / budget`` is further, so
the cosine decay and the stage switch land at the end of the budget on any hardware.

Everything needed to resume (weights, optimiser, RNG states, step) is written atomically every
``checkpoint_every`` steps; re-running the same command continues where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from ..engine.devices import resolve_device
from ..errors import InputError
from ..imaging.degradations import degrade_torch, imresize_torch
from ..model.checkpoint import DanModel, create_model, save_checkpoint
from ..model.kernels import random_gaussian_kernels
from .data import PatchSampler, SpecimenImages, SpecimensTooSmall, find_images, read_image

__all__ = ["TrainConfig", "train", "transfer_weights", "remap_code_input", "cpu_has_bf16",
           "width_error", "StopAtStepEnd"]


def save_state_file(obj: dict, path: Path) -> None:
    """Write a run's state atomically: to ``<path>.partial`` first, then renamed over ``path``,
    so an interruption mid-write leaves the previous state whole (every trainer uses this)."""
    tmp = path.with_suffix(".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class StopAtStepEnd:
    """Ctrl-C and SIGTERM/SIGHUP during a training step wait for the step's end: the weights and
    the optimiser are then whole, the state is saved, and the stop goes on as the handler that
    was there before would have it (``KeyboardInterrupt``, or the CLI's ``Terminated``).

    Only signals with a Python handler are held back (a process-level default such as SIGTERM's
    outside the CLI stays as it is), and only in the main thread. A second signal while one is
    held stops at once, keeping the last checkpoint."""

    def __init__(self):
        self.pending: tuple | None = None
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in ("SIGINT", "SIGTERM", "SIGHUP"):
                sig = getattr(signal, name, None)
                if sig is not None and callable(signal.getsignal(sig)):
                    self._old[sig] = signal.signal(sig, self._hold)
        return self

    def _hold(self, signum, frame):
        if self.pending is not None:
            self._old[signum](signum, frame)
        self.pending = (signum, frame)

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}
        return False

    def check(self, save) -> None:
        """At a step's end: when a stop was asked for, ``save()`` and stop as asked."""
        if self.pending is None:
            return
        signum, frame = self.pending
        self.pending = None
        save()
        self._old[signum](signum, frame)


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the run folder and the checkpoint)."""

    name: str = "dan-x4-rgb"
    scale: int = 4
    in_nc: int = 3
    nf: int = 48
    nb: int = 5
    ng: int = 3
    est_nf: int = 32
    est_nb: int = 3
    code_len: int = 10
    kernel_size: int = 21
    loop: int = 4
    setting: int = 1
    pca_samples: int = 30000
    sigma_range: tuple[float, float] = (0.2, 4.0)
    data: list[str] = field(default_factory=list)
    val_images: int = 4
    noise: bool = False           # Poisson-Gaussian noise on part of the batch (microscopy)
    noise_fraction: float = 0.7
    photons_range: tuple[float, float] = (30.0, 3000.0)
    read_noise_range: tuple[float, float] = (0.0, 0.02)
    lr_patch: int = 32
    batch: int = 16
    steps: int = 4000
    #: training-time budget in minutes (0: none); progress = max(step/steps, time/budget)
    budget_minutes: float = 0.0
    restorer_frac: float = 0.75
    stage1_estimator: bool = True  # False: stage 1 trains the Restorer alone (Estimator transferred)
    lr: float = 4e-4
    lr_min: float = 1e-5
    seed: int = 0
    device: str = "auto"
    bf16: str = "auto"            # "auto": on CPUs with native bf16; "on"; "off"
    threads: int = 0              # 0: torch default
    checkpoint_every: int = 100
    val_every: int = 250
    # transfer weights from a checkpoint (other scale/channels ok), or from several in order: a
    # later one overwrites the tensors it fits (e.g. a wide x4 Restorer, then an x2 Estimator)
    init_from: str | list[str] | None = None
    #: file-name or path glob patterns left out of ``data`` (e.g. copies of benchmark images)
    exclude: tuple[str, ...] = ()
    description: str = ""
    #: "images": crops of ``data`` degraded by blur + bicubic (photos); "microscopy": synthetic
    #: specimens through the microscope model of :mod:`napari_dan.imaging.microscope` (PSFs on
    #: the HR grid, camera binning, Poisson-Gaussian noise, offset; ``data``, if given, holds
    #: real images used as specimens for a ``real_fraction`` of the fields)
    data_kind: str = "images"
    psf_fwhm_range: tuple[float, float] = (1.6, 10.5)
    clean_fraction: float = 0.2     # microscopy: noise-free share of the batch
    est_attention: int = 0          # 1: the Estimator pools with learned spatial weights
    real_fraction: float = 0.0      # microscopy: share of fields whose specimen is a real image
    real_zoom: tuple[float, float] = (1.0, 2.0)  # ... zoomed out by a factor in this range
    #: microscopy: LR side of the real-specimen fields (0: ``lr_patch``). When set, every batch
    #: is wholly real (a ``real_fraction`` of the steps) or wholly synthetic, each at its own
    #: size: large synthetic fields while the real images are too small for them
    real_lr_patch: int = 0
    #: stage 2: "released" (image from round n-1's code, kernel loss on round n) or "matched"
    #: (image from round n's code, kernel loss on every round), see the module docstring
    stage2: str = "released"
    width_weight: float = 0.0       # weight of the kernel-width (second moment) loss
    #: "log": |log(m2 / m2_true)|; "relative": |m2 / m2_true - 1| (session 11's, biased narrow;
    #: kept so the recipe of the stage trained with it reproduces)
    width_form: str = "log"
    #: microscopy: the synthetic specimen kinds drawn, equally often each entry (repeat a kind
    #: to draw it more often); empty: every kind of ``imaging.specimens.KINDS`` once
    specimen_kinds: tuple[str, ...] = ()
    nuclei_edge: tuple[float, ...] = ()  # the nuclei's edge-softness range (px); () default
    #: microscopy: share of fields blurred (and labelled) by a PSF as measured from beads of
    #: finite size (``imaging.psf.bead_psf``, flat-topped); the PCA basis is not drawn from them
    bead_psf_fraction: float = 0.0
    #: microscopy: share of fields blurred (and labelled) by an irregular PSF
    #: (``imaging.psf.lumpy_psf``: uneven lobes, maximum off centre, faint texture)
    lumpy_psf_fraction: float = 0.0
    #: microscopy: (share of astigmatic PSFs, largest stretch); () the default
    #: (``imaging.psf.ASTIGMATISM``, 25% up to 1.3)
    astigmatism: tuple[float, ...] = ()
    #: microscopy: (share of fields, largest background) as bright as widefield recordings
    #: often are (``imaging.microscope.MicroscopyFields``); () none
    bright_background: tuple[float, ...] = ()
    #: microscopy: processes that draw the training fields (``imaging.microscope.FieldPool``):
    #: 0 draws them in the training process as always; N >= 1 draws each field from a seed of
    #: its own, in N processes (the same fields for every N >= 1), so a GPU is not left waiting
    data_workers: int = 0
    #: "all": every weight learns; "estimator": the Restorer is frozen (no gradients, not in the
    #: optimiser) and only the Estimator learns, so the images restored with a given kernel stay
    #: exactly as they were and only the kernel the loop finds can change
    train_parts: str = "all"


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def transfer_weights(dst: torch.nn.Module, src: torch.nn.Module) -> list[str]:
    """Copy every compatible tensor from ``src`` to ``dst``; returns the keys copied.

    Grey from RGB: input convolutions sum their weights over the 3 input channels and output
    convolutions average their 3 output filters, so the grey network starts as the RGB network
    applied to a grey image. Tensors whose shapes differ otherwise (e.g. another scale's
    upsampler) keep their initialisation. PCA buffers are never copied.
    """
    sd, own, copied = src.state_dict(), dst.state_dict(), []
    for k, v in own.items():
        if k in ("encoder", "init_kernel", "init_ker_map") or k not in sd:
            continue
        w = sd[k]
        if w.shape == v.shape:
            own[k] = w.clone()
        elif w.ndim == 4 and w.shape[1] == 3 and v.shape[1] == 1 and w.shape[0] == v.shape[0] \
                and w.shape[2:] == v.shape[2:]:
            own[k] = w.sum(1, keepdim=True)
        elif w.ndim >= 1 and w.shape[0] == 3 and v.shape[0] == 1 and w.shape[1:] == v.shape[1:]:
            own[k] = w.mean(0, keepdim=True)
        else:
            continue
        copied.append(k)
    dst.load_state_dict(own)
    return copied


def remap_code_input(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    """Adapt a transferred Restorer to a new PCA basis: its code input (``head2``, a 1x1 conv)
    learned to read codes ``P_src^T k``; for kernels in the span of the new basis those are
    ``(P_src^T P_dst) c_dst``, so folding that matrix into the weights keeps what it learned."""
    p_src, p_dst = src.encoder[0].double(), dst.encoder[0].double()
    if p_src.shape != p_dst.shape or torch.equal(p_src, p_dst):
        return
    m = (p_src.T @ p_dst).to(dst.Restorer.head2.weight.dtype)  # (L, L)
    with torch.no_grad():
        w = dst.Restorer.head2.weight  # (nf, L, 1, 1)
        w.copy_((w[..., 0, 0] @ m)[..., None, None])


def width_error(k: torch.Tensor, k_true: torch.Tensor, form: str = "log") -> torch.Tensor:
    """|log(m2(k) / m2(k_true))| per kernel, m2 the second moment about the kernel's centre pixel
    (both (B, K*K), square kernels, sums 1): twice the log of the FWHM ratio, for small errors the
    relative FWHM error x 2. Symmetric in the ratio, so an uncertain estimate is not pushed
    towards narrow kernels (the relative error |m2 / m2_true - 1| of commit dfcecb3, which the
    session-11 experiment used, is bounded by 1 below and unbounded above, and was: its x4 run
    read 25% narrow, docs/models.md). ``form="relative"`` is that error, for reproducing the
    stage trained with it."""
    side = math.isqrt(k.shape[1])
    r = torch.arange(side, dtype=torch.float32, device=k.device) - (side - 1) / 2
    r2 = (r[:, None] ** 2 + r[None, :] ** 2).reshape(1, -1)
    m2, m2t = (k * r2).sum(1), (k_true * r2).sum(1)
    if form == "relative":
        return (m2 / m2t.clamp_min(1e-3) - 1).abs()
    if form != "log":
        raise ValueError(f"width_form must be 'log' or 'relative', got {form!r}")
    return (torch.log(m2.clamp_min(1e-3)) - torch.log(m2t.clamp_min(1e-3))).abs()


def shape_error(k: torch.Tensor, k_true: torch.Tensor) -> torch.Tensor:
    """|e1 - e1_true| + |e2 - e2_true| per kernel (both (B, K*K), square, sums 1), with
    e1 = (cxx - cyy) / (cxx + cyy) and e2 = 2 cxy / (cxx + cyy) the ellipticity of the second
    moments about the kernel's centre pixel: 0 for two kernels of the same elongation and
    orientation whatever their widths (a Gaussian with major / minor FWHM 1.5 has |e| = 0.38).
    :func:`width_error` leaves the shape free; this term asks an Estimator to follow it."""
    side = math.isqrt(k.shape[1])
    r = torch.arange(side, dtype=torch.float32, device=k.device) - (side - 1) / 2
    yy, xx = (r[:, None].expand(side, side).reshape(1, -1), r[None, :].expand(side, side).reshape(1, -1))

    def ell(a):
        cxx, cyy, cxy = (a * xx * xx).sum(1), (a * yy * yy).sum(1), (a * xx * yy).sum(1)
        t = (cxx + cyy).clamp_min(1e-3)
        return (cxx - cyy) / t, 2 * cxy / t

    (e1, e2), (t1, t2) = ell(k), ell(k_true)
    return (e1 - t1).abs() + (e2 - t2).abs()


def _init_source(path: str) -> DanModel:
    """An ``init_from`` entry: a checkpoint file or a bundled model's name. A missing file that
    is the output of another recipe (an earlier stage's ``runs/NAME/NAME.pt``) says so."""
    from ..errors import CheckpointError
    from ..model import load_model
    from ..model.bundled import list_models

    p = Path(path)
    if not p.exists() and (p.suffix or len(p.parts) > 1):  # a file's path, not a model's name
        from .recipes import RECIPES

        bundled = [m["name"] for m in list_models()]
        stage = next((r for r in RECIPES if p.name == f"{r}.pt" and p.parent.name == r), None)
        made = (f"it is what `napari-dan train --recipe {stage}` (an earlier stage) exports, so "
                "run that first from the repository root, or" if stage else "give")
        raise CheckpointError(f"--init-from {path}: no such file; {made} --init-from another "
                              "checkpoint or a bundled model's name (" + ", ".join(bundled)
                              + "): its weights are copied where their shapes fit")
    return load_model(path)


def _psnr(a: torch.Tensor, b: torch.Tensor, border: int) -> float:
    a = a[..., border:-border, border:-border].clamp(0, 1)
    b = b[..., border:-border, border:-border]
    mse = torch.mean((torch.round(a * 255) - torch.round(b * 255)) ** 2).item()
    return 10 * math.log10(255**2 / max(mse, 1e-10))


#: settings that change the network's or the optimiser's shape: a resume must keep them
_SHAPE = ("scale", "in_nc", "nf", "nb", "ng", "est_nf", "est_nb", "code_len", "kernel_size",
          "loop", "est_attention", "train_parts", "data_kind")
#: settings of the machine, not of the run: a resume may change them without a word
_RUNTIME = ("device", "bf16", "threads", "init_from")
def check_resume_settings(run_dir, stored: dict, new: dict, *, shape: tuple[str, ...],
                          ignore: tuple[str, ...] = (), log=print,
                          defaults: dict | None = None) -> None:
    """Compare a resumed run's saved settings with this call's, for every trainer (``napari-dan
    train``, ``training.lr_estimator``, ``training.restorer``): a difference in ``shape`` (the
    network's size, the recipe) is refused with an :class:`InputError`; the others are logged in
    one line and the new ones used; ``ignore`` (the machine's settings, the budget) is not
    mentioned. Without ``defaults`` only the settings both hold are compared; with them, a
    setting a run saved before it existed counts as its default."""

    def plain(v):  # tuples saved and lists parsed compare equal
        return json.loads(json.dumps(v, default=str))

    def get(d, k):
        return d.get(k, (defaults or {}).get(k))

    def show(d, k):  # an empty value is a recipe field left at its default
        v = get(d, k)
        return "(default)" if v is None or v == () or v == [] else v

    keys = [k for k in dict.fromkeys([*stored, *new]) if k not in ignore
            and (defaults is not None or (k in stored and k in new))]
    differ = [k for k in keys if plain(get(stored, k)) != plain(get(new, k))]
    bad = [k for k in differ if k in shape]
    if bad:
        raise InputError(f"{run_dir} holds a run with " + ", ".join(f"{k} {show(stored, k)}"
                                                                   for k in bad)
                         + "; this call asks for " + ", ".join(f"{k} {show(new, k)}" for k in bad)
                         + ": use another --run-dir or the same settings")
    if differ:
        log("resuming with settings that differ from the run's own (the new ones are used): "
            + "; ".join(f"{k} {show(stored, k)} -> {show(new, k)}" for k in differ))


#: the smallest LR patch side that trains (the Estimator's and Restorer's receptive fields)
MIN_LR_PATCH = 8


def check_values(cfg: TrainConfig) -> None:
    """InputError for a value that cannot work (the command line checks the same as it parses)."""
    for name in ("batch", "checkpoint_every", "val_every"):
        if getattr(cfg, name) < 1:
            raise InputError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.threads < 0:
        raise InputError(f"threads must be 0 (torch's default) or more, got {cfg.threads}")
    if cfg.lr_patch < MIN_LR_PATCH:
        raise InputError(f"lr_patch must be at least {MIN_LR_PATCH} LR pixels, got {cfg.lr_patch}")
    if not 0.0 <= cfg.restorer_frac <= 1.0:
        raise InputError(f"restorer_frac must be in [0, 1], got {cfg.restorer_frac}")


def _run_kind(obj) -> str:
    """What made a run dir's state.pt: "train", or a description of the other kind."""
    if isinstance(obj, dict) and {"config", "model", "opt", "step"} <= set(obj):
        return "train"
    if isinstance(obj, dict) and "restorer" in obj and "args" in obj:
        return "a Restorer fine-tuning run (python -m napari_dan.training.restorer)"
    if isinstance(obj, dict) and "net" in obj and "args" in obj:
        return "an LR-only Estimator run (python -m napari_dan.training.lr_estimator)"
    return "not a training run (its state.pt is damaged or of an unknown kind)"


class Trainer:
    """Holds the state of one run; see :func:`train`."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, log=print):
        if cfg.budget_minutes < 0 or cfg.steps < 1:
            raise ValueError(f"steps must be >= 1 and budget_minutes >= 0 (0: no time budget), got "
                             f"{cfg.steps} and {cfg.budget_minutes}")
        check_values(cfg)
        self.cfg, self.run_dir, self.log = cfg, Path(run_dir), log
        self._state = self._read_state()  # a run to resume: checked against cfg before any work
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch shapes: pick the fastest kernels
        use_bf16 = cfg.bf16 == "on" or (cfg.bf16 == "auto" and (
            self.device.type == "cuda" or (self.device.type == "cpu" and cpu_has_bf16())))
        self.amp_dtype = torch.bfloat16 if use_bf16 else None
        if cfg.stage2 not in ("released", "matched"):
            raise ValueError(f"stage2 must be 'released' or 'matched', got {cfg.stage2!r}")
        if cfg.width_form not in ("log", "relative"):
            raise ValueError(f"width_form must be 'log' or 'relative', got {cfg.width_form!r}")
        from ..imaging.specimens import KINDS

        unknown = sorted(set(cfg.specimen_kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown specimen kinds {unknown}; known: {', '.join(KINDS)}")
        if cfg.data_kind not in ("images", "microscopy"):
            raise ValueError(f"data_kind must be 'images' or 'microscopy', got {cfg.data_kind!r}")
        hp = dict(in_nc=cfg.in_nc, nf=cfg.nf, nb=cfg.nb, ng=cfg.ng, scale=cfg.scale,
                  code_len=cfg.code_len, kernel_size=cfg.kernel_size, loop=cfg.loop,
                  est_nf=cfg.est_nf, est_nb=cfg.est_nb)
        if cfg.est_attention:
            hp["est_attention"] = int(cfg.est_attention)
        pca_kernels = None
        if cfg.data_kind == "microscopy":
            from ..imaging.psf import random_psfs

            pca_kernels, _ = random_psfs(cfg.pca_samples, cfg.kernel_size,
                                         tuple(cfg.psf_fwhm_range), np.random.default_rng(cfg.seed))
        self.model: DanModel = create_model("DANv2", name=cfg.name, setting=cfg.setting,
                                            seed=cfg.seed, pca_samples=cfg.pca_samples,
                                            pca_kernels=pca_kernels, **hp)
        self.net = self.model.network
        copied = []
        sources = [cfg.init_from] if isinstance(cfg.init_from, str) else list(cfg.init_from or [])
        if sources and self.state_path.exists():  # a resume: state.pt holds every weight
            self.log(f"{self.state_path} will be resumed: the weights of --init-from are not read")
            sources = []
        for path in sources:
            src = _init_source(path).network
            keys = transfer_weights(self.net, src)
            copied += keys
            self.log(f"initialised {len(keys)} tensors from {path}")
            if "Restorer.head2.weight" in keys:
                remap_code_input(self.net, src)
        if not cfg.stage1_estimator and not any(k.startswith("Estimator") for k in copied) \
                and not self.state_path.exists():
            self.log("warning: stage 1 trains the Restorer alone and no Estimator weights were "
                     "transferred, so the Estimator learns only in stage 2")
        if cfg.train_parts not in ("all", "estimator"):
            raise ValueError(f"train_parts must be 'all' or 'estimator', got {cfg.train_parts!r}")
        self.net.to(self.device).train()
        trained = []
        for name, p in self.net.named_parameters():
            learns = cfg.train_parts == "all" or name.startswith("Estimator.")
            p.requires_grad_(learns)
            if learns:
                trained.append(p)
        if cfg.train_parts == "estimator":
            self.log(f"the Restorer is frozen: {sum(p.numel() for p in trained)} Estimator "
                     "parameters learn")
        self.opt = torch.optim.Adam(trained, lr=cfg.lr, betas=(0.9, 0.99))
        self.step = 0
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.history: list[dict] = []
        self.elapsed = 0.0
        self._load_data()

    def _load_microscopy(self) -> None:
        from ..imaging.microscope import MicroscopyFields, validation_fields
        from ..imaging.specimens import KINDS

        cfg = self.cfg
        hr = cfg.lr_patch * cfg.scale
        # real specimens at their own patch size: batches wholly real or wholly synthetic
        split = cfg.real_fraction > 0 and cfg.real_lr_patch > 0
        if cfg.real_lr_patch and cfg.real_lr_patch < 8:  # negative, or too small to train on
            raise ValueError(f"real_lr_patch must be 0 (lr_patch) or at least 8, got "
                             f"{cfg.real_lr_patch}")
        real_hr = cfg.real_lr_patch * cfg.scale if split else hr
        images, real = None, ""
        self.real_fields = None
        self.pool = None
        if cfg.data_workers < 0:
            raise ValueError(f"data_workers must be 0 or more, got {cfg.data_workers}")
        if cfg.real_fraction > 0:
            if not cfg.data:
                raise ValueError("real_fraction > 0 needs data: images to use as specimens")
            planes, groups = [], []
            for i, entry in enumerate(cfg.data):  # each entry weighs the same
                for f in find_images([entry], cfg.exclude):
                    ps = read_image(f)
                    planes += ps
                    groups += [i] * len(ps)
            try:
                images = SpecimenImages(planes, real_hr, self.rng, tuple(cfg.real_zoom),
                                        groups=groups)
            except SpecimensTooSmall as e:
                fit = int(e.largest / cfg.real_zoom[0]) // cfg.scale
                flag = "--real-lr-patch" if split else "--lr-patch"
                patch = f"{flag} {fit} or smaller at x{cfg.scale}, or " if fit >= 8 else ""
                raise ValueError(f"{e}: use {patch}--real-fraction 0 to train on synthetic "
                                 "specimens only") from None
            real = (f", {cfg.real_fraction:.0%} real specimens from {len(images)} planes, "
                    f"zoomed out {cfg.real_zoom[0]:g}-{cfg.real_zoom[1]:g}x")
            if split:
                real += f" in batches of their own, {real_hr}x{real_hr}"
        common = dict(kinds=tuple(cfg.specimen_kinds) or KINDS,
                      bead_fraction=cfg.bead_psf_fraction, lumpy_fraction=cfg.lumpy_psf_fraction,
                      nuclei_edge=tuple(cfg.nuclei_edge) or None,
                      **({"astigmatism": tuple(cfg.astigmatism)} if cfg.astigmatism else {}),
                      **({"bright_background": tuple(cfg.bright_background)}
                         if cfg.bright_background else {}))
        ranges = (tuple(cfg.psf_fwhm_range), tuple(cfg.photons_range), cfg.clean_fraction)
        if split:
            self.fields = MicroscopyFields(hr, cfg.kernel_size, self.rng, *ranges, **common)
            self.real_fields = MicroscopyFields(real_hr, cfg.kernel_size, self.rng, *ranges,
                                                images=images, real_fraction=1.0, **common)
        else:
            self.fields = MicroscopyFields(hr, cfg.kernel_size, self.rng, *ranges, images=images,
                                           real_fraction=cfg.real_fraction, **common)
        if cfg.data_workers:
            from ..imaging.microscope import FieldPool

            self.pool = FieldPool([f for f in (self.fields, self.real_fields) if f is not None],
                                  cfg.data_workers)
            import weakref

            weakref.finalize(self, self.pool.close)  # its processes end with this trainer
            real += f", drawn by {cfg.data_workers} process(es)"
        self.val = validation_fields(max(1, cfg.val_images // 4), 96 if cfg.scale == 2 else 128,
                                     cfg.kernel_size, cfg.scale)
        self.log(f"microscopy fields {hr}x{hr}{real}, {len(self.val)} validation fields; "
                 f"device {self.device}, bf16 {'on' if self.amp_dtype else 'off'}, "
                 f"threads {torch.get_num_threads()}")

    # -- data -------------------------------------------------------------------------------
    def _load_data(self) -> None:
        if self.cfg.data_kind == "microscopy":
            return self._load_microscopy()
        files = find_images(self.cfg.data, self.cfg.exclude)
        if not files:
            raise ValueError("no training images found in " + ", ".join(self.cfg.data))
        # validation crops come from the first data entry only, so that extra entries (e.g.
        # microscopy stacks added to natural images) are always trained on
        first = find_images(self.cfg.data[:1], self.cfg.exclude)
        # a fifth of them held out at most (but one of two to nine), none of a single image
        # (the run then has no validation): a small set is still mostly trained on (5 images:
        # 4 train and 1 validates; the rule of before held out 4 of them)
        nval = min(self.cfg.val_images, max(1, len(first) // 5)) if len(first) > 1 else 0
        val_files = first[len(first) - nval:] if nval else []
        train_files = [f for f in files if f not in val_files]
        planes = [p for f in train_files for p in read_image(f)]
        hr = self.cfg.lr_patch * self.cfg.scale
        self.sampler = PatchSampler(planes, self.cfg.in_nc, hr, self.rng)
        self.val = []
        vrng = np.random.default_rng(12345)
        for f in val_files:
            im = read_image(f)[0]
            vs = PatchSampler([im], self.cfg.in_nc, min(192, min(im.shape[:2]) // 12 * 12), vrng)
            self.val.append(vs.sample(1)[0])
        self.log(f"{len(train_files)} training files ({len(planes)} planes), "
                 f"{len(self.val)} validation crops; device {self.device}, "
                 f"bf16 {'on' if self.amp_dtype else 'off'}, threads {torch.get_num_threads()}")

    def _batch(self):
        cfg, b = self.cfg, self.cfg.batch
        if cfg.data_kind == "microscopy":
            from ..imaging.microscope import degrade_microscopy_torch

            fields = self.fields
            if self.real_fields is not None and self.rng.random() < cfg.real_fraction:
                fields = self.real_fields
            spec, ks, photons, read, offset, clean = fields.draw(b, self.pool)
            gen = torch.Generator().manual_seed(int(self.rng.integers(2**62)))
            hr, lr = degrade_microscopy_torch(spec, ks, cfg.scale, photons, read, offset, gen,
                                              noise_free=clean)
            d = self.device
            return hr.to(d), lr.to(d), ks.to(d)
        # crops and kernels are drawn on the CPU (numpy RNG: reproducible, resumable); the
        # degradation runs on the training device
        hr = torch.from_numpy(self.sampler.sample(b)).to(self.device, non_blocking=True)
        ks, _ = random_gaussian_kernels(b, cfg.kernel_size, setting=cfg.setting,
                                        sigma_range=tuple(cfg.sigma_range), rng=self.rng)
        ks = torch.from_numpy(ks).to(self.device)
        photons = read = None
        if cfg.noise:
            lo, hi = np.log(cfg.photons_range[0]), np.log(cfg.photons_range[1])
            ph = np.exp(self.rng.uniform(lo, hi, b))
            ph[self.rng.random(b) > cfg.noise_fraction] = 1e9  # effectively noise-free
            photons = torch.from_numpy(ph.astype(np.float32)).to(self.device)
            read = torch.from_numpy(self.rng.uniform(*cfg.read_noise_range, b).astype(np.float32))
            read = read.to(self.device)
            read[photons > 1e8] = 0
        lr = degrade_torch(hr, ks, cfg.scale, photons=photons, read_noise=read,
                           quantize_bits=8 if not cfg.noise else None)
        return hr, lr, ks

    # -- schedule ---------------------------------------------------------------------------
    def progress(self) -> float:
        """How far through the schedule (0..1): by steps, or by training time if it is further."""
        c = self.cfg
        t = self.step / max(c.steps, 1)
        if c.budget_minutes > 0:
            t = max(t, self.elapsed / (60.0 * c.budget_minutes))
        return min(t, 1.0)

    def _lr_at(self) -> float:
        c = self.cfg
        t = self.progress()
        return c.lr_min + 0.5 * (c.lr - c.lr_min) * (1 + math.cos(math.pi * t))

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self) -> dict:
        cfg, net = self.cfg, self.net
        hr, lr, ks = self._batch()
        b = hr.shape[0]
        true_code = net.encode(ks.reshape(b, -1))
        stage = 1 if self.progress() < cfg.restorer_frac else 2
        sr_e, kernels = None, []  # the Estimator's input (one supervised estimate), or its kernels
        with self._autocast():
            if stage == 1:
                sr = net.restore(lr, true_code)
            if stage == 1 and cfg.stage1_estimator:
                # the Estimator sees SR images made with codes between the Dirac's and the truth
                with torch.no_grad():
                    t = torch.rand(b, 1, device=self.device) * 1.2
                    mix = net.initial_code(b) + t * (true_code - net.initial_code(b))
                    sr_e = net.restore(lr, mix)
            elif stage == 2 and cfg.stage2 == "matched":
                code = net.initial_code(b)
                for _ in range(cfg.loop):
                    with torch.no_grad():
                        s_ = net.restore(lr, code)
                    kernels.append(net.estimate(s_, lr))
                    code = net.encode(kernels[-1].detach().float())
                with torch.set_grad_enabled(cfg.train_parts == "all"):
                    sr = net.restore(lr, code)
            elif stage == 2:
                with torch.no_grad():
                    code = net.initial_code(b)
                    for _ in range(cfg.loop - 1):
                        s_ = net.restore(lr, code)
                        code = net.encode(net.estimate(s_, lr).float())
                sr = net.restore(lr, code.detach())
                sr_e = sr.detach()
            if sr_e is not None:
                kernels = [net.estimate(sr_e, lr)]
        loss_sr = (sr.float() - hr).abs().mean()
        loss_k = torch.zeros((), device=sr.device)
        loss_w = torch.zeros((), device=sr.device)
        for kernel in kernels:
            kf = kernel.float().reshape(b, -1)
            loss_k = loss_k + (kf - ks.reshape(b, -1)).abs().sum(1).mean() / len(kernels)
            if cfg.width_weight:
                loss_w = loss_w + width_error(kf, ks.reshape(b, -1),
                                              cfg.width_form).mean() / len(kernels)
        loss = loss_sr + 0.1 * loss_k + cfg.width_weight * loss_w
        for g in self.opt.param_groups:
            g["lr"] = self._lr_at()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        # tensors, not floats: reading them (a device sync) waits until the log line
        return {"loss_sr": loss_sr.detach(), "loss_k": loss_k.detach(),
                "loss_w": loss_w.detach(), "stage": stage}

    @torch.no_grad()
    def _validate_microscopy(self) -> dict:
        """Blind PSNR (peak 1 of the normalised range) against bicubic, and the median relative
        error of the estimated FWHM, on the fixed validation fields."""
        from ..model.kernels import kernel_stats

        net = self.net
        net.eval()
        ps, pb, errs = [], [], []
        for hr, lr, psf, _, _ in self.val:
            with self._autocast():
                sr, kest = net(lr.to(self.device))
            b = self.cfg.scale
            crop = (..., slice(b, -b), slice(b, -b))
            mse = torch.mean((sr.float().cpu()[crop] - hr[crop]) ** 2).item()
            bic = torch.nn.functional.interpolate(lr, scale_factor=b, mode="bicubic")
            mseb = torch.mean((bic[crop] - hr[crop]) ** 2).item()
            ps.append(10 * math.log10(1 / max(mse, 1e-12)))
            pb.append(10 * math.log10(1 / max(mseb, 1e-12)))
            t = kernel_stats(psf[0].numpy()).fwhm
            errs.append(abs(kernel_stats(kest[0].float().cpu().numpy()).fwhm - t) / t)
        net.train()
        return {"val_psnr": float(np.mean(ps)), "val_bicubic": float(np.mean(pb)),
                "val_fwhm_err": float(np.median(errs))}

    @torch.no_grad()
    def validate(self) -> dict:
        """Blind PSNR (all iterations, 8-bit) on held-out crops at three sigmas."""
        cfg, net = self.cfg, self.net
        if cfg.data_kind == "microscopy":
            return self._validate_microscopy()
        if not self.val:  # a data set too small to hold images out: no validation, no NaN
            return {}
        net.eval()
        lo, hi = cfg.sigma_range
        sigmas = [lo + 0.25 * (hi - lo), 0.5 * (lo + hi), lo + 0.75 * (hi - lo)]
        from ..model.kernels import gaussian_kernel

        ps, pb, errs = [], [], []
        for crop in self.val:
            hr = torch.from_numpy(crop)[None].to(self.device)
            for sg in sigmas:
                k = torch.from_numpy(gaussian_kernel(cfg.kernel_size, sg))[None].to(self.device)
                lr = degrade_torch(hr, k, cfg.scale)
                with self._autocast():
                    sr, kest = net(lr)
                ps.append(_psnr(sr.float(), hr, cfg.scale))
                pb.append(_psnr(imresize_torch(lr, cfg.scale), hr, cfg.scale))
                errs.append((kest.float() - k).abs().sum().item())
        net.train()
        return {"val_psnr": float(np.mean(ps)), "val_bicubic": float(np.mean(pb)),
                "val_kernel_l1": float(np.mean(errs))}

    # -- persistence ------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.run_dir / "state.pt"

    def save_state(self) -> None:
        obj = {"config": json.dumps(asdict(self.cfg)), "step": self.step,
               "elapsed": self.elapsed, "model": self.net.state_dict(),
               "kernel_mean": self.net.kernel_mean, "opt": self.opt.state_dict(),
               "history": json.dumps(self.history),
               "np_rng": json.dumps(self.rng.bit_generator.state),
               "torch_rng": torch.get_rng_state()}
        save_state_file(obj, self.state_path)

    def _read_state(self) -> dict | None:
        """The run dir's state.pt, if any, after checking that it is whole, that it is a run of
        this trainer, and that its network has this configuration's shape (InputError if not);
        the other settings that differ are logged in one line (the new ones are used)."""
        if not self.state_path.exists():
            return None
        try:
            obj = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure to read it means: not ours, or damaged
            raise InputError(f"{self.state_path}: cannot be read as a training state "
                             f"({type(e).__name__}): damaged, truncated, or another kind of run "
                             "(lr_estimator, restorer); move it away to start the run afresh, or "
                             "use another --run-dir") from None
        kind = _run_kind(obj)
        if kind != "train":
            raise InputError(f"{self.run_dir} is {kind}, not a `napari-dan train` run; use "
                             "another --run-dir")
        try:
            stored = json.loads(obj["config"])
        except ValueError:
            raise InputError(f"{self.state_path}: its configuration cannot be read; move it away "
                             "to start the run afresh, or use another --run-dir") from None
        check_resume_settings(self.run_dir, stored, asdict(self.cfg), shape=_SHAPE,
                              ignore=_RUNTIME, log=self.log)
        return obj

    def try_resume(self) -> bool:
        if not self.state_path.exists():
            return False
        obj = self._state if getattr(self, "_state", None) is not None else self._read_state()
        self._state = None
        self.net.load_state_dict(obj["model"])
        self.net.kernel_mean.copy_(obj["kernel_mean"])
        self.opt.load_state_dict(obj["opt"])
        self.step, self.elapsed = int(obj["step"]), float(obj["elapsed"])
        self.history = json.loads(obj["history"])
        self.rng.bit_generator.state = json.loads(obj["np_rng"])
        torch.set_rng_state(obj["torch_rng"].cpu())
        self.log(f"resumed {self.run_dir} at step {self.step}")
        return True

    def export(self, path: Path, extra: dict | None = None) -> Path:
        """Write the trained network in our checkpoint format with its provenance."""
        was_training = self.net.training
        net = self.net.float().eval()
        last = next((h for h in reversed(self.history) if "val_psnr" in h), {})
        info = {
            "description": self.cfg.description or f"DANv2 x{self.cfg.scale} "
                           f"{'RGB' if self.cfg.in_nc == 3 else 'grey'} (napari-dan)",
            "provenance": {
                "training_data": [Path(d).name for d in self.cfg.data],
                "steps": self.step, "batch": self.cfg.batch, "lr_patch": self.cfg.lr_patch,
                "train_hours": round(self.elapsed / 3600, 3),
                "hardware": f"{platform.processor() or platform.machine()}, "
                            f"{torch.get_num_threads()} threads, {self.device.type}"
                            + (f" ({torch.cuda.get_device_name(self.device)})"
                               if self.device.type == "cuda" else ""),
                "date": datetime.now(UTC).strftime("%Y-%m-%d"),
                "degradation": {"setting": self.cfg.setting,
                                "sigma_range": list(self.cfg.sigma_range),
                                "noise": self.cfg.noise},
                "config": asdict(self.cfg),
            },
            "metrics": {"validation": last, **((extra or {}).get("metrics", {}))},
        }
        try:
            return save_checkpoint(path, net, info=info, name=self.cfg.name)
        finally:
            net.train(was_training)


def _write_config(tr: Trainer, log) -> None:
    """config.json holds the run's first settings; a resume with others writes them beside it
    (config-stepN.json), never over it."""
    path = tr.run_dir / "config.json"
    text = json.dumps(asdict(tr.cfg), indent=1)
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        new = json.loads(text)
        if isinstance(old, dict) and all(old.get(k) == v for k, v in new.items() if k not in _RUNTIME):
            return
        path, n = tr.run_dir / f"config-step{tr.step}.json", 1
        while path.exists():
            n += 1
            path = tr.run_dir / f"config-step{tr.step}-{n}.json"
        log(f"config.json keeps the run's first settings; this call's are in {path.name}")
    tmp = path.with_suffix(".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def train(cfg: TrainConfig, run_dir: str | os.PathLike, export_to: str | os.PathLike | None = None,
          log=print, max_minutes: float | None = None) -> Path | None:
    """Train (or resume) a model; export it in our format at the end.

    Returns the exported checkpoint path (None if stopped by ``max_minutes`` before the end; the
    run can be resumed by calling again).
    """
    tr = Trainer(cfg, Path(run_dir), log=log)
    try:
        tr.try_resume()
        _write_config(tr, log)
        t_start, t_last = time.time(), time.time()
        acc: list[dict] = []
        with StopAtStepEnd() as stop:
            while tr.progress() < 1.0:
                acc.append(tr.train_step())
                now = time.time()
                tr.elapsed += now - t_last
                t_last = now
                done = tr.progress() >= 1.0
                # a loss line every 25 steps; validation at every multiple of val_every and at the end
                # (with a line of its own where that falls between two loss lines)
                validate = tr.step % cfg.val_every == 0 or done
                if tr.step % 25 == 0 or validate:
                    rec = {"step": tr.step,
                           "loss_sr": float(torch.stack([a["loss_sr"] for a in acc]).mean()),
                           "loss_k": float(torch.stack([a["loss_k"] for a in acc]).mean()),
                           **({"loss_w": float(torch.stack([a["loss_w"] for a in acc]).mean())}
                              if cfg.width_weight else {}),
                           "stage": acc[-1]["stage"], "lr": tr._lr_at(),
                           "hours": round(tr.elapsed / 3600, 4)}
                    acc = []
                    if validate:
                        rec.update(tr.validate())
                        t_last = time.time()
                    tr.history.append(rec)
                    log(json.dumps(rec))
                if tr.step % cfg.checkpoint_every == 0 or done:
                    tr.save_state()
                if max_minutes is not None and (time.time() - t_start) > 60 * max_minutes:
                    tr.save_state()
                    log(f"stopping after {max_minutes} minutes at step {tr.step}; run again to resume")
                    return None
                stop.check(tr.save_state)  # Ctrl-C / SIGTERM: stop here, the state saved
        if (not tr.history or "val_psnr" not in tr.history[-1]) and tr.val:
            tr.history.append({"step": tr.step, **tr.validate()})
            log(json.dumps(tr.history[-1]))
        out = Path(export_to) if export_to else tr.run_dir / f"{cfg.name}.pt"
        tr.export(out)
        log(f"exported {out}")
        return out
    finally:  # the processes drawing the fields end now, not when the trainer is collected
        if getattr(tr, "pool", None) is not None:
            tr.pool.close()
