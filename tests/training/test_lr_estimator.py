"""The LR-only Estimator: the network, its checkpoints, the engine's one-call estimate, and
its training (train, resume, export into a DAN checkpoint)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_dan
from conftest import tiny_model
from napari_dan.model import load_model
from napari_dan.model.checkpoint import infer_hyperparameters
from napari_dan.model.danv2 import EstimatorLR, EstimatorV2, reads_sr

FP32 = dict(precision="fp32", device="cpu")


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """Blurred random spots on an offset: something for an estimator to read."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return (100 + 2000 * gaussian_filter((rng.random((h, w)) > 0.97) * 1.0, 1.2)).astype(
        np.float32)


def _lr_model(seed: int = 0, loop: int = 3):
    from napari_dan.model import create_model

    return create_model("DANv2", name="tiny-lr", pca_samples=2000, seed=seed, in_nc=1, nf=8,
                        nb=1, ng=1, scale=2, code_len=10, kernel_size=21, loop=loop,
                        est_nf=8, est_nb=2, est_input=1)


def test_lr_estimator_ignores_sr_and_gives_kernels():
    m = _lr_model()
    net = m.network
    assert isinstance(net.Estimator, EstimatorLR) and not reads_sr(net)
    assert reads_sr(tiny_model().network)  # the released layout reads the SR image
    lr = torch.rand(2, 1, 19, 23)
    with torch.no_grad():
        k1 = net.Estimator(torch.rand(2, 1, 38, 46), lr)
        k2 = net.Estimator(None, lr)
    assert k1.shape == (2, 441) and torch.equal(k1, k2)
    np.testing.assert_allclose(k1.sum(1).numpy(), 1.0, atol=1e-5)
    assert (k1 >= 0).all() and not torch.allclose(k1[0], k1[1])  # reads its input


def test_lr_estimator_checkpoint_round_trip(tmp_path):
    m = _lr_model(seed=3)
    arch, hp = infer_hyperparameters(m.network.state_dict())
    assert arch == "DANv2" and hp["est_input"] == 1 and (hp["est_nf"], hp["est_nb"]) == (8, 2)
    assert "est_attention" not in hp
    back = load_model(m.save(tmp_path / "lr.pt"))
    assert isinstance(back.network.Estimator, EstimatorLR)
    for k, v in m.network.state_dict().items():
        assert torch.equal(v, back.network.state_dict()[k]), k
    # a released-layout model is still read as one
    _, hp0 = infer_hyperparameters(tiny_model().network.state_dict())
    assert "est_input" not in hp0
    assert isinstance(tiny_model().network.Estimator, EstimatorV2)


def test_engine_estimates_once_with_an_lr_estimator():
    from napari_dan.engine.devices import Precision
    from napari_dan.engine.plan import NetworkRunner

    m = _lr_model(seed=1, loop=3)
    x = (_image(40, 40, 2) / 255.0).astype(np.float32)[None, None]
    runner = NetworkRunner(m, torch.device("cpu"), Precision("fp32", "test"))
    kernel, code, done = runner.estimate(x, 3, settle=0.05)
    assert done == 1  # one Estimator call, no Restorer pass
    with torch.inference_mode():  # the whole loop finds the same kernel, every round
        _, kernels, codes = m.network.forward_all(torch.from_numpy(x))
    for k in kernels:
        np.testing.assert_allclose(kernel, k.numpy(), atol=1e-6)
    np.testing.assert_allclose(code, codes[-1].numpy(), atol=1e-5)
    r = napari_dan.super_resolve(_image(40, 40, 2), m, **FP32)
    assert r.metadata["settled"]["rounds_run"] == [1] and r.image.shape == (80, 80)


@pytest.mark.slow
def test_lr_estimator_trains_resumes_and_exports(tmp_path):
    from napari_dan.training.lr_estimator import export, train

    small = dict(batch=2, lr_patch=12, nf=8, nb=1, real_fraction=0.0, data=[], seed=4)
    lines = []
    state = train(tmp_path / "run", minutes=0.02, log=lines.append, **small)
    first = torch.load(state, weights_only=False)
    assert first["step"] >= 1
    assert lines[-1].startswith(f"done: {first['step']} steps")
    # a longer budget resumes where the first run stopped, with its weights and data stream
    train(tmp_path / "run", minutes=0.04, log=lines.append, **small)
    second = torch.load(state, weights_only=False)
    assert any(s.startswith(f"resumed at step {first['step']}") for s in lines)
    assert second["step"] > first["step"]
    assert not all(torch.equal(v, first["net"][k]) for k, v in second["net"].items())
    # the same call resumes without a word about settings; others are named, the new ones used
    assert not any("differ" in s for s in lines)
    lines.clear()
    train(tmp_path / "run", minutes=0.05, log=lines.append, **{**small, "lr_patch": 14},
          lr=1e-4, shape_weight=2.0, astigmatism=(0.5, 1.5))
    said = next(s for s in lines if "differ" in s)
    assert "lr 0.0005 -> 0.0001" in said and "shape_weight 0.0 -> 2.0" in said
    assert "lr_patch 12 -> 14" in said and "astigmatism (default) -> (0.5, 1.5)" in said
    assert "minutes" not in said
    # ... and another network size or recipe is refused before any data is drawn
    third = torch.load(state, weights_only=False)
    for change, text in ((dict(nf=16), "nf 8; this call asks for nf 16"),
                         (dict(recipe="dan-x4-gray"), "recipe dan-x4-fluo; this call asks for "
                                                      "recipe dan-x4-gray")):
        with pytest.raises(ValueError, match=text):
            train(tmp_path / "run", minutes=1, log=lines.append, **{**small, **change})
    assert torch.load(state, weights_only=False)["step"] == third["step"]
    second = third
    # the export: the base model's Restorer and PCA basis, this Estimator
    base = tiny_model(scale=4, seed=2)
    photo_path = base.save(tmp_path / "photo-base.pt")  # a Restorer of bicubic-sampled images
    base.info["provenance"] = {"config": {"data_kind": "microscopy"}}  # as the recipe's
    base_path = base.save(tmp_path / "base.pt")
    with pytest.raises(ValueError, match="trained on bin sampling .* bicubic-sampled"):
        export(tmp_path / "run", str(photo_path), tmp_path / "mixed.pt", "mixed")
    assert not (tmp_path / "mixed.pt").exists()
    out = export(tmp_path / "run", str(base_path), tmp_path / "tiny-lr-x4.pt", "tiny-lr-x4")
    m = load_model(out)
    assert m.name == "tiny-lr-x4" and m.scale == 4 and not reads_sr(m.network)
    sd, bsd = m.network.state_dict(), base.network.state_dict()
    for k, v in bsd.items():
        if not k.startswith("Estimator."):
            assert torch.equal(v, sd[k]), k
    for k, v in second["net"].items():
        assert torch.equal(v, sd["Estimator." + k]), k
    assert torch.equal(m.network.kernel_mean, base.network.kernel_mean)
    assert m.info["provenance"]["estimator"]["steps"] == second["step"]
    # refused: an existing output, and a base of another scale than the recipe's
    with pytest.raises(FileExistsError, match="exists"):
        export(tmp_path / "run", str(base_path), tmp_path / "tiny-lr-x4.pt", "tiny-lr-x4")
    x2 = tiny_model(scale=2).save(tmp_path / "x2.pt")
    with pytest.raises(ValueError, match="trained for .*'scale': 4"):
        export(tmp_path / "run", str(x2), tmp_path / "other.pt", "other")
    assert not (tmp_path / "other.pt").exists()
    r = napari_dan.super_resolve(_image(24, 20, 1), m, **FP32)
    assert r.image.shape == (96, 80) and np.isfinite(r.image).all()
    # a new run can start from the exported model's Estimator (run states do not ship) ...
    from napari_dan.model.danv2 import EstimatorLR
    from napari_dan.training.lr_estimator import _load_estimator
    from napari_dan.training.recipes import recipe

    cfg = recipe("dan-x4-fluo")
    net = EstimatorLR(1, 8, 1, cfg.kernel_size)
    _load_estimator(net, str(out), cfg)
    for k, v in second["net"].items():
        assert torch.equal(v, net.state_dict()[k]), k
    lines.clear()
    train(tmp_path / "run2", minutes=0.01, init_from=str(out), log=lines.append,
          shape_weight=1.0, astigmatism=(0.5, 1.5), **small)
    assert lines[0] == f"Estimator initialised from {out}"
    state2 = torch.load(tmp_path / "run2" / "state.pt", weights_only=False)
    assert state2["args"]["shape_weight"] == 1.0 and state2["args"]["astigmatism"] == (0.5, 1.5)
    assert m.info["provenance"]["estimator"]["init_from"] is None
    cont = load_model(export(tmp_path / "run2", str(base_path), tmp_path / "cont.pt", "cont"))
    assert cont.info["provenance"]["estimator"]["init_from"] == str(out)
    assert "earlier" not in cont.info["provenance"]["estimator"]
    # exported onto a base that has an LR-only Estimator already: that one's record is kept
    onto = load_model(export(tmp_path / "run2", str(out), tmp_path / "onto.pt", "onto"))
    assert onto.info["provenance"]["estimator"]["earlier"] == m.info["provenance"]["estimator"]
    # ... but not from DAN's own Estimator, another size or another scale
    with pytest.raises(ValueError, match="reads the SR image"):
        _load_estimator(net, str(base_path), cfg)
    with pytest.raises(ValueError, match="another size"):
        _load_estimator(EstimatorLR(1, 16, 1, cfg.kernel_size), str(out), cfg)
    with pytest.raises(ValueError, match="x4 with"):
        _load_estimator(net, str(out), recipe("dan-x2-fluo"))


def test_lr_estimator_and_restorer_command_lines_say_what_is_wrong_in_one_line(tmp_path, capsys):
    """Common mistakes: one line and exit 2, no traceback; a run dir of another kind is named."""
    from napari_dan.training import lr_estimator, restorer
    from napari_dan.training.train import TrainConfig, Trainer

    tr = Trainer(TrainConfig(name="t", scale=2, in_nc=1, nf=8, nb=1, ng=1, est_nf=8, est_nb=1,
                             data_kind="microscopy", pca_samples=300, lr_patch=12, threads=1),
                 tmp_path / "dan", log=lambda m: None)
    tr.save_state()
    small = ["--batch", "2", "--lr-patch", "12", "--nf", "8", "--nb", "1"]
    lr_estimator.train(tmp_path / "lr", minutes=0.005, batch=2, lr_patch=12, nf=8, nb=1,
                       real_fraction=0.0, data=[], log=lambda m: None)
    cases = [
        (lr_estimator, ["train", "--run-dir", str(tmp_path / "dan"), *small], "`napari-dan train` run"),
        (restorer, ["export", "--run-dir", str(tmp_path / "lr"), "--name", "x", "--out",
                    str(tmp_path / "x.pt")], "an LR-only Estimator run"),
        (lr_estimator, ["export", "--run-dir", str(tmp_path / "none"), "--base", "dan-x4-fluo",
                        "--name", "x", "--out", str(tmp_path / "x.pt")], "no such file"),
        (lr_estimator, ["train", "--run-dir", str(tmp_path / "z"), "--minutes", "0"], "--minutes"),
        (lr_estimator, ["train", "--run-dir", str(tmp_path / "rgb"), "--recipe", "dan-x4-rgb"],
         "1-channel"),
    ]
    for module, argv, text in cases:
        assert module.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert text in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "rgb").exists()


def test_lr_estimator_stops_on_sigterm_with_143_and_the_state_saved(tmp_path, monkeypatch):
    import os
    import signal

    from napari_dan.training import lr_estimator
    from napari_dan.training.train import Trainer

    calls = []
    batch = Trainer._batch

    def batch_and_signal(self):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return batch(self)

    monkeypatch.setattr(Trainer, "_batch", batch_and_signal)
    monkeypatch.setattr(lr_estimator, "_data", lambda run, *a: _tiny_data(run, *a))
    rc = lr_estimator.main(["train", "--run-dir", str(tmp_path / "r"), "--minutes", "5",
                            "--batch", "2", "--lr-patch", "12", "--nf", "8", "--nb", "1"])
    assert rc == 143
    assert torch.load(tmp_path / "r" / "state.pt", weights_only=False)["step"] == 3


def _tiny_data(run, recipe_name, batch, lr_patch, seed, overrides):
    from napari_dan.training.recipes import recipe
    from napari_dan.training.train import Trainer

    cfg = recipe(recipe_name, batch=batch, lr_patch=lr_patch, seed=seed, threads=0, init_from=None,
                 pca_samples=300, real_fraction=0.0, data=[], **overrides)
    return Trainer(cfg, run / "data", log=lambda m: None)
