"""DANv2: the deep alternating network with dual-path conditional blocks.

State-dict compatible with the authors' released DANv2 checkpoints (Luo et al., TPAMI 2021,
arXiv 2105.06878). Module names follow the paper: DPCB (dual-path conditional block), DPCG
(a group of DPCBs), Restorer, Estimator. The network only computes; devices, I/O and checkpoint
handling live elsewhere.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import DANBase

__all__ = ["DPCB", "DPCG", "RestorerV2", "EstimatorV2", "EstimatorLR", "EstimatorTwoScale",
           "DANv2", "reads_sr", "percentile_bounds", "percentile_stretch"]


def _conv(cin: int, cout: int, k: int, stride: int = 1, padding: int | None = None) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2 if padding is None else padding)


class DPCB(nn.Module):
    """Dual-path conditional block.

    Parameters
    ----------
    nf1 : int
        Channels of the main (image) path ``x0``.
    nf2 : int
        Channels of the conditioning path ``x1``.
    k1, k2 : int
        Convolution sizes of the two paths.
    """

    def __init__(self, nf1: int, nf2: int, k1: int, k2: int):
        super().__init__()
        self.body1 = nn.Sequential(
            _conv(nf1, nf1, k1), nn.LeakyReLU(0.2, inplace=True), _conv(nf1, nf1, k1)
        )
        self.body2 = nn.Sequential(
            _conv(nf2, nf1, k2), nn.LeakyReLU(0.2, inplace=True), _conv(nf1, nf1, k2)
        )

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.body2(x1)
        y = self.body1(x0)
        if not torch.is_grad_enabled() and y.dtype == x0.dtype == c.dtype:
            # inference: the same arithmetic in place (y * c, then + x0), so no new full-size
            # feature maps are allocated; autograd needs y kept, so training takes the other path
            return y.mul_(c).add_(x0), x1 + c
        return x0 + y * c, x1 + c


class DPCG(nn.Module):
    """A group of ``nb`` DPCBs with a group skip.

    The released code updates the feature list in place, so its "skip" adds the group's own output
    to itself: the group returns ``2 * out`` on both paths instead of ``input + out``. The released
    weights were trained that way; ``quirk=True`` (default) reproduces it, ``quirk=False`` gives the
    residual the paper describes.
    """

    def __init__(self, nf1: int, nf2: int, k1: int, k2: int, nb: int, quirk: bool = True):
        super().__init__()
        self.body = nn.ModuleList(DPCB(nf1, nf2, k1, k2) for _ in range(nb))
        self.quirk = quirk

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y0, y1 = x0, x1
        for block in self.body:
            y0, y1 = block(y0, y1)
        if self.quirk:
            if not torch.is_grad_enabled() and y0 is not x0 and y1 is not x1:
                return y0.mul_(2), y1.mul_(2)  # in place at inference, as in DPCB
            return 2 * y0, 2 * y1
        return x0 + y0, x1 + y1


def make_upsampler(nf: int, out_nc: int, scale: int) -> nn.Sequential:
    """Sub-pixel upsampler: x4 as two x2 stages, x2/x3 in one stage, then a conv to ``out_nc``."""
    if scale == 4:
        layers: list[nn.Module] = [
            _conv(nf, 4 * nf, 3), nn.PixelShuffle(2), _conv(nf, 4 * nf, 3), nn.PixelShuffle(2)
        ]
    elif scale in (2, 3):
        layers = [_conv(nf, scale * scale * nf, 3), nn.PixelShuffle(scale)]
    else:
        raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
    layers.append(_conv(nf, out_nc, 3))
    return nn.Sequential(*layers)


class RestorerV2(nn.Module):
    """Super-resolves an LR image given a kernel code.

    Parameters
    ----------
    in_nc : int
        Image channels (1 or 3).
    nf : int
        Feature channels.
    nb : int
        DPCBs per group.
    ng : int
        Number of groups.
    scale : int
        Upscaling factor (2, 3 or 4).
    code_len : int
        Length of the kernel code (PCA dimension).
    """

    def __init__(self, in_nc: int = 3, nf: int = 64, nb: int = 10, ng: int = 5, scale: int = 4,
                 code_len: int = 10):
        super().__init__()
        self.head1 = _conv(in_nc, nf, 3)
        self.head2 = _conv(code_len, nf, 1)
        self.body = nn.ModuleList(DPCG(nf, nf, 3, 1, nb) for _ in range(ng))
        self.fusion = _conv(nf, nf, 3)
        self.upscale = make_upsampler(nf, in_nc, scale)

    def forward(self, lr: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        f = self.head1(lr)
        # the code enters as a 1x1 map and is broadcast, never expanded to H x W
        c = self.head2(code.reshape(code.shape[0], code.shape[1], 1, 1))
        for group in self.body:
            f, c = group(f, c)
        return self.upscale(self.fusion(f))


class EstimatorV2(nn.Module):
    """Estimates the blur kernel from the LR image and the current SR image.

    Returns the kernel itself, flattened (B, k*k), as a softmax (non-negative, sums to one).
    The released code always builds it with ``nf=64`` and 5 blocks.
    """

    def __init__(self, in_nc: int = 3, nf: int = 64, nb: int = 5, scale: int = 4,
                 kernel_size: int = 21, attention: bool = False):
        super().__init__()
        h = nf // 2
        self.head_LR = nn.Sequential(_conv(in_nc, h, 5))
        self.head_HR = nn.Sequential(_conv(in_nc, h, 4 * scale + 1, scale, 2 * scale))
        self.body = DPCG(h, h, 3, 3, nb)
        self.tail = nn.Sequential(
            _conv(h, nf, 3), nn.AdaptiveAvgPool2d(1), _conv(nf, kernel_size**2, 1), nn.Softmax(1)
        )
        # Our microscopy models pool with learned spatial weights instead of a plain mean, so
        # the kernel is read where there is signal (a sparse field is mostly empty background).
        # Zero-initialised, it starts as exactly the mean. Absent in the released layout.
        self.attention = _conv(nf, 1, 1) if attention else None
        if self.attention is not None:
            nn.init.zeros_(self.attention.weight)
            nn.init.zeros_(self.attention.bias)

    def pool_weights(self, f: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) weights (sum 1 per image) with which features are pooled."""
        b, _, hh, ww = f.shape
        if self.attention is None:
            return f.new_full((b, 1, hh, ww), 1.0 / (hh * ww))
        a = self.attention(f).flatten(2).float().softmax(-1)
        return a.to(f.dtype).reshape(b, 1, hh, ww)

    def forward(self, sr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        f_lr = self.head_LR(lr)
        f_hr = self.head_HR(sr)
        # the HR map can be one pixel larger when the SR size is not s * LR size
        f_hr = f_hr[..., : f_lr.shape[-2], : f_lr.shape[-1]]
        f, _ = self.body(f_lr, f_hr)
        if self.attention is None:
            return self.tail(f).flatten(1)
        f = self.tail[0](f)
        pooled = (f * self.pool_weights(f)).sum((-2, -1), keepdim=True)
        return self.tail[3](self.tail[2](pooled)).flatten(1)


def reads_sr(network: nn.Module) -> bool:
    """Whether the network's Estimator reads the SR image (False for :class:`EstimatorLR`:
    then every round of the loop finds the same kernel)."""
    return getattr(getattr(network, "Estimator", None), "reads_sr", True)


class EstimatorLR(nn.Module):
    """Estimates the blur kernel from the LR image alone (our fluorescence models; not in the
    released layout): residual 3x3 blocks at the LR grid, features pooled both with learned
    spatial weights and as a plain mean, then a small MLP to the kernel's logits.

    Takes ``(sr, lr)`` like :class:`EstimatorV2` and ignores ``sr``, so the DAN loop runs
    unchanged and its kernel is the same every round. Trained without the Restorer in the loop
    (``training.lr_estimator``), so a step costs a fraction of a DAN step. Returns (B, k*k), a
    softmax."""

    reads_sr = False

    def __init__(self, in_nc: int = 1, nf: int = 64, nb: int = 6, kernel_size: int = 21):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.1, inplace=True)  # noqa: E731
        self.head = nn.Sequential(_conv(in_nc, nf, 5), act())
        self.blocks = nn.ModuleList(nn.Sequential(_conv(nf, nf, 3), act(), _conv(nf, nf, 3))
                                    for _ in range(nb))
        self.attention = _conv(nf, 1, 1)
        self.mlp = nn.Sequential(nn.Linear(2 * nf, 2 * nf), act(),
                                 nn.Linear(2 * nf, kernel_size**2))

    def forward(self, sr: torch.Tensor | None, lr: torch.Tensor) -> torch.Tensor:
        f = self.head(lr)
        for blk in self.blocks:
            f = f + blk(f)
        flat = f.flatten(2)                                             # (B, C, HW)
        w = self.attention(f).flatten(2).float().softmax(-1).to(f.dtype)  # (B, 1, HW)
        pooled = torch.cat([(flat * w).sum(-1), flat.mean(-1)], 1)
        return self.mlp(pooled).float().softmax(1).to(f.dtype)


def percentile_bounds(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``flat`` (B, N): the low and high values that the engine maps to 0 and 1
    (``engine.normalize.compute_normalisation``): the low / high percentiles, the high one at
    least 1/``SPARSE_RANGE`` of the way to the row's brightest value. In ``flat``'s dtype and
    device; the one torch form of that map (training's degradation uses it too)."""
    from ..engine.normalize import HIGH_PERCENTILE, LOW_PERCENTILE, SPARSE_RANGE

    lo = torch.quantile(flat, LOW_PERCENTILE / 100, dim=1)
    hi = torch.quantile(flat, HIGH_PERCENTILE / 100, dim=1)
    return lo, torch.maximum(hi, lo + (flat.max(1).values - lo) / SPARSE_RANGE)


def percentile_stretch(x: torch.Tensor) -> torch.Tensor:
    """Each image of the batch (B, C, H, W) mapped as the engine maps a whole image
    (:func:`percentile_bounds`, joint over channels). A flat image becomes 0."""
    # the percentiles in float64 on the CPU (MPS has no float64; a patch is small)
    flat = x.detach().flatten(1).to("cpu", torch.float64)
    if flat.shape[1] > 1 << 22:  # torch.quantile's input limit; a sample is as good
        flat = flat[:, :: -(-flat.shape[1] // (1 << 22))]
    lo, hi = percentile_bounds(flat)
    span = (hi - lo).clamp_min(1e-6)
    sh = (-1,) + (1,) * (x.dim() - 1)
    lo, span = (t.reshape(sh).to(x.device, torch.float32) for t in (lo, span))
    return ((x.float() - lo) / span).to(x.dtype)


class EstimatorTwoScale(nn.Module):
    """The kernel read from the LR image at two samplings: ``fine``, an :class:`EstimatorLR`
    trained at this model's scale, on the LR image; ``coarse``, one trained at twice the scale
    (the x4 model's for an x2 model), on the LR image binned 2 x 2 (mean), re-stretched by its
    percentiles as the x4 model's engine would stretch it. Both kernels are on the same output
    grid (LR x s = (LR / 2) x 2s); the kernel is their mixture, ``coarse_share`` of the coarse
    one (a buffer, so checkpoints carry it; clamped to [0, 1]).

    Why: binning averages the specimen's finest structure and the noise away, so the coarse
    reading counts less of a recording's own blur or texture as sharpness, and on a bead stack
    reads the PSF as the x4 model does; the fine reading resolves narrow PSFs the binned image
    cannot (docs/models.md, session 29)."""

    reads_sr = False

    def __init__(self, in_nc: int = 1, nf: int = 64, nb: int = 6, kernel_size: int = 21,
                 coarse_share: float = 0.5):
        super().__init__()
        self.fine = EstimatorLR(in_nc, nf, nb, kernel_size)
        self.coarse = EstimatorLR(in_nc, nf, nb, kernel_size)
        self.register_buffer("coarse_share", torch.tensor(float(coarse_share)))

    def forward(self, sr: torch.Tensor | None, lr: torch.Tensor) -> torch.Tensor:
        h, wd = lr.shape[-2] // 2 * 2, lr.shape[-1] // 2 * 2
        # an image under 2 x 2 pixels has no binned reading: the fine one alone
        w = float(self.coarse_share.clamp(0, 1)) if min(h, wd) > 0 else 0.0
        out = None
        if w > 0:
            binned = nn.functional.avg_pool2d(lr[..., :h, :wd], 2)
            out = w * self.coarse(None, percentile_stretch(binned)).float()
        if w < 1:
            k = (1 - w) * self.fine(None, lr).float()
            out = k if out is None else out + k
        return out.to(lr.dtype)


class DANv2(DANBase):
    """The unrolled alternating optimisation: Restorer and Estimator, ``loop`` times.

    Parameters
    ----------
    in_nc, nf, nb, ng, scale, code_len, kernel_size : int
        Architecture (see :class:`RestorerV2`); ``kernel_size`` is the estimated kernel's side.
    loop : int
        Number of unrolled iterations (4 in the released models).
    est_nf, est_nb : int
        Estimator width and depth (64 and 5 in the released code).
    est_attention : int
        1: the Estimator pools its features with learned spatial weights (our microscopy
        models); 0: a plain mean, as released.
    est_input : int
        0: the Estimator reads the SR and the LR image (:class:`EstimatorV2`, as released);
        1: the LR image alone (:class:`EstimatorLR`, ``est_nf`` wide, ``est_nb`` blocks;
        ``est_attention`` does not apply); 2: the LR image alone at two samplings
        (:class:`EstimatorTwoScale`: two such Estimators, the second on the image binned 2 x 2).

    ``forward(lr)`` returns ``(sr, kernel)``: the last iteration's SR image (unclamped) and kernel
    (B, k, k). ``forward_all(lr)`` returns every iteration's SR, kernel and code.
    """

    version = 2

    def __init__(self, in_nc: int = 3, nf: int = 64, nb: int = 10, ng: int = 5, scale: int = 4,
                 code_len: int = 10, kernel_size: int = 21, loop: int = 4, est_nf: int = 64,
                 est_nb: int = 5, est_attention: int = 0, est_input: int = 0):
        super().__init__(in_nc, scale, code_len, kernel_size, loop)
        self.Restorer = RestorerV2(in_nc, nf, nb, ng, scale, code_len)
        if est_input == 2:
            self.Estimator = EstimatorTwoScale(in_nc, est_nf, est_nb, kernel_size)
        elif est_input:
            self.Estimator = EstimatorLR(in_nc, est_nf, est_nb, kernel_size)
        else:
            self.Estimator = EstimatorV2(in_nc, est_nf, est_nb, scale, kernel_size,
                                         attention=bool(est_attention))

    def estimate(self, sr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """Kernel (B, k, k) from the current SR and the LR image."""
        k = self.Estimator(sr, lr)
        return k.reshape(k.shape[0], self.kernel_size, self.kernel_size)

    def forward_all(self, lr: torch.Tensor, code: torch.Tensor | None = None, *,
                    restorer=None, estimator=None, rounds: int | None = None):
        """Every iteration: lists of SR (B,C,sH,sW), kernel (B,k,k) and code (B,L); ``rounds``
        iterations (default: the network's ``loop``).

        ``restorer(lr, code)`` and ``estimator(sr, lr)`` replace the modules when given (the
        engine passes the same networks compiled by another runtime)."""
        restorer = self.Restorer if restorer is None else restorer
        estimator = self.Estimator if estimator is None else estimator
        code = self.initial_code(lr.shape[0]) if code is None else code
        srs, kernels, codes = [], [], []
        for _ in range(self.loop if rounds is None else rounds):
            sr = restorer(lr, code.detach())
            k = estimator(sr.detach(), lr)
            kernel = k.reshape(k.shape[0], self.kernel_size, self.kernel_size)
            code = self.encode(kernel)
            srs.append(sr)
            kernels.append(kernel)
            codes.append(code)
        return srs, kernels, codes
