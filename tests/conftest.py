"""Shared fixtures. torch is imported before any QApplication exists (known import-order crashes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  (import order matters, see docs/headless-qt in shared)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
if not SHARED.exists():  # CI clones elsewhere with shared/ beside the clone
    SHARED = Path(os.environ.get("NAPARI_DAN_SHARED", Path.cwd().parent / "shared"))


def tiny_model(in_nc: int = 1, scale: int = 2, architecture: str = "DANv2", loop: int = 2,
               kernel_size: int = 21, seed: int = 0):
    """A few-thousand-parameter random model: fast enough for every test."""
    from napari_dan.model import create_model

    hp = dict(in_nc=in_nc, nf=8, nb=1, scale=scale, code_len=10, kernel_size=kernel_size,
              loop=loop, est_nf=16, est_nb=1)
    if architecture == "DANv2":
        hp["ng"] = 1
    return create_model(architecture, name=f"tiny-{architecture}-x{scale}-c{in_nc}",
                        pca_samples=2000, seed=seed, **hp)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared is not available")
    return SHARED


@pytest.fixture
def tiny_gray():
    return tiny_model(in_nc=1, scale=2)


@pytest.fixture
def tiny_rgb():
    return tiny_model(in_nc=3, scale=2)


@pytest.fixture
def tiny_rgb_x4():
    return tiny_model(in_nc=3, scale=4)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
