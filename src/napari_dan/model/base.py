"""What DANv1 and DANv2 share: the PCA buffers, coding kernels, and the unrolled loop's start."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DANBase"]


class DANBase(nn.Module):
    """Holds the buffers every released checkpoint stores: ``encoder`` (1, k*k, L) PCA projection,
    ``init_kernel`` (1, k, k) Dirac and ``init_ker_map`` (1, L) its code; plus ``kernel_mean``
    (k, k), the mean of the kernel distribution behind the basis (not part of the released
    layout, so not persistent in the state_dict). Subclasses set ``Restorer`` and ``Estimator``.
    """

    def __init__(self, in_nc: int, scale: int, code_len: int, kernel_size: int, loop: int):
        super().__init__()
        self.in_nc, self.scale, self.loop = in_nc, scale, loop
        self.kernel_size, self.code_len = kernel_size, code_len
        self.register_buffer("encoder", torch.zeros(1, kernel_size**2, code_len))
        dirac = torch.zeros(1, kernel_size, kernel_size)
        dirac[:, kernel_size // 2, kernel_size // 2] = 1
        self.register_buffer("init_kernel", dirac)
        self.register_buffer("init_ker_map", torch.zeros(1, code_len))
        self.register_buffer("kernel_mean", torch.zeros(kernel_size, kernel_size), persistent=False)

    def set_pca(self, encoder: torch.Tensor) -> None:
        """Install a PCA projection (k*k, L) and the Dirac's code derived from it."""
        enc = torch.as_tensor(encoder, dtype=self.encoder.dtype).reshape(self.encoder.shape)
        self.encoder.copy_(enc)
        self.init_ker_map.copy_(self.encode(self.init_kernel))

    def encode(self, kernel: torch.Tensor) -> torch.Tensor:
        """Kernel (B, k, k) or (B, k*k) -> code (B, L); no mean subtraction, as released."""
        return kernel.reshape(kernel.shape[0], -1).to(self.encoder.dtype) @ self.encoder[0]

    def initial_code(self, batch: int) -> torch.Tensor:
        """The Dirac kernel's code, (batch, L): where the loop starts."""
        return self.init_ker_map.expand(batch, -1)

    def restore(self, lr: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """The Restorer alone: SR (B, C, sH, sW) from LR and a kernel code (B, L)."""
        return self.Restorer(lr, code)

    def forward(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last iteration's SR image (unclamped) and kernel (B, k, k)."""
        srs, kernels, _ = self.forward_all(lr)
        return srs[-1], kernels[-1]
