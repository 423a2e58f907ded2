"""Odd numbers and odd calls: 64-bit integers and extreme floats come back without wrapping or
Inf, and every mistake is one of the project's errors with one clear line (API) or one line and
the documented exit code (CLI, through the real command)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from conftest import tiny_model
from napari_dan import cli, super_resolve
from napari_dan.batch import load_psf
from napari_dan.engine.normalize import cast
from napari_dan.errors import InputError


def _env():
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "napari_dan.cli", *map(str, args)], env=_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def ckpt(tmp_path):
    p = tmp_path / "tiny.pt"
    tiny_model(in_nc=1, scale=2).save(p)
    return p


# ---- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint64, np.int64, np.uint32, np.int32])
def test_cast_clips_wide_integers_exactly(dtype):
    info = np.iinfo(dtype)
    x = np.array([2.0**70, float(info.max), float(info.max) * 0.5, -(2.0**70), float(info.min)])
    out = cast(x, dtype)
    assert out[0] == info.max and out[1] == info.max and out[3] == info.min
    assert out[4] == info.min and 0.49 * info.max < out[2] <= info.max


def test_cast_floats_never_inf():
    x = np.array([1e39, -1e39, 1.0], np.float64)
    out = cast(x, np.float32)
    assert np.all(np.isfinite(out)) and out[0] == np.finfo(np.float32).max
    assert np.all(np.isfinite(cast(np.array([np.inf, -np.inf]), np.float64)))


@pytest.mark.parametrize("wide,narrow", [(np.uint64, np.uint16), (np.int64, np.int16)])
def test_64bit_images_at_their_limits_do_not_wrap(wide, narrow, tiny_gray):
    """The value map is affine: an image of a 64-bit type's limits gives, relative to its range,
    what the same pattern gives in a 16-bit type (no wrap to 0 or to the minimum)."""
    w, n = np.iinfo(wide), np.iinfo(narrow)
    pattern = np.random.default_rng(0).random((32, 32)) > 0.5
    img_w = np.where(pattern, w.max, w.min).astype(wide)
    img_n = np.where(pattern, n.max, n.min).astype(narrow)
    out_w = super_resolve(img_w, tiny_gray).image
    out_n = super_resolve(img_n, tiny_gray).image
    rel_w = (out_w.astype(np.float64) - w.min) / (float(w.max) - w.min)
    rel_n = (out_n.astype(np.float64) - n.min) / (float(n.max) - n.min)
    assert out_w.dtype == wide
    assert np.abs(rel_w - rel_n).max() < 2e-4
    flat = super_resolve(np.full((32, 32), w.max, wide), tiny_gray).image
    assert flat.min() > w.max // 2  # a flat image at the maximum stays near it


@pytest.mark.parametrize("case", ["uniform", "spike", "negative"])
def test_float32_near_its_limit(case, tiny_gray):
    rng = np.random.default_rng(0)
    if case == "uniform":
        img = rng.uniform(-3e38, 3e38, (32, 32)).astype(np.float32)
    elif case == "spike":
        img = np.zeros((32, 32), np.float32)
        img[5, 5] = 3e38
    else:
        img = -rng.uniform(1e37, 3e38, (32, 32)).astype(np.float32)
    res = super_resolve(img, tiny_gray)
    assert res.image.dtype == np.float32 and np.all(np.isfinite(res.image))
    assert np.all(np.isfinite(res.kernel)) and res.kernel.sum() > 0.99


def test_float64_beyond_float32_range(tiny_gray):
    img = np.random.default_rng(0).uniform(1e300, 1e301, (24, 24))
    out = super_resolve(img, tiny_gray).image
    assert np.all(np.isfinite(out)) and 5e299 < np.median(out) < 2e301
    with pytest.raises(InputError, match="span more than float64 can hold"):
        super_resolve(np.where(np.arange(576).reshape(24, 24) % 2, 1.7e308, -1.7e308),
                      tiny_gray)


# ---- API mistakes ----------------------------------------------------------------------------


def test_api_mistakes_raise_our_errors(tiny_gray):
    img = np.zeros((32, 32), np.uint8)
    with pytest.raises(InputError, match=r"NaN or Inf values; replace"):
        super_resolve(np.full((32, 32), np.nan, np.float32), tiny_gray)
    ro = np.zeros((64, 64), np.uint8)
    ro.flags.writeable = False
    with pytest.raises(InputError, match="out is read-only"):
        super_resolve(img, tiny_gray, out=ro)
    with pytest.raises(InputError, match="got NoneType"):
        super_resolve(img, None)
    with pytest.raises(InputError, match="cannot use a list as an image"):
        super_resolve([[1, 2, 3], [4, 5]], tiny_gray)
    # a nested list is an array-like: it works
    assert super_resolve(np.arange(64.0).reshape(8, 8).tolist(), tiny_gray).image.shape == (16, 16)


def test_flat_and_missing_psfs_say_so(tmp_path):
    np.save(tmp_path / "box.npy", np.ones((21, 21)))
    with pytest.raises(InputError, match="the PSF is flat"):
        load_psf(tmp_path / "box.npy")
    with pytest.raises(InputError, match="is a directory"):
        load_psf(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        load_psf(tmp_path / "nothere.tif")
    # a single value (tifffile reads a 1 x 1 image as shape ()): the stored shape is named
    tifffile.imwrite(tmp_path / "dot.tif", np.ones((1, 1), np.float32))
    with pytest.raises(InputError, match=r"at least 2 pixels along Y and X, got shape \(1, 1\)|"
                                         r"at least 2 pixels along Y and X, got shape \(\)"):
        load_psf(tmp_path / "dot.tif")
    np.save(tmp_path / "row.npy", np.ones((1, 9)))
    with pytest.raises(InputError, match=r"got shape \(1, 9\)"):
        load_psf(tmp_path / "row.npy")


# ---- the command line: one line, the documented exit code -----------------------------------


@pytest.mark.slow
def test_cli_usage_mistakes_exit_2_once(tmp_path, ckpt):
    d = tmp_path / "in"
    d.mkdir()
    for n in ("a", "b", "c"):
        tifffile.imwrite(d / f"{n}.tif", np.zeros((16, 16), np.uint8))
    (tmp_path / "file.txt").write_text("x")
    np.save(tmp_path / "flat.npy", np.ones((9, 9)))
    cases = [
        (["--device", "bogus"], "unknown device 'bogus'"),
        (["-o", tmp_path / "file.txt"], "exists and is not a directory"),
        (["--psf", tmp_path], "is a directory"),
        (["--psf", tmp_path / "flat.npy"], "the PSF is flat"),
        (["-o", tmp_path / "file.txt" / "sub"], "cannot be written"),
    ]
    for extra, text in cases:
        args = ["super-resolve", d, "-o", tmp_path / "out", "-m", ckpt, *extra]
        if "-o" in extra:
            args = ["super-resolve", d, "-m", ckpt, *extra]
        r = _run(*args)
        assert r.returncode == 2, (extra, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and text in lines[0] and lines[0].startswith("napari-dan: error:")
    assert not (tmp_path / "out").exists()  # nothing was created for a refused command


def test_cli_unexpected_errors_are_one_line_unless_debug(monkeypatch, tmp_path, capsys):
    import napari_dan.batch as batch

    def boom(*a, **k):
        raise RuntimeError("something broke")

    monkeypatch.setattr(batch, "run_batch", boom)
    rc = cli.main(["super-resolve", str(tmp_path), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "unexpected RuntimeError: something broke" in err and "--debug" in err
    assert "Traceback" not in err
    with pytest.raises(RuntimeError):
        cli.main(["super-resolve", str(tmp_path), "-o", str(tmp_path / "o"), "--debug"])


@pytest.mark.slow
def test_cli_keeps_tifffile_logs_off_stderr(tmp_path, ckpt):
    # a TIFF whose first page's data is gone: tifffile logs about it, then we report it once
    p = tmp_path / "odd.tif"
    tifffile.imwrite(p, np.zeros((2, 16, 16), np.uint8), photometric="minisblack")
    raw = bytearray(p.read_bytes())
    raw[8:] = raw[8:].replace(b"\x11\x01", b"\x00\x00", 1)  # drop StripOffsets (tag 273)
    p.write_bytes(bytes(raw))
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("tifffile").addHandler(handler)
    try:
        try:
            from napari_dan.io import read_tiff

            read_tiff(p)
        except InputError:
            pass
    finally:
        logging.getLogger("tifffile").removeHandler(handler)
    assert records, "the test file no longer makes tifffile log; pick another damage"
    r = _run("super-resolve", p, "-o", tmp_path / "o", "-m", ckpt, "-q")
    assert r.returncode == 1
    assert "<tifffile." not in r.stderr and "odd.tif" in r.stderr, r.stderr
    r = _run("--debug", "super-resolve", p, "-o", tmp_path / "o2", "-m", ckpt, "-q")
    assert "<tifffile." in r.stderr  # --debug shows them


# ---- odd arrays and options (a fuzz of the public API, session 21) ---------------------------


def test_odd_array_types_work_or_say_what_to_do(tiny_gray):
    import dask.array as da
    import torch

    # values around 1e-13 are an image, not a flat field: the result stays on their scale
    tiny = (np.random.default_rng(0).random((32, 32)) * 1e-12).astype(np.float32)
    r = super_resolve(tiny, tiny_gray)
    assert np.abs(r.image).max() < 1e-11 and r.metadata["normalisation"]["high"][0] < 1e-11
    # a CPU torch tensor is converted like a list
    assert super_resolve(torch.rand(16, 16), tiny_gray).image.shape == (32, 32)
    unknown = da.random.random((32, 32), chunks=16)
    unknown = unknown[unknown[:, 0] >= 0]
    with pytest.raises(InputError, match="compute_chunk_sizes"):
        super_resolve(unknown, tiny_gray)
    masked = np.ma.masked_array(np.random.default_rng(1).random((16, 16)), mask=False)
    assert super_resolve(masked, tiny_gray).image.shape == (32, 32)  # nothing masked: its data
    masked[0, 0] = np.ma.masked
    with pytest.raises(InputError, match="masked array with masked values"):
        super_resolve(masked, tiny_gray)


def test_odd_options_raise_our_errors(tiny_gray):
    from napari_dan.model.kernels import gaussian_kernel

    img = np.random.default_rng(2).random((16, 16)).astype(np.float32)
    with pytest.raises(InputError, match="progress must be a callable"):
        super_resolve(img, tiny_gray, progress=5)
    with pytest.raises(InputError, match="real numbers"):
        super_resolve(img, tiny_gray, kernel=gaussian_kernel(13, 1.5) * 1j)
    with pytest.raises(InputError, match="residual must be True or False"):
        super_resolve(img, tiny_gray, residual="yes")
    nan = img.copy()
    nan[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):  # not "got an array of shape ()"
        super_resolve(nan, tiny_gray, kernel="spots")


def test_flat_image_is_not_called_noisy_nor_inconsistent():
    from napari_dan import load_model

    r = super_resolve(np.full((32, 32), 100, np.uint16), load_model("dan-x2-fluo"))
    # relative to 0.1% of the range, not to a norm of 0 (was 8e9)
    assert r.metadata["consistency"]["relative_residual"] < 10
    warning = r.metadata["kernel_fwhm"]["warning"] or ""
    assert "flat" in warning and "noisy" not in warning
    assert r.metadata["kernel_fwhm"]["all_flat"] is True  # the UIs then give no width
    busy = np.random.default_rng(0).integers(0, 4000, (32, 32)).astype(np.uint16)
    assert super_resolve(busy, load_model("dan-x2-fluo")).metadata["kernel_fwhm"]["all_flat"] is False


def test_colour_and_complex_psfs_are_refused(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((24, 24, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError, match="colour"):
        load_psf(tmp_path / "rgb.tif")
    np.save(tmp_path / "c.npy", np.ones((5, 5)) * (1 + 1j))
    with pytest.raises(InputError, match="real numbers"):
        load_psf(tmp_path / "c.npy")


def test_few_grey_levels_are_warned_about(tiny_gray):
    """An integer image spanning a handful of levels is rounded back to them (the result keeps
    the dtype): the user is told, with what to do; wide ranges, floats and 8-bit photos are not."""
    import warnings

    rng = np.random.default_rng(0)
    few = (100 + rng.integers(0, 7, (24, 24))).astype(np.uint16)
    with pytest.warns(UserWarning, match=r"only about 7 grey levels .*convert the image to float32"):
        r = super_resolve(few, tiny_gray, precision="fp32")
    assert r.image.dtype == np.uint16
    with pytest.warns(UserWarning, match=r"the image is flat \(uint16, nearly all of it 7\)"):
        super_resolve(np.full((24, 24), 7, np.uint16), tiny_gray, precision="fp32")
    with pytest.warns(UserWarning, match=r"the image is flat \(float32, nearly all of it 0\)"):
        super_resolve(np.zeros((24, 24), np.float32), tiny_gray, precision="fp32")
    # said once: a model with a PSF range (which also reports flat fields) adds no second note
    from napari_dan import load_model

    micro = load_model("dan-x2-fluo")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        r = super_resolve(np.full((32, 32), 7, np.uint16), micro, precision="fp32")
    assert len([w for w in got if "flat" in str(w.message)]) == 1, [str(w.message) for w in got]
    assert "flat" in r.metadata["kernel_fwhm"]["warning"]  # (the widget's Note line keeps it)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        super_resolve(few.astype(np.float32), tiny_gray, precision="fp32")
        super_resolve((few - 100) * 150, tiny_gray, precision="fp32")  # 900 levels
        super_resolve(rng.integers(0, 6, (24, 24)).astype(np.uint8), tiny_gray,
                      precision="fp32")  # 8-bit for a photo model: /255, not stretched
