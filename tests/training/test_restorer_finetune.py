"""Fine-tuning a model's Restorer with its Estimator frozen (training.restorer): the codes it
trains on, train / resume / export, and what it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_dan
from conftest import tiny_model
from napari_dan.model import create_model, load_model

SMALL = dict(batch=2, lr_patch=12, real_fraction=0.0, data=[], seed=3, val_batches=2)


def _lr_only(scale: int = 4, seed: int = 1):
    return create_model("DANv2", name="tiny-lr", pca_samples=2000, seed=seed, in_nc=1, nf=8,
                        nb=1, ng=1, scale=scale, code_len=10, kernel_size=21, loop=3,
                        est_nf=8, est_nb=1, est_input=1)


def test_codes_are_the_estimators_or_the_true_kernels():
    from napari_dan.model.danv2 import reads_sr
    from napari_dan.model.kernels import gaussian_kernel
    from napari_dan.training.restorer import _codes

    rng = np.random.default_rng(0)
    lr = torch.from_numpy(rng.random((3, 1, 16, 16)).astype(np.float32))
    ks = torch.from_numpy(np.stack([gaussian_kernel(21, s) for s in (1.0, 2.0, 3.0)])
                          .astype(np.float32))
    for m in (_lr_only(), tiny_model(scale=4, loop=2)):
        net = m.network.eval()
        mask = torch.tensor([True, False, True])
        c = _codes(net, lr, ks, mask)
        true = net.encode(ks.reshape(3, -1))
        torch.testing.assert_close(c[0], true[0])
        torch.testing.assert_close(c[2], true[2])
        with torch.no_grad():
            if not reads_sr(net):
                k = net.estimate(None, lr)
            else:  # DAN's own Estimator: the loop's last round, as the engine restores with
                k = net.forward_all(lr)[1][-1]
            est = net.encode(k.reshape(3, -1))
        torch.testing.assert_close(c[1], est[1])
        assert not torch.allclose(c[1], true[1])


def test_restorer_finetune_trains_resumes_and_exports(tmp_path):
    from napari_dan.training.restorer import export, train

    base = _lr_only()
    base_path = base.save(tmp_path / "base.pt")
    lines = []
    state = train(tmp_path / "run", base=str(base_path), minutes=0.02, val_every=1,
                  log=lines.append, **SMALL)
    first = torch.load(state, weights_only=False)
    assert first["step"] >= 1 and lines[0].startswith("fine-tuning the Restorer of")
    assert lines[-1].startswith(f"done: {first['step']} steps")
    # a longer budget resumes with its weights and data stream
    train(tmp_path / "run", base=str(base_path), minutes=0.04, log=lines.append, **SMALL)
    second = torch.load(state, weights_only=False)
    assert any(s.startswith(f"resumed at step {first['step']}") for s in lines)
    assert second["step"] > first["step"]
    assert not any("differ" in s for s in lines)
    # another learning rate is named and used
    lines.clear()
    train(tmp_path / "run", base=str(base_path), minutes=0.05, log=lines.append,
          **{**SMALL, "lr": 1e-5})
    assert any("differ" in s and "lr 5e-05 -> 1e-05" in s for s in lines), lines
    second = torch.load(state, weights_only=False)
    # the export: every tensor of the base but the Restorer's, which are the run's
    out = export(tmp_path / "run", tmp_path / "ft.pt", "tiny-ft")
    m = load_model(out)
    sd, bsd = m.network.state_dict(), base.network.state_dict()
    changed = [k for k in bsd if not torch.equal(bsd[k], sd[k])]
    assert changed and all(k.startswith("Restorer.") for k in changed)
    for k, v in second["restorer"].items():
        assert torch.equal(v, sd["Restorer." + k]), k
    prov = m.info["provenance"]["restorer"]
    assert prov["steps"] == second["step"] and prov["base"] == str(base_path)
    assert prov["base_fingerprint"] == base.fingerprint
    # the command line's export, with a label for the base
    from napari_dan.training.restorer import main

    assert main(["export", "--run-dir", str(tmp_path / "run"), "--name", "tiny-ft", "--out",
                 str(tmp_path / "ft-l.pt"), "--base-label", "B"]) == 0
    labelled = load_model(tmp_path / "ft-l.pt")
    assert labelled.info["provenance"]["restorer"]["base"] == "B"
    r = napari_dan.super_resolve(np.full((20, 18), 300, np.uint16), m, precision="fp32",
                                 device="cpu")
    assert r.image.shape == (80, 72) and np.isfinite(r.image).all()
    # refused: an existing output; a base whose weights changed since; another base on resume
    with pytest.raises(FileExistsError, match="exists"):
        export(tmp_path / "run", tmp_path / "ft.pt", "tiny-ft")
    _lr_only(seed=9).save(tmp_path / "base.pt")
    with pytest.raises(ValueError, match="is not the model"):
        export(tmp_path / "run", tmp_path / "ft2.pt", "tiny-ft2")
    assert not (tmp_path / "ft2.pt").exists()
    with pytest.raises(ValueError, match="is not the model .* started from"):
        train(tmp_path / "run", base=str(base_path), minutes=0.05, log=lines.append, **SMALL)
    with pytest.raises(ValueError, match="fine-tunes"):
        train(tmp_path / "run", base=str(out), minutes=0.05, log=lines.append, **SMALL)
    # the base's weights under another path (a copy kept when the original was replaced)
    # resume, and the export then reads that path
    base.save(tmp_path / "base-copy.pt")
    train(tmp_path / "run", base=str(tmp_path / "base-copy.pt"), minutes=0.08, log=lines.append,
          **SMALL)
    third = torch.load(state, weights_only=False)
    assert third["step"] > second["step"] and third["args"]["base"] == str(tmp_path / "base-copy.pt")
    again = load_model(export(tmp_path / "run", tmp_path / "ft3.pt", "tiny-ft3"))
    assert again.info["provenance"]["restorer"]["base_fingerprint"] == base.fingerprint


def test_restorer_finetune_refuses_a_base_of_another_scale(tmp_path):
    from napari_dan.training.restorer import train

    x2 = _lr_only(scale=2).save(tmp_path / "x2.pt")
    with pytest.raises(ValueError, match="x2 with 1 channel.*recipe trains x4"):
        train(tmp_path / "run", base=str(x2), recipe="dan-x4-fluo", minutes=0.01, **SMALL)
    with pytest.raises(ValueError, match="true_code_fraction"):
        train(tmp_path / "run", base=str(x2), recipe="dan-x2-fluo", minutes=0.01,
              true_code_fraction=1.5, **SMALL)


def test_restorer_finetune_on_the_squared_error(tmp_path):
    from napari_dan.training.restorer import _sr_loss, _val_loss, export, main, train

    sr = torch.tensor([[[[0.0, 1.0], [3.0, 0.5]]]])
    hr = torch.zeros_like(sr)
    assert float(_sr_loss(sr, hr, "l1")) == pytest.approx(4.5 / 4)
    assert float(_sr_loss(sr, hr, "l2")) == pytest.approx(10.25 / 4)
    base = _lr_only()
    base_path = base.save(tmp_path / "base.pt")
    lines = []
    state = train(tmp_path / "run", base=str(base_path), minutes=0.02, val_every=1, loss="l2",
                  log=lines.append, **SMALL)
    obj = torch.load(state, weights_only=False)
    assert obj["args"]["loss"] == "l2" and "on the l2 loss" in lines[0]
    assert lines[-1].startswith(f"done: {obj['step']} steps") and "held-out l2" in lines[-1]
    # the base's held-out value is its squared error on the held-out batches, not its L1
    from napari_dan.training.restorer import _held_out

    val = _held_out("dan-x4-fluo", SMALL["batch"], SMALL["lr_patch"], SMALL["seed"],
                    {"real_fraction": 0.0, "data": []}, SMALL["val_batches"], 0.25)
    net = base.network.eval()
    assert obj["base_val"] == pytest.approx(_val_loss(net, val, "l2"), rel=1e-5)
    assert obj["base_val"] != pytest.approx(_val_loss(net, val, "l1"), rel=1e-3)
    # resuming with the other loss is refused; a bad loss too
    with pytest.raises(ValueError, match="trains on the l2 loss, not l1"):
        train(tmp_path / "run", base=str(base_path), minutes=0.05, log=lines.append, **SMALL)
    with pytest.raises(ValueError, match="loss must be one of"):
        train(tmp_path / "other", base=str(base_path), minutes=0.01, loss="huber", **SMALL)
    # the export says which loss and its held-out values
    export(tmp_path / "run", tmp_path / "ft.pt", "tiny-ft")
    prov = load_model(tmp_path / "ft.pt").info["provenance"]["restorer"]
    assert prov["loss"] == "l2" and prov["held_out_l2"]["base"] == obj["base_val"]
    assert "earlier" not in prov
    # fine-tuning that result again keeps the first fine-tuning's record
    train(tmp_path / "again", base=str(tmp_path / "ft.pt"), minutes=0.01, log=lines.append,
          **SMALL)
    export(tmp_path / "again", tmp_path / "ft2.pt", "tiny-ft2")
    prov2 = load_model(tmp_path / "ft2.pt").info["provenance"]["restorer"]
    assert prov2["loss"] == "l1" and prov2["earlier"] == prov
    with pytest.raises(SystemExit):
        main(["train", "--run-dir", str(tmp_path / "x"), "--loss", "huber"])


def test_restorer_finetune_bright_background_is_a_run_setting(tmp_path):
    """``--bright-background``: stored with the run, and a resume with another value names it;
    ``--data-workers`` reaches the pipeline."""
    from napari_dan.training.restorer import train

    base_path = _lr_only().save(tmp_path / "base.pt")
    lines = []
    state = train(tmp_path / "run", base=str(base_path), minutes=0.02, log=lines.append,
                  bright_background=(1.0, 0.5), data_workers=2, **SMALL)
    args = torch.load(state, weights_only=False)["args"]
    assert tuple(args["bright_background"]) == (1.0, 0.5) and args["data_workers"] == 2
    train(tmp_path / "run", base=str(base_path), minutes=0.03, log=lines.append,
          bright_background=(0.5, 0.5), data_workers=2, **SMALL)
    assert any("differ" in s and "bright_background" in s for s in lines), lines
    from napari_dan.training.restorer import export

    m = load_model(export(tmp_path / "run", tmp_path / "ft.pt", "tiny-ft"))
    rec = m.info["provenance"]["restorer"]["recipe_overrides"]
    assert tuple(rec["bright_background"]) == (0.5, 0.5)
    with pytest.raises(ValueError, match="bright_background"):
        train(tmp_path / "bad", base=str(base_path), minutes=0.02, log=lines.append,
              bright_background=(0.5, 3.0), **SMALL)
