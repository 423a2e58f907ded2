"""compiled=True: the Restorer through torch.compile gives the eager result, and falls back to the
eager network when compiling fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_model
from napari_dan import super_resolve
from napari_dan.engine import runtime


@pytest.mark.slow
def test_compiled_restorer_matches_eager():
    m = tiny_model(seed=4)
    img = np.random.default_rng(2).integers(0, 255, (2, 40, 48), dtype=np.uint8)
    eager = super_resolve(img, m, precision="fp32", tile_size=32)
    comp = super_resolve(img, m, precision="fp32", tile_size=32, compiled=True)
    assert comp.metadata["compiled"] == "torch.compile (inductor)"
    assert "compiled" not in eager.metadata
    assert np.abs(comp.image.astype(int) - eager.image.astype(int)).max() <= 1


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("no C compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    m = tiny_model(seed=5)  # a fresh network: nothing cached for it
    img = np.random.default_rng(3).integers(0, 255, (40, 48), dtype=np.uint8)
    r = super_resolve(img, m, precision="fp32", compiled=True, tile_size=24)
    assert "torch.compile failed (RuntimeError: no C compiler); eager Restorer used" \
        in r.metadata["compiled"]
    np.testing.assert_array_equal(r.image, super_resolve(img, m, precision="fp32",
                                                         tile_size=24).image)
    assert isinstance(runtime.CompiledRestorer.for_network(m.network), runtime.CompiledRestorer)
