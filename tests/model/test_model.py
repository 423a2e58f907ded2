"""The networks reproduce the authors' forward pass; checkpoints load safely with clear errors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

import napari_dan
from napari_dan.errors import CheckpointError, UnknownModelError
from napari_dan.model import DANv1, DANv2, create_model, load_checkpoint
from napari_dan.model.checkpoint import build_network, infer_hyperparameters

GOLDEN = ["v2_small_x4", "v2_small_x2_gray", "v2_small_x3", "v2_small_x4_aniso31", "v1_small_x4"]


def _rel(a, b):
    b = np.asarray(b)
    return float(np.abs(np.asarray(a) - b).max() / (np.abs(b).max() + 1e-12))


@pytest.mark.parametrize("case", GOLDEN)
def test_golden_every_iteration(shared_dir, case):
    g = shared_dir / "reference" / "official-dan" / "golden"
    meta = json.loads((g / f"{case}.json").read_text())
    ref = np.load(g / f"{case}.npz")
    model = napari_dan.load_model(g / f"{case}.pth")
    hp = meta["hyperparameters"]
    assert model.architecture == meta["architecture"]
    assert (model.scale, model.kernel_size, model.code_len) == (
        hp["upscale"], hp["kernel_size"], hp["input_para"])
    # the iteration count is not stored in a checkpoint: the json gives it
    model.network.loop = hp["loop"]
    with torch.no_grad():
        srs, kernels, codes = model.network.forward_all(torch.from_numpy(ref["lr"]))
    assert len(srs) == hp["loop"]
    for i in range(hp["loop"]):
        assert _rel(srs[i], ref["sr"][i]) < 1e-5, f"sr of iteration {i}"
        assert _rel(codes[i], ref["ker_code"][i]) < 1e-5, f"code of iteration {i}"
        if meta["architecture"] == "DANv2":
            assert _rel(kernels[i].reshape(kernels[i].shape[0], -1), ref["kernel"][i]) < 1e-5
        else:  # DANv1's estimator output is the code
            assert _rel(codes[i], ref["kernel"][i]) < 1e-5
    # forward() gives the last iteration; kernels are (B, k, k) summing to one
    with torch.no_grad():
        sr, k = model.network(torch.from_numpy(ref["lr"]))
    assert _rel(sr, ref["sr"][-1]) < 1e-5
    assert k.shape == (1, model.kernel_size, model.kernel_size)
    assert torch.allclose(k.sum((1, 2)), torch.ones(1), atol=1e-4)


def test_group_quirk_matters(shared_dir):
    """Without the in-place group quirk the golden output is NOT reproduced."""
    g = shared_dir / "reference" / "official-dan" / "golden"
    ref = np.load(g / "v2_small_x4.npz")
    model = napari_dan.load_model(g / "v2_small_x4.pth")
    for m in model.network.modules():
        if hasattr(m, "quirk"):
            m.quirk = False
    with torch.no_grad():
        sr, _ = model.network(torch.from_numpy(ref["lr"]))
    assert _rel(sr, ref["sr"][-1]) > 1e-3


@pytest.mark.parametrize("layout", ["danv1_x2_setting1", "danv1_x2_setting2", "danv1_x3_setting1",
                                    "danv1_x4_setting1", "danv1_x4_setting2", "danv2_x2_setting1",
                                    "danv2_x2_setting2", "danv2_x3_setting1", "danv2_x4_setting1",
                                    "danv2_x4_setting2"])
def test_every_released_layout_is_inferred(shared_dir, layout, tmp_path):
    spec = json.loads((shared_dir / "reference" / "official-dan" / "keys" / f"{layout}.json").read_text())
    sd_shapes = spec["state_dict"]
    arch, hp = infer_hyperparameters({k: torch.empty(v) for k, v in sd_shapes.items()})
    ref = spec["hyperparameters"]
    assert arch == spec["architecture"]
    assert hp["scale"] == ref["upscale"] and hp["nf"] == ref["nf"] and hp["nb"] == ref["nb"]
    assert hp["kernel_size"] == ref["kernel_size"] and hp["code_len"] == ref["input_para"]
    assert hp["loop"] == 4
    net = build_network(arch, hp)
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert own == {k: tuple(v) for k, v in sd_shapes.items()}
    assert sum(p.numel() for p in net.parameters()) + sum(
        b.numel() for n, b in net.named_buffers() if n in sd_shapes) == spec["parameters"] or \
        sum(p.numel() for p in net.parameters()) == spec["parameters"]
    if layout == "danv2_x2_setting1":  # a full-size file with a module. prefix loads end to end
        sd = {"module." + k: torch.randn(v) * 0.01 for k, v in sd_shapes.items()}
        torch.save(sd, tmp_path / "released.pth")
        m = load_checkpoint(tmp_path / "released.pth")
        assert (m.scale, m.in_channels, m.architecture) == (2, 3, "DANv2")


def test_our_format_roundtrip(tmp_path, rng):
    model = create_model("DANv2", name="x", in_nc=1, nf=8, nb=1, ng=1, scale=3, loop=3,
                         est_nf=16, est_nb=1, pca_samples=500)
    p = model.save(tmp_path / "ours.pt", metrics={"psnr": 1.0})
    back = napari_dan.load_model(p)
    assert (back.scale, back.in_channels, back.iterations) == (3, 1, 3)
    assert back.info["metrics"] == {"psnr": 1.0}
    np.testing.assert_allclose(back.kernel_mean, model.kernel_mean)
    lr = torch.from_numpy(rng.random((1, 1, 12, 10), dtype=np.float32))
    with torch.no_grad():
        a, ka = model.network(lr)
        b, kb = back.network(lr)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ka, kb)


def test_a_newer_format_version_loads_with_a_warning(tmp_path):
    import warnings

    model = create_model("DANv2", name="x", in_nc=1, nf=8, nb=1, ng=1, scale=2, loop=2,
                         est_nf=8, est_nb=1, pca_samples=500)
    p = model.save(tmp_path / "ours.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # today's version: no word
        napari_dan.load_model(p)
    obj = torch.load(p, weights_only=True)
    obj["format_version"] = 99
    torch.save(obj, tmp_path / "future.pt")
    with pytest.warns(UserWarning, match="format version 99, newer than this napari-dan reads"):
        back = napari_dan.load_model(tmp_path / "future.pt")
    assert back.scale == 2


def test_danv1_roundtrip_and_decode(tmp_path):
    model = create_model("DANv1", in_nc=3, nf=8, nb=2, scale=2, est_nf=16, est_nb=1,
                         pca_samples=2000)
    back = napari_dan.load_model(model.save(tmp_path / "v1.pt"))
    assert back.architecture == "DANv1" and isinstance(back.network, DANv1)
    from napari_dan.model.kernels import gaussian_kernel, kernel_stats
    k = torch.from_numpy(gaussian_kernel(21, 2.0))[None]
    rec = back.network.decode(back.network.encode(k))
    assert abs(kernel_stats(rec[0].numpy()).sigma_major - 2.0) < 0.05


def test_truncated_file(tmp_path, shared_dir):
    data = (shared_dir / "reference" / "official-dan" / "golden" / "v2_small_x4.pth").read_bytes()
    p = tmp_path / "cut.pth"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        napari_dan.load_model(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.pth"
    p.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth"):
        napari_dan.load_model(p)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_needing_code_is_refused(tmp_path, capsys):
    p = tmp_path / "evil.pth"
    torch.save({"x": _Evil()}, p)
    with pytest.raises(CheckpointError, match="refused"):
        napari_dan.load_model(p)
    assert "this must never run" not in capsys.readouterr().out


def test_plain_pickle_is_refused(tmp_path):
    p = tmp_path / "plain.pkl"
    p.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="plain.pkl"):
        napari_dan.load_model(p)


def test_wrong_shape_says_expected(tmp_path, shared_dir):
    g = shared_dir / "reference" / "official-dan" / "golden"
    sd = torch.load(g / "v2_small_x4.pth", weights_only=True)
    sd["Restorer.fusion.weight"] = torch.zeros(16, 16, 5, 5)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"Restorer.fusion.weight.*\(16, 16, 5, 5\).*expected \(16, 16, 3, 3\)"):
        napari_dan.load_model(tmp_path / "bad.pth")


def test_unknown_layout(tmp_path):
    torch.save({"encoder": torch.zeros(1, 441, 10), "foo.weight": torch.zeros(3)}, tmp_path / "o.pth")
    with pytest.raises(CheckpointError, match="not a DAN checkpoint"):
        napari_dan.load_model(tmp_path / "o.pth")


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        napari_dan.load_model(tmp_path / "nope.pth")
    with pytest.raises(UnknownModelError) as e:
        napari_dan.load_model("no-such-model")
    names = [m["name"] for m in napari_dan.list_models()]
    assert all(n in str(e.value) for n in names)


def test_model_name_mistakes_get_hints():
    from napari_dan.errors import InputError

    names = [m["name"] for m in napari_dan.list_models()]
    with pytest.raises(InputError, match="model name is empty"):
        napari_dan.load_model("")
    if names:
        with pytest.raises(UnknownModelError, match=f"named '{names[0]}' \\(no file extension"):
            napari_dan.load_model(names[0] + ".pt")


def test_a_damaged_bundled_file_is_left_out_of_the_list(tmp_path, monkeypatch):
    from napari_dan.model import bundled

    good = dict(bundled._bundled())
    if not good:
        pytest.skip("no bundled model")
    bad = tmp_path / "dan-broken.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    monkeypatch.setattr(bundled, "_bundled", lambda: {**good, "dan-broken": bad})
    with pytest.warns(UserWarning, match="dan-broken.pt cannot be read"):
        listed = bundled.list_models()
    assert [m["name"] for m in listed] == list(good)


def test_a_provenance_that_is_not_a_dict_is_no_record():
    from conftest import tiny_model

    m = tiny_model()
    m.info["provenance"] = ["made", "by", "hand"]
    assert m.sampling == "bicubic" and m.trained_fwhm_range is None
    m.info["provenance"] = {"config": "not a dict"}
    assert m.sampling == "bicubic" and m.trained_fwhm_range is None


def test_bundled_models_listed_and_loadable():
    models = napari_dan.list_models()
    for info in models:
        m = napari_dan.load_model(info["name"])
        assert m.scale == info["scale"] and m.in_channels == info["in_channels"]
        assert m.info.get("provenance"), "bundled weights must say how they were made"
        assert sum(p.numel() for p in m.network.parameters()) > 10_000


def test_model_sizes_are_parameters():
    small = create_model("DANv2", nf=16, nb=2, ng=2, scale=2, in_nc=1, est_nf=16, est_nb=1,
                         pca_samples=200)
    assert isinstance(small.network, DANv2)
    assert len(small.network.Restorer.body) == 2 and len(small.network.Restorer.body[0].body) == 2
    assert small.parameters < 100_000
