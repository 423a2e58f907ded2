"""DANv1: the deep alternating network of the NeurIPS 2020 paper.

State-dict compatible with the authors' released DANv1 checkpoints. The Restorer is a chain of
conditional residual blocks (CRB) that see the kernel code expanded to a map; the Estimator
predicts the PCA code directly, so a kernel for display is reconstructed from it.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import DANBase
from .danv2 import make_upsampler

__all__ = ["CALayer", "CRB", "RestorerV1", "EstimatorV1", "DANv1"]


class CALayer(nn.Module):
    """Channel attention: global average, squeeze, excite, sigmoid gate."""

    def __init__(self, nf: int, reduction: int = 16):
        super().__init__()
        r = max(nf // reduction, 1)
        self.body = nn.Sequential(
            nn.Conv2d(nf, r, 1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(r, nf, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.body(x.mean(dim=(2, 3), keepdim=True))


class CRB(nn.Module):
    """Conditional residual block: concat(feature, condition) -> conv -> act -> conv -> CA, + feature."""

    def __init__(self, nf1: int, nf2: int):
        super().__init__()
        n = nf1 + nf2
        self.body = nn.Sequential(
            nn.Conv2d(n, n, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(n, nf1, 3, 1, 1),
            CALayer(nf1),
        )

    def forward(self, f: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return f + self.body(torch.cat([f, cond], 1))


class RestorerV1(nn.Module):
    """DANv1 Restorer: ``nb`` CRBs conditioned on the code expanded to the LR size."""

    def __init__(self, in_nc: int = 3, nf: int = 64, nb: int = 40, scale: int = 4,
                 code_len: int = 10):
        super().__init__()
        self.head = nn.Conv2d(in_nc, nf, 3, 1, 1)
        self.body = nn.ModuleList(CRB(nf, code_len) for _ in range(nb))
        self.fusion = nn.Conv2d(nf, nf, 3, 1, 1)
        self.upscale = make_upsampler(nf, in_nc, scale)

    def forward(self, lr: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        b, _, h, w = lr.shape
        cmap = code.reshape(b, -1, 1, 1).expand(-1, -1, h, w)
        f = self.head(lr)
        for block in self.body:
            f = block(f, cmap)
        return self.upscale(self.fusion(f))


class EstimatorV1(nn.Module):
    """DANv1 Estimator: predicts the kernel's PCA code (B, L) from SR and LR."""

    def __init__(self, in_nc: int = 3, nf: int = 64, nb: int = 5, scale: int = 4,
                 code_len: int = 10):
        super().__init__()
        h = nf // 2
        self.head_LR = nn.Conv2d(in_nc, h, 1, 1, 0)
        self.head_HR = nn.Conv2d(in_nc, h, 9, scale, 4)
        self.body = nn.ModuleList(CRB(h, h) for _ in range(nb))
        self.out = nn.Conv2d(h, code_len, 3, 1, 1)

    def forward(self, sr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        f = self.head_LR(lr)
        g = self.head_HR(sr)[..., : f.shape[-2], : f.shape[-1]]
        for block in self.body:
            f = block(f, g)
        return self.out(f).mean(dim=(2, 3))


class DANv1(DANBase):
    """DANv1 loop. ``forward(lr)`` -> (sr, kernel) with the kernel reconstructed from the code."""

    version = 1

    def __init__(self, in_nc: int = 3, nf: int = 64, nb: int = 40, scale: int = 4,
                 code_len: int = 10, kernel_size: int = 21, loop: int = 4, est_nf: int = 64,
                 est_nb: int = 5):
        super().__init__(in_nc, scale, code_len, kernel_size, loop)
        self.Restorer = RestorerV1(in_nc, nf, nb, scale, code_len)
        self.Estimator = EstimatorV1(in_nc, est_nf, est_nb, scale, code_len)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Kernel (B, k, k) from a code, for display: ``mean + P (code - P^T mean)``.

        The basis columns are orthonormal and codes carry no mean subtraction, so this is the PCA
        reconstruction; it is clipped at zero and renormalised so that it reads as a kernel.
        """
        p = self.encoder[0]
        m = self.kernel_mean.reshape(1, -1)
        k = m + (code.to(p.dtype) - m @ p) @ p.T
        k = k.clamp_min(0)
        k = k / k.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return k.reshape(code.shape[0], self.kernel_size, self.kernel_size)

    def estimate_code(self, sr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        return self.Estimator(sr, lr)

    def forward_all(self, lr: torch.Tensor, code: torch.Tensor | None = None, *,
                    restorer=None, estimator=None, rounds: int | None = None):
        """Every iteration: lists of SR, kernel (B,k,k) and code (B,L), ``rounds`` iterations
        (default ``loop``); ``restorer(lr, code)`` and ``estimator(sr, lr)`` replace the modules
        when given (as in DANv2)."""
        restorer = self.Restorer if restorer is None else restorer
        estimator = self.Estimator if estimator is None else estimator
        code = self.initial_code(lr.shape[0]) if code is None else code
        srs, kernels, codes = [], [], []
        for _ in range(self.loop if rounds is None else rounds):
            sr = restorer(lr, code.detach())
            code = estimator(sr.detach(), lr)
            srs.append(sr)
            codes.append(code)
            kernels.append(self.decode(code))
        return srs, kernels, codes
