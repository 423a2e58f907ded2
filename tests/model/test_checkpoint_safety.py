"""Crafted and damaged checkpoints are refused with CheckpointError, quickly and without
allocating what they ask for; the authors' checkpoints and ours still load."""

from __future__ import annotations

import resource
import shutil
import time

import numpy as np
import pytest
import torch

import napari_dan
from conftest import tiny_model
from napari_dan.errors import CheckpointError
from napari_dan.model import bundled


@pytest.fixture
def saved(tmp_path):
    """A tiny model saved in our format, and the raw object to tamper with."""
    p = tmp_path / "ok.pt"
    tiny_model(in_nc=1, scale=2).save(p)
    return p, torch.load(p, weights_only=True)


def _write(tmp_path, obj, name="bad.pt"):
    p = tmp_path / name
    torch.save(obj, p)
    return p


def _refused(path, match):
    t0 = time.perf_counter()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match=match) as e:
        napari_dan.load_model(path)
    assert time.perf_counter() - t0 < 10
    # ru_maxrss is in KiB: nothing near the sizes the files ask for
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 500 * 1024
    msg = str(e.value)
    assert "\x1b" not in msg and "\n" not in msg and str(path.name) in msg
    return msg


@pytest.mark.parametrize("key,value,match", [
    ("nb", 10**5, r"nb=100000 is outside 1\.\.64"),
    ("loop", 10**9, r"loop=1000000000 is outside 1\.\.16"),
    ("nf", 10**6, r"nf=1000000 is outside"),
    ("kernel_size", -1, r"kernel_size=-1 is outside"),
    ("kernel_size", 20, r"kernel_size=20 is even"),
    ("code_len", 2.5, r"'code_len' is 2\.5, expected an integer"),
    ("in_nc", 2, r"in_nc=2: only 1 \(grey\) and 3 \(RGB\)"),
])
def test_hyperparameters_out_of_bounds(tmp_path, saved, key, value, match):
    _, obj = saved
    obj["hyperparameters"][key] = value
    _refused(_write(tmp_path, obj), match)


def test_hyperparameters_that_disagree_with_the_weights(tmp_path, saved):
    _, obj = saved
    obj["hyperparameters"]["nb"] = 50  # within bounds, but the file holds 1 block
    msg = _refused(_write(tmp_path, obj), "layout fits no known DAN configuration")
    assert "missing" in msg


@pytest.mark.parametrize("field,value,match", [
    ("hyperparameters", "nf=64", r"'hyperparameters' is a str, expected a dict"),
    ("info", "hello", r"'info' is a str, expected a dict"),
    ("state_dict", [1, 2], r"'state_dict' is a list, expected a dict"),
    ("architecture", "DANv9", r"unknown architecture 'DANv9'"),
    ("kernel_mean", torch.ones(5, 5), r"'kernel_mean' is \(5, 5\), expected a 21x21 tensor"),
    ("kernel_mean", torch.full((21, 21), float("nan")), r"'kernel_mean' holds NaN"),
])
def test_malformed_fields(tmp_path, saved, field, value, match):
    _, obj = saved
    obj[field] = value
    _refused(_write(tmp_path, obj), match)


def test_integer_keys_and_non_tensors(tmp_path, saved):
    _, obj = saved
    sd = obj["state_dict"]
    obj["state_dict"] = {i: v for i, v in enumerate(sd.values())}
    _refused(_write(tmp_path, obj), "keys are not all strings")
    _refused(_write(tmp_path, {i: v for i, v in enumerate(sd.values())}, "official.pth"),
             "keys are not all strings")


@pytest.mark.parametrize("content,what", [
    (bytes(range(256)) * 8, "not a PyTorch file"),
    (b"II*\x00" + bytes(200), "a TIFF image"),
    (b"", "empty"),
    (b"\x93NUMPY" + bytes(100), "a NumPy .npy array"),
])
def test_files_that_are_not_checkpoints(tmp_path, content, what):
    p = tmp_path / "model.pt"
    p.write_bytes(content)
    msg = _refused(p, "not a PyTorch checkpoint")
    assert what in msg and "execute code" not in msg and "weights_only" not in msg


def test_a_real_tiff_as_model(tmp_path):
    import tifffile

    p = tmp_path / "image.tif"
    tifffile.imwrite(p, np.zeros((8, 8), np.uint8))
    assert "a TIFF image" in _refused(p, "not a PyTorch checkpoint")


def test_nan_and_bit_flipped_weights(tmp_path, saved):
    _, obj = saved
    name = next(k for k in obj["state_dict"] if k.endswith("weight") and "Restorer" in k)
    w = obj["state_dict"][name].clone()
    obj.pop("state_sha256")  # as a file from an older napari-dan or another tool would be
    obj["state_dict"][name] = w.clone().view(-1).index_fill_(0, torch.tensor([3]),
                                                             float("nan")).view(w.shape)
    _refused(_write(tmp_path, obj, "nan.pt"), rf"{name} holds NaN or infinite values")
    flipped = w.clone().view(-1)
    bits = flipped[:1].view(torch.int32)
    bits ^= 1 << 30  # the exponent's top bit: 0.05 becomes about 1.7e37
    obj["state_dict"][name] = flipped.view(w.shape)
    _refused(_write(tmp_path, obj, "flip.pt"), rf"{name} holds a value of .*damaged")


def test_our_checksum_catches_a_small_change(tmp_path, saved):
    _, obj = saved
    name = next(k for k in obj["state_dict"] if k.endswith("weight") and "Restorer" in k)
    obj["state_dict"][name] = obj["state_dict"][name] * 1.01  # plausible values, wrong weights
    _refused(_write(tmp_path, obj), "do not match the checksum stored with them")


def test_official_layout_with_nan(tmp_path, shared_dir):
    sd = torch.load(shared_dir / "reference" / "official-dan" / "golden" / "v2_small_x2_gray.pth",
                    weights_only=True)
    k = next(k for k in sd if k.endswith("weight"))
    sd[k] = torch.full_like(sd[k], float("inf"))
    _refused(_write(tmp_path, sd, "official.pth"), "holds NaN or infinite values")


def test_bundled_checksums_match_and_catch_damage(tmp_path, monkeypatch):
    for m in napari_dan.list_models():
        bundled.verify_bundled(m["name"])  # the shipped files match SHA256SUMS
    # a damaged copy of the bundled folder is refused by name
    d = tmp_path / "weights"
    shutil.copytree(bundled.WEIGHTS_DIR, d)
    name = napari_dan.list_models()[0]["name"]
    raw = bytearray((d / f"{name}.pt").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (d / f"{name}.pt").write_bytes(bytes(raw))
    monkeypatch.setattr(bundled, "WEIGHTS_DIR", d)
    monkeypatch.setattr(bundled, "CHECKSUMS", d / "SHA256SUMS")
    with pytest.raises(CheckpointError, match=rf"bundled model '{name}' .* is damaged"):
        napari_dan.load_model(name)


def test_released_and_saved_checkpoints_still_load(tmp_path, saved, shared_dir):
    p, _ = saved
    m = napari_dan.load_model(p)
    assert m.fingerprint == tiny_model(in_nc=1, scale=2).fingerprint
    for f in sorted((shared_dir / "reference" / "official-dan" / "golden").glob("*.pth")):
        assert napari_dan.load_model(f).iterations == 4


@pytest.mark.slow
def test_cli_with_a_crafted_checkpoint_is_one_line(tmp_path, saved):
    import os
    import subprocess
    import sys

    import tifffile

    _, obj = saved
    obj["hyperparameters"]["loop"] = 10**9
    bad = _write(tmp_path, obj, "crafted.pt")
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((16, 16), np.uint8))
    r = subprocess.run([sys.executable, "-m", "napari_dan.cli", "super-resolve",
                        str(tmp_path / "a.tif"), "-o", str(tmp_path / "out"), "-m", str(bad)],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("napari-dan: error:") and "loop=1000000000 is outside" in lines[0]
    assert not (tmp_path / "out").exists()
