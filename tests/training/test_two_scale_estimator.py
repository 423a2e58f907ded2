"""The kernel read at two samplings (:class:`EstimatorTwoScale`): the network, its
checkpoints, the engine's estimate against the two models run separately, and the tools that
build (``combine``) and retrain (``export``, ``--init-from``) such a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_dan
from napari_dan.model import create_model, load_model
from napari_dan.model.checkpoint import infer_hyperparameters
from napari_dan.model.danv2 import EstimatorLR, EstimatorTwoScale, percentile_stretch, reads_sr

FP32 = dict(precision="fp32", device="cpu")


def _lr_model(scale: int, seed: int, est_input: int = 1):
    m = create_model("DANv2", name=f"tiny-lr-x{scale}", pca_samples=2000, seed=seed, in_nc=1,
                     nf=8, nb=1, ng=1, scale=scale, code_len=10, kernel_size=21, loop=2,
                     est_nf=8, est_nb=2, est_input=est_input)
    # a microscopy model, as the fluorescence recipes' Estimators are trained for (an export
    # refuses a base of another sampling)
    m.info["provenance"] = {"config": {"data_kind": "microscopy"}}
    return m


def _image(h: int, w: int, seed: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    spots = (rng.random((h, w)) > 0.97) * 1.0
    return (100 + 3000 * gaussian_filter(spots, 1.5) + rng.normal(0, 2, (h, w))).astype(
        np.float32)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(x2 path, x4 path, combined path with share 0.7)."""
    from napari_dan.training.lr_estimator import combine

    d = tmp_path_factory.mktemp("two")
    x2 = _lr_model(2, 1).save(d / "x2.pt")
    x4 = _lr_model(4, 2).save(d / "x4.pt")
    both = combine(str(x2), str(x4), d / "both.pt", "tiny-two", share=0.7)
    return x2, x4, both


@pytest.mark.parametrize("kind", ["sparse", "dense", "flat"])
def test_percentile_stretch_is_the_engines_map(kind):
    from napari_dan.engine.normalize import analyse, compute_normalisation

    rng = np.random.default_rng(5)
    if kind == "sparse":  # a few bright pixels: the sparse-field floor decides the range
        a = 100 + rng.normal(0, 1, (40, 36))
        a[3, 4], a[20, 30] = 5000, 3000
    elif kind == "dense":
        a = 100 + 50 * rng.random((40, 36))
    else:
        a = np.full((40, 36), 7.0)
    layout = analyse(a, None, 1, 2)
    norm = compute_normalisation(lambda lead: a[..., None], layout)
    got = percentile_stretch(torch.from_numpy(a)[None, None]).numpy()[0, 0]
    if kind == "flat":
        assert np.all(got == 0)
        return
    want = (a - norm.lo[0]) / (norm.hi[0] - norm.lo[0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # float32 out
    # per image of a batch, and in the input's dtype
    b = torch.from_numpy(np.stack([a, 3 * a + 10]))[:, None].float()
    out = percentile_stretch(b)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), out[1].numpy(), atol=1e-5)


def test_two_scale_kernel_is_the_mixture(pair):
    x2, x4, both = pair
    m, f, c = load_model(both), load_model(x2), load_model(x4)
    est = m.network.Estimator
    assert isinstance(est, EstimatorTwoScale) and not reads_sr(m.network)
    assert float(est.coarse_share) == pytest.approx(0.7)
    lr = torch.rand(2, 1, 33, 26)  # odd: the last row is left out of the 2 x 2 bins
    with torch.no_grad():
        k = est(None, lr)
        fine = f.network.Estimator(None, lr)
        pooled = torch.nn.functional.avg_pool2d(lr[..., :32, :26], 2)
        coarse = c.network.Estimator(None, percentile_stretch(pooled))
    assert k.shape == (2, 441)
    np.testing.assert_allclose(k.numpy(), (0.3 * fine + 0.7 * coarse).numpy(), atol=1e-6)
    np.testing.assert_allclose(k.sum(1).numpy(), 1.0, atol=1e-5)
    # an image under 2 x 2 pixels has no binned reading: the fine one alone
    thin = torch.rand(1, 1, 1, 9)
    with torch.no_grad():
        np.testing.assert_allclose(est(None, thin).numpy(), f.network.Estimator(None, thin).numpy(),
                                   atol=1e-6)
    # share 1: the coarse reading alone (the fine Estimator is not run)
    est.coarse_share.fill_(1.0)
    try:
        with torch.no_grad():
            np.testing.assert_allclose(est(None, lr).numpy(), coarse.numpy(), atol=1e-6)
    finally:
        est.coarse_share.fill_(0.7)


def test_two_scale_checkpoint_round_trip_and_refusals(pair, tmp_path):
    from napari_dan.errors import CheckpointError

    _, _, both = pair
    m = load_model(both)
    arch, hp = infer_hyperparameters(m.network.state_dict())
    assert arch == "DANv2" and hp["est_input"] == 2 and (hp["est_nf"], hp["est_nb"]) == (8, 2)
    back = load_model(m.save(tmp_path / "again.pt"))
    for k, v in m.network.state_dict().items():
        assert torch.equal(v, back.network.state_dict()[k]), k
    prov = m.info["provenance"]["estimator"]
    assert prov["coarse_share"] == pytest.approx(0.7)
    assert prov["coarse"]["fingerprint"].startswith("sha256:")
    # a share outside 0..1 is a damaged file: not written, and refused at load
    from napari_dan.model.checkpoint import state_fingerprint

    obj = torch.load(both, weights_only=True)
    obj["state_dict"]["Estimator.coarse_share"] = torch.tensor(1.5)
    obj["state_sha256"] = state_fingerprint(obj["state_dict"])
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="coarse_share must be one number in 0..1"):
        load_model(tmp_path / "bad.pt")
    m.network.Estimator.coarse_share.fill_(1.5)
    with pytest.raises(ValueError, match="coarse_share"):
        m.save(tmp_path / "bad2.pt")
    assert not (tmp_path / "bad2.pt").exists()


def test_engine_estimate_equals_the_two_models_run_apart(pair):
    """On one patch (the whole image), the engine's blind kernel with the combined model is the
    share's mixture of the x2 model's on the image and the x4 model's on the image binned 2x2:
    the in-network stretch is what the x4 model's engine does to the binned image."""
    from napari_dan.imaging.camera import bin_pixels

    x2, x4, both = pair
    img = _image(64, 48, 3)
    r = napari_dan.super_resolve(img, load_model(both), **FP32)
    assert r.metadata["settled"]["rounds_run"] == [1]
    k2 = napari_dan.super_resolve(img, load_model(x2), **FP32).kernel
    binned = bin_pixels(img.astype(np.float64), 2).astype(np.float32)
    k4 = napari_dan.super_resolve(binned, load_model(x4), **FP32).kernel
    want = 0.3 * k2 / k2.sum() + 0.7 * k4 / k4.sum()
    np.testing.assert_allclose(r.kernel / r.kernel.sum(), want, atol=2e-6)
    assert r.image.shape == (128, 96) and np.isfinite(r.image).all()


def test_combine_refuses_what_cannot_be_combined(pair, tmp_path):
    from conftest import tiny_model
    from napari_dan.training.lr_estimator import combine

    x2, x4, both = pair
    with pytest.raises(FileExistsError, match="exists"):
        combine(str(x2), str(x4), both, "again")
    with pytest.raises(ValueError, match="needs an x4 one"):
        combine(str(x2), str(x2), tmp_path / "a.pt", "a")
    released = tiny_model(scale=4).save(tmp_path / "released.pt")  # DAN's own Estimator
    with pytest.raises(ValueError, match="no LR-only Estimator"):
        combine(str(x2), str(released), tmp_path / "b.pt", "b")
    with pytest.raises(ValueError, match="share must be in"):
        combine(str(x2), str(x4), tmp_path / "c.pt", "c", share=0.0)
    with pytest.raises(ValueError, match="no LR-only Estimator"):  # already two-scale
        combine(str(both), str(x4), tmp_path / "d.pt", "d")
    assert not any((tmp_path / f"{n}.pt").exists() for n in "abcd")


def test_combine_command_line(pair, tmp_path, capsys):
    from napari_dan.training.lr_estimator import main

    x2, x4, _ = pair
    out = tmp_path / "cli.pt"
    assert main(["combine", "--base", str(x2), "--coarse", str(x4), "--share", "1",
                 "--name", "cli", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert float(load_model(out).network.Estimator.coarse_share) == 1.0


@pytest.mark.slow
def test_retraining_the_fine_estimator_keeps_the_coarse_one(pair, tmp_path):
    from napari_dan.training.lr_estimator import _load_estimator, export, train
    from napari_dan.training.recipes import recipe

    _, _, both = pair
    small = dict(batch=2, lr_patch=12, nf=8, nb=2, real_fraction=0.0, data=[], seed=4,
                 recipe="dan-x2-fluo")
    lines = []
    train(tmp_path / "run", minutes=0.01, init_from=str(both), log=lines.append, **small)
    assert lines[0] == f"Estimator initialised from {both}"
    src = load_model(both)
    # --init-from a two-scale model starts from its fine Estimator (the one at this scale)
    net = EstimatorLR(1, 8, 2, 21)
    _load_estimator(net, str(both), recipe("dan-x2-fluo"))
    for k, v in src.network.Estimator.fine.state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k
    out = load_model(export(tmp_path / "run", str(both), tmp_path / "new.pt", "new"))
    assert isinstance(out.network.Estimator, EstimatorTwoScale)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    for k, v in state["net"].items():
        assert torch.equal(v, out.network.Estimator.fine.state_dict()[k]), k
    for k, v in src.network.Estimator.coarse.state_dict().items():
        assert torch.equal(v, out.network.Estimator.coarse.state_dict()[k]), k
    assert float(out.network.Estimator.coarse_share) == pytest.approx(0.7)


def test_openvino_runtime_reads_the_kernel_in_pytorch(pair):
    """OpenVINO runs the Restorer; the two-sampling Estimator (percentiles, a shape-dependent
    crop) stays in PyTorch, so both runtimes read the same kernel."""
    pytest.importorskip("openvino")
    _, _, both = pair
    m = load_model(both)
    img = _image(40, 36, 4)
    a = napari_dan.super_resolve(img, m, **FP32)
    b = napari_dan.super_resolve(img, m, runtime="openvino", **FP32)
    np.testing.assert_allclose(b.kernel, a.kernel, atol=1e-6)
    assert b.metadata["settled"]["rounds_run"] == [1]
    np.testing.assert_allclose(b.image, a.image, atol=2.0)
