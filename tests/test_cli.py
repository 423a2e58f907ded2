"""The napari-dan command: exit codes, messages, subcommands, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tifffile

from conftest import tiny_model
from napari_dan import cli
from napari_dan.errors import UnknownModelError


@pytest.fixture
def tiny_ckpt(tmp_path):
    path = tmp_path / "tiny.pt"
    tiny_model(in_nc=1, scale=2).save(path)
    return path


def test_super_resolve_exit_codes(tmp_path, tiny_ckpt, capsys):
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "cells.tif", np.random.default_rng(0).integers(0, 255, (2, 20, 20),
                                                                         dtype=np.uint8),
                     photometric="minisblack")
    rc = cli.main(["super-resolve", str(d), "-o", str(tmp_path / "o"), "-m", str(tiny_ckpt),
                   "--tile-size", "16"])
    out = capsys.readouterr()
    assert rc == 0 and (tmp_path / "o" / "cells_x2.tif").exists()
    assert "1 file(s) super-resolved" in out.out and "kernel FWHM" in out.out
    assert "cells.tif -> cells_x2.tif" in out.out  # the per-file line
    (d / "zz_broken.tif").write_bytes(b"not a tiff at all")
    rc = cli.main(["super-resolve", str(d), "-o", str(tmp_path / "o"), "-m", str(tiny_ckpt),
                   "-q"])
    out = capsys.readouterr()
    assert rc == 1 and "zz_broken.tif" in out.err and "1 skipped" in out.err


@pytest.mark.slow
def test_runtime_option_reaches_the_engine(tmp_path, tiny_ckpt, capsys):
    from napari_dan.engine.runtime import openvino_version
    from napari_dan.io import read_kernels

    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", np.random.default_rng(1).integers(0, 255, (24, 24),
                                                                     dtype=np.uint8))
    for runtime in ("torch", "openvino"):
        rc = cli.main(["super-resolve", str(d), "-o", str(tmp_path / runtime), "-m",
                       str(tiny_ckpt), "--runtime", runtime, "--precision", "fp32"])
        err = capsys.readouterr().err
        if runtime == "openvino" and openvino_version() is None:
            assert rc == 1 and "openvino package is not installed" in err
            continue
        assert rc == 0, err
        _, info = read_kernels(tmp_path / runtime / "a_x2_kernel.tif")
        assert info["runtime"].split()[0] == runtime


def test_iterations_reach_the_engine_and_the_kernel_file(tmp_path, tiny_ckpt, capsys):
    from napari_dan.io import read_kernels

    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", np.random.default_rng(1).integers(0, 255, (24, 24),
                                                                     dtype=np.uint8))
    for value, rounds in (("1", 1), ("settled", 2), ("auto", 2)):  # the tiny model unrolls 2
        rc = cli.main(["super-resolve", str(d), "-o", str(tmp_path / value), "-m",
                       str(tiny_ckpt), "--iterations", value, "--precision", "fp32", "-q"])
        assert rc == 0, capsys.readouterr().err
        _, info = read_kernels(tmp_path / value / "a_x2_kernel.tif")
        assert info["iterations"] == rounds
        assert info["produced_by"]["options"]["iterations"] == (int(value) if value.isdigit()
                                                                else value)


def test_usage_errors_exit_2(tmp_path, capsys):
    for argv in (["super-resolve", "x.tif"],  # no --output-dir
                 ["super-resolve", "x.tif", "-o", "d", "--tile-size", "8"],
                 ["super-resolve", "x.tif", "-o", "d", "--workers", "2", "--scheduler", "a"],
                 ["super-resolve", "x.tif", "-o", "d", "--kernel-mode", "local"],
                 ["super-resolve", "x.tif", "-o", "d", "--threads", "0"],
                 ["super-resolve", "x.tif", "-o", "d", "--runtime", "onnx"],
                 ["super-resolve", "x.tif", "-o", "d", "--series", "-1"],
                 ["super-resolve", "x.tif", "-o", "d", "--iterations", "0"],
                 ["super-resolve", "x.tif", "-o", "d", "--iterations", "some"],
                 []):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2, argv
    assert "--tile-size" in capsys.readouterr().err


def test_unknown_model_is_a_clear_error(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((8, 8), np.uint8))
    rc = cli.main(["super-resolve", str(tmp_path / "a.tif"), "-o", str(tmp_path / "o"),
                   "-m", "no-such-model"])
    err = capsys.readouterr().err
    assert rc == 1 and "no-such-model" in err and "Traceback" not in err


def test_models_lists_name_scale_channels(monkeypatch, capsys):
    import napari_dan.model as model_pkg

    fake = [{"name": "dan-x4-rgb", "scale": 4, "in_channels": 3, "architecture": "DANv2",
             "description": "photos, setting 1", "metrics": {"Set5": 31.2}, "path": "/w/a.pt"},
            {"name": "dan-x2-gray", "scale": 2, "in_channels": 1, "architecture": "DANv2",
             "description": "grey microscopy", "metrics": {}, "path": "/w/b.pt"}]
    monkeypatch.setattr(model_pkg, "list_models", lambda: fake)
    assert cli.main(["models", "-v"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["name", "scale", "channels", "arch"]
    assert "dan-x4-rgb (default)" in out[1] and "x4" in out[1] and "photos" in out[1]
    assert "dan-x2-gray" in out[2] and " 1 " in out[2]
    monkeypatch.setattr(model_pkg, "list_models", lambda: [])
    assert cli.main(["models"]) == 0
    assert "no bundled models" in capsys.readouterr().out


def test_demo_writes_tif_kernel_and_png(tmp_path, capsys):
    ck = tmp_path / "rgb4.pt"
    tiny_model(in_nc=3, scale=4).save(ck)
    rc = cli.main(["demo", "-o", str(tmp_path / "demo"), "-m", str(ck), "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "model: rgb4" in out and "PSNR" in out
    files = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert files == ["demo_astronaut_x4.tif", "demo_astronaut_x4_comparison.png",
                     "demo_astronaut_x4_kernel.tif"]
    sr = tifffile.imread(tmp_path / "demo" / "demo_astronaut_x4.tif")
    from skimage.io import imread

    png = imread(tmp_path / "demo" / "demo_astronaut_x4_comparison.png")
    assert png.shape[0] == sr.shape[0] and png.shape[1] > 4 * sr.shape[1]


def test_demo_without_bundled_model(tmp_path, monkeypatch, capsys):
    import napari_dan.model as model_pkg

    def missing(name):
        raise UnknownModelError(f"unknown model {name!r}; bundled models: (none bundled)")

    monkeypatch.setattr(model_pkg, "load_model", missing)
    assert cli.main(["demo", "-o", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "dan-x4-rgb" in err and "--model" in err
    assert not (tmp_path / "d").exists()


def test_training_subcommands_are_registered(monkeypatch, capsys):
    mod = types.ModuleType("napari_dan.training.cli")

    def register(sub):
        p = sub.add_parser("train", help="train a model")
        p.add_argument("--steps", type=int, default=1)
        p.set_defaults(func=lambda a: 7 if a.steps == 3 else 0)

    mod.register = register
    monkeypatch.setitem(sys.modules, "napari_dan.training.cli", mod)
    import napari_dan.training as tr

    monkeypatch.setattr(tr, "cli", mod, raising=False)
    assert cli.main(["train", "--steps", "3"]) == 7


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.mark.slow
def test_console_script_installed():
    r = subprocess.run(["napari-dan", "--version"], capture_output=True, text=True, env=_env())
    assert r.returncode == 0 and "napari-dan" in r.stdout


@pytest.mark.slow
def test_ctrl_c_exits_130_and_leaves_no_partial(tmp_path, tiny_ckpt):
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(d / "a.tif", rng.integers(0, 255, (2, 32, 32), dtype=np.uint8),
                     photometric="minisblack")
    tifffile.imwrite(d / "b.tif", rng.integers(0, 255, (600, 48, 48), dtype=np.uint8),
                     photometric="minisblack")
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "napari_dan.cli", "super-resolve", str(d), "-o", str(out),
           "-m", str(tiny_ckpt), "--tile-size", "16", "--device", "cpu", "-q"]
    # a shell's background job (`cmd &`) starts with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child the default disposition, as a terminal would
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(out.glob(".b_x2.tif.*.partial")) and time.time() < deadline:
        time.sleep(0.05)
    assert list(out.glob(".b_x2.tif.*.partial")), proc.communicate()
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.tif", "a_x2_kernel.tif"]
    # re-running continues: a is skipped, b is done
    r = subprocess.run(cmd, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.tif", "a_x2_kernel.tif", "b_x2.tif",
                                                     "b_x2_kernel.tif"]


def test_photometric_is_kept_or_refused(tmp_path, tiny_ckpt, capsys):
    # a MINISWHITE image keeps its interpretation (it would show inverted otherwise); a CMYK
    # image's values are not intensities, so it is refused with a reason; a palette image is
    # read as grey (ImageJ's lookup tables are stored so) (session 21 fuzz)
    d = tmp_path / "in"
    d.mkdir()
    img = np.random.default_rng(0).integers(0, 200, (20, 20), dtype=np.uint8)
    tifffile.imwrite(d / "white.tif", img, photometric="miniswhite")
    tifffile.imwrite(d / "cmyk.tif", np.stack([img] * 4, -1), photometric="separated")
    pal = np.zeros((3, 256), np.uint16)
    pal[0] = np.arange(256) * 256
    tifffile.imwrite(d / "pal.tif", img, photometric="palette", colormap=pal)
    rc = cli.main(["super-resolve", str(d), "-o", str(tmp_path / "o"), "-m", str(tiny_ckpt),
                   "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "photometric interpretation SEPARATED is not supported" in err
    assert "not a readable" not in err and "pal.tif" not in err
    with tifffile.TiffFile(tmp_path / "o" / "white_x2.tif") as t:
        assert t.pages[0].photometric == tifffile.PHOTOMETRIC.MINISWHITE
        assert t.pages[0].shape == (40, 40)
    assert tifffile.imread(tmp_path / "o" / "pal_x2.tif").shape == (40, 40)


def test_model_dependent_usage_errors_exit_2_before_any_output(tmp_path, tiny_ckpt, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((16, 16), np.uint8))
    rc = cli.main(["super-resolve", str(tmp_path / "a.tif"), "-o", str(tmp_path / "o"),
                   "-m", str(tiny_ckpt), "--iterations", "99"])
    assert rc == 2 and "iterations must be" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_failure_line_names_the_file_that_failed(tmp_path, tiny_ckpt, capsys):
    # two inputs of one name in different folders: the second one's failure must name it,
    # not read as the first one's (the message mentions the first one's path)
    for v, sub in enumerate(("in", "d2")):
        (tmp_path / sub).mkdir()
        tifffile.imwrite(tmp_path / sub / "u.tif", np.full((16, 16 + 4 * v), 7, np.uint8))
    out = str(tmp_path / "o")
    assert cli.main(["super-resolve", str(tmp_path / "in" / "u.tif"), "-o", out, "-m",
                     str(tiny_ckpt), "-q"]) == 0
    rc = cli.main(["super-resolve", str(tmp_path / "d2" / "u.tif"), "-o", out, "-m",
                   str(tiny_ckpt), "-q"])
    err = capsys.readouterr().err
    failed = [ln for ln in err.splitlines() if ln.startswith("FAILED")]
    assert rc == 1 and failed and all(str(tmp_path / "d2" / "u.tif") in ln for ln in failed)


def test_psf_optics_options(tmp_path, tiny_ckpt, capsys):
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, np.random.default_rng(0).integers(100, 900, (20, 20), dtype=np.uint16),
                     imagej=True, resolution=(1 / 0.13, 1 / 0.13), metadata={"unit": "um"})
    base = ["super-resolve", str(src), "-o", str(tmp_path / "o"), "-m", str(tiny_ckpt), "-q"]
    rc = cli.main(base[:-1] + ["--psf", "optics", "--na", "1.2", "--emission", "600",
                               "--excitation", "561", "--immersion", "1.33"])
    assert rc == 0
    assert "from optics (confocal (pinhole closed), NA 1.2" in capsys.readouterr().out
    from napari_dan.io import read_kernels

    info = read_kernels(tmp_path / "o" / "a_x2_kernel.tif")[1]
    o = info["optics"]
    assert (o["na"], o["wavelength"], o["excitation"], o["ni"]) == (1.2, 0.6, 0.561, 1.33)
    assert o["pixel_size"] == pytest.approx(0.13) and o["modality"] == "confocal"
    capsys.readouterr()
    for extra, words in ((["--na", "1.2"], "--na only applies with --psf optics"),
                         (["--psf", "optics", "--na", "1.2"],
                          "--psf optics needs --emission (the emission wavelength in nm)"),
                         (["--psf", "optics", "--emission", "600"],
                          "--psf optics needs --na (the objective's numerical aperture)"),
                         (["--psf", "optics", "--na", "1.2", "--emission", "0.6"], "in nm"),
                         (["--psf", "optics", "--na", "1.6", "--emission", "600"],
                          "below the immersion")):
        assert cli.main(base + extra) == 2, extra
        assert words in capsys.readouterr().err, extra


def test_demo_of_a_fluorescence_model_uses_the_fluorescence_sample(tmp_path, capsys):
    m = tiny_model(in_nc=1, scale=2)
    m.info.setdefault("provenance", {})["config"] = {"data_kind": "microscopy"}
    assert m.sampling == "bin"
    ck = tmp_path / "fluo2.pt"
    m.save(ck)
    rc = cli.main(["demo", "-o", str(tmp_path / "demo"), "-m", str(ck), "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "synthetic fluorescence" in out and "peak = the truth maximum" in out
    sr = tifffile.imread(tmp_path / "demo" / "demo_fluorescence_x2.tif")
    assert sr.dtype == np.uint16 and sr.shape == (512, 512)


def test_demo_of_a_grey_photo_model_uses_the_grey_photograph(tmp_path, capsys):
    import warnings

    ck = tmp_path / "grey2.pt"
    tiny_model(in_nc=1, scale=2).save(ck)  # bicubic sampling: a grey photo model
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # said as "warning:" lines, not raised
        rc = cli.main(["demo", "-o", str(tmp_path / "demo"), "-m", str(ck), "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 0 and "skimage camera (a grey photograph)" in cap.out
    assert "Warning:" not in cap.err and all(line.startswith("warning: ")
                                             for line in cap.err.splitlines() if line)
    sr = tifffile.imread(tmp_path / "demo" / "demo_camera_x2.tif")
    assert sr.dtype == np.uint8 and sr.shape == (512, 512)


def test_small_messages_say_what_is_accepted(tmp_path, tiny_ckpt, capsys):
    # --iterations names every value it takes
    with pytest.raises(SystemExit):
        cli.main(["super-resolve", "x.tif", "-o", "d", "--iterations", "foo"])
    err = capsys.readouterr().err
    assert "auto, settled or a whole number" in err and "'foo'" in err
    # demo -m with a typo: an unknown name and the bundled ones, not "reinstall"
    from napari_dan.model import list_models

    names = [m["name"] for m in list_models()]
    if names:
        assert cli.main(["demo", "-o", str(tmp_path / "d"), "-m", "dan-x2-flou"]) == 1
        err = capsys.readouterr().err
        assert "unknown model 'dan-x2-flou'" in err and "reinstall" not in err
        assert all(n in err for n in names)
        assert not (tmp_path / "d").exists()


def test_fifo_input_is_not_a_regular_file(tmp_path, tiny_ckpt, capsys):
    from napari_dan.io import open_tiff

    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    rc = cli.main(["super-resolve", str(fifo), "-o", str(tmp_path / "o"), "-m", str(tiny_ckpt),
                   "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and f"FAILED {fifo}: is not a regular file" in err
    with pytest.raises(Exception, match="is not a regular file"):
        open_tiff(fifo)

