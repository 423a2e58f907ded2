"""What runs the network: PyTorch with channels_last weights (default), OpenVINO on request."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from conftest import tiny_model
from napari_dan import super_resolve
from napari_dan.engine import prepare, restore_plane
from napari_dan.engine import runtime as rt
from napari_dan.engine.devices import channels_last_weights
from napari_dan.errors import InputError


def _convs(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]


def _fusion_is_nhwc(m, x, code) -> bool:
    seen = []
    h = m.network.Restorer.fusion.register_forward_hook(
        lambda mod, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last)))
    with torch.inference_mode():
        out = m.network.restore(x, code).clone()
    h.remove()
    return seen[0], out


def test_channels_last_weights_keep_values_and_make_grey_convs_nhwc():
    m = tiny_model(in_nc=1, seed=11)
    x = torch.rand(1, 1, 20, 24).contiguous(memory_format=torch.channels_last)
    code = m.network.initial_code(1)
    # the ambiguity being fixed: a one-channel NHWC tensor also counts as NCHW, so the
    # convolutions' outputs came out NCHW and every layer ran the NCHW kernels
    nhwc, before = _fusion_is_nhwc(m, x, code)
    assert not nhwc
    channels_last_weights(m.network)
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last)
               for c in _convs(m.network))
    nhwc, after = _fusion_is_nhwc(m, x, code)
    assert nhwc
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_rgb_networks_keep_their_weights_layout():
    m = tiny_model(in_nc=3, seed=13)
    before = [c.weight.stride() for c in _convs(m.network)]
    channels_last_weights(m.network)  # three-channel input decides alone: nothing to fix
    assert [c.weight.stride() for c in _convs(m.network)] == before


def test_engine_runs_cpu_networks_with_channels_last_weights():
    m = tiny_model(in_nc=1, seed=12)
    assert not all(c.weight.is_contiguous(memory_format=torch.channels_last)
                   for c in _convs(m.network))  # fresh weights are NCHW
    img = np.random.default_rng(1).integers(0, 255, (30, 34), dtype=np.uint8)
    r = super_resolve(img, m, precision="fp32")
    assert r.metadata["runtime"] == "torch"
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last)
               for c in _convs(m.network))


def test_runtime_values_are_checked():
    cpu = torch.device("cpu")
    assert rt.resolve_runtime("torch", cpu, "fp16", True) == "torch"
    with pytest.raises(InputError, match="runtime must be one of torch, openvino"):
        rt.resolve_runtime("onnx", cpu, "auto", False)
    with pytest.raises(InputError, match="runtime must be"):
        super_resolve(np.zeros((20, 20), np.uint8), tiny_model(), runtime=3)


def test_openvino_refusals_say_why(monkeypatch):
    cpu = torch.device("cpu")
    with pytest.raises(InputError, match=r"fp32 or bf16 only.*compiled=True"):
        rt.resolve_runtime("openvino", cpu, "fp16", True)
    with pytest.raises(InputError, match="CPU only"):
        rt.resolve_runtime("openvino", torch.device("cuda"), "auto", False)
    monkeypatch.setattr(rt, "openvino_version", lambda: None)
    with pytest.raises(InputError, match=r"not installed \(pip install \"napari-dan\[openvino\]"):
        super_resolve(np.zeros((20, 20), np.uint8), tiny_model(), runtime="openvino")


needs_openvino = pytest.mark.skipif(rt.openvino_version() is None,
                                    reason="openvino is not installed")


@needs_openvino
@pytest.mark.parametrize("arch, in_nc, scale, attention", [
    ("DANv2", 1, 2, False), ("DANv2", 3, 4, False), ("DANv1", 3, 2, False),
    ("DANv2", 1, 2, True)])
@pytest.mark.slow
def test_openvino_gives_pytorchs_result(arch, in_nc, scale, attention):
    m = tiny_model(in_nc=in_nc, scale=scale, architecture=arch, seed=21)
    if attention:  # a microscopy-style Estimator (attention pooling), non-zero weights
        from napari_dan.model import create_model
        m = create_model("DANv2", in_nc=1, nf=8, nb=1, ng=1, scale=2, code_len=10,
                         kernel_size=21, loop=2, est_nf=16, est_nb=1, est_attention=1,
                         pca_samples=2000, seed=3)
        torch.nn.init.normal_(m.network.Estimator.attention.weight, std=0.5)
    rng = np.random.default_rng(5)
    shape = (2, 37, 45, 3) if in_nc == 3 else (2, 37, 45)
    img = rng.random(shape).astype(np.float32)
    for mode in ("global", "per-tile"):
        a = super_resolve(img, m, precision="fp32", kernel_mode=mode, tile_size=32)
        b = super_resolve(img, m, precision="fp32", kernel_mode=mode, tile_size=32,
                          runtime="openvino")
        assert b.metadata["runtime"].startswith("openvino ")
        np.testing.assert_allclose(b.image, a.image, atol=2e-4)
        np.testing.assert_allclose(b.kernel, a.kernel, atol=2e-5)


@needs_openvino
@pytest.mark.slow
def test_openvino_follows_changed_weights():
    m = tiny_model(seed=31)
    img = np.random.default_rng(6).random((30, 30)).astype(np.float32)
    first = super_resolve(img, m, precision="fp32", runtime="openvino").image
    with torch.no_grad():
        m.network.Restorer.head1.weight.mul_(1.5)  # edited in place, as training does
    a = super_resolve(img, m, precision="fp32").image
    b = super_resolve(img, m, precision="fp32", runtime="openvino").image
    assert np.abs(a - first).max() > 1e-3
    np.testing.assert_allclose(b, a, atol=2e-4)


@needs_openvino
@pytest.mark.slow
def test_a_pickled_plan_keeps_its_runtime():
    m = tiny_model(seed=41)
    img = np.random.default_rng(7).random((2, 24, 26)).astype(np.float32)
    plan = prepare(img, m, precision="fp32", runtime="openvino")
    again = pickle.loads(pickle.dumps(plan)).attach(m)
    assert again.runner.runtime == "openvino"
    ref = restore_plane(plan, (1,))
    np.testing.assert_allclose(restore_plane(again, (1,), img[1]).plane, ref.plane, atol=1e-6)
