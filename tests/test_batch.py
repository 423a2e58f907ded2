"""Batch processing of TIFF files (napari_dan.batch): outputs, metadata, safety, streaming."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile

import napari_dan
from conftest import tiny_model
from napari_dan.batch import expand_inputs, load_psf, output_paths, run_batch
from napari_dan.errors import InputError
from napari_dan.io import partial_glob, read_kernels, read_tiff
from napari_dan.model.kernels import gaussian_kernel


@pytest.fixture
def tiny_ckpt(tmp_path):
    path = tmp_path / "tiny.pt"
    tiny_model(in_nc=1, scale=2).save(path)
    return path


def _hyperstack(path, rng, shape=(2, 3, 2, 24, 28)):
    data = rng.integers(0, 4000, shape, dtype=np.uint16)
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"axes": "TZCYX", "spacing": 0.5, "unit": "um", "finterval": 2.0})
    return data


def test_expand_inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for n in ["a.tif", "b.TIFF", "a_x2.tif", "a_x2_kernel.tif", ".a.tif.partial", "notes.txt",
              ".hidden.tif", "c_x4.tif"]:
        (d / n).write_bytes(b"")
    files, problems = expand_inputs([d, str(d / "b*"), tmp_path / "missing.tif",
                                     str(tmp_path / "nomatch*.tif")])
    names = [f.name for f in files]
    # our own outputs of a.tif are left out; c_x4.tif has no c.tif beside it, so it is an input
    assert names == ["a.tif", "b.TIFF", "c_x4.tif"]
    assert {p.input.name for p in problems} == {"missing.tif", "nomatch*.tif"}
    # an output named explicitly is processed: the user asked for it
    files, _ = expand_inputs([d / "a.tif", d / "a_x2.tif"])
    assert [f.name for f in files] == ["a.tif", "a_x2.tif"]


def test_output_paths(tmp_path):
    assert output_paths("x/cells.ome.tif", tmp_path, 4, ome=True) == (
        tmp_path / "cells_x4.ome.tif", tmp_path / "cells_x4_kernel.tif")
    assert output_paths("cells.tiff", tmp_path, 2)[0] == tmp_path / "cells_x2.tif"


def test_hyperstack_matches_engine_and_keeps_metadata(tmp_path, rng, tiny_ckpt):
    src = tmp_path / "hyper.tif"
    data = _hyperstack(src, rng)
    out = tmp_path / "out"
    summary = run_batch([src], out, tiny_ckpt, tile_size=16, quiet=True)
    assert not summary.failed and summary.count("done") == 1 and summary.planes == 6
    img, meta = read_tiff(out / "hyper_x2.tif")
    # the streamed file equals the engine run on the whole array in memory (C as channel axis)
    ref = napari_dan.super_resolve(data, tiny_model(in_nc=1, scale=2), channel_axis=2,
                                   tile_size=16)
    np.testing.assert_array_equal(img, ref.image)
    assert img.dtype == np.uint16 and meta.axes == "TZCYX" and meta.kind == "imagej"
    assert meta.pixel_size["X"] == pytest.approx(0.1) and meta.pixel_size["Z"] == 0.5
    assert meta.pixel_size["T"] == 2.0 and meta.unit == "µm"

    k, info = read_kernels(out / "hyper_x2_kernel.tif")
    assert k.dtype == np.float32 and k.shape == ref.kernel.shape
    np.testing.assert_allclose(k, ref.kernel, rtol=1e-5, atol=1e-7)
    assert info["kernel_mode"] == "global" and info["scale"] == 2 and info["unit"] == "µm"
    assert info["kernel_stats"]["fwhm"] == pytest.approx(ref.kernel_stats.fwhm, rel=1e-4)
    assert info["pixel_size"] == pytest.approx(0.1)
    assert info["kernel_stats"]["fwhm_physical"] == pytest.approx(0.1 * ref.kernel_stats.fwhm,
                                                                  rel=1e-4)
    assert summary.results[0].fwhm == pytest.approx(ref.kernel_stats.fwhm, rel=1e-4)
    assert not list(out.glob(".*partial"))


@pytest.mark.parametrize("mode,n_kernels", [("per-plane", 6), ("per-tile", 6 * 4)])
def test_kernel_modes_write_every_kernel(tmp_path, rng, tiny_ckpt, mode, n_kernels):
    src = tmp_path / "h.tif"
    _hyperstack(src, rng, shape=(2, 3, 1, 24, 24))
    run_batch([src], tmp_path / "o", tiny_ckpt, kernel_mode=mode, tile_size=16, quiet=True)
    k, info = read_kernels(tmp_path / "o" / "h_x2_kernel.tif")
    assert k.shape == (n_kernels, 21, 21) and len(info["kernels"]) == n_kernels
    assert info["kernel_mode"] == mode
    assert all("fwhm" in d and "center" in d for d in info["kernels"])
    # the summary gives the kernels' spread, not only their mean kernel's width
    fw = [d["fwhm"] for d in info["kernels"]]
    assert info["kernel_fwhm"]["count"] == n_kernels
    assert info["kernel_fwhm"]["min"] == pytest.approx(min(fw), rel=1e-6)
    summary = run_batch([src], tmp_path / "o2", tiny_ckpt, kernel_mode=mode, tile_size=16,
                        quiet=True)
    what = "planes" if mode == "per-plane" else "tiles"
    assert f"px over {n_kernels} {what} (median" in summary.text()
    assert f"{min(fw):.2f}-{max(fw):.2f} px" in summary.text()
    # and how noisy the noisiest field was (the engine's ratio, in the file's line)
    r = summary.results[0]
    assert r.snr == pytest.approx(info["kernel_fwhm"]["snr_min"])
    assert [d["snr"] for d in info["kernels"]] == info["kernel_fwhm"]["snr"]  # one per kernel
    assert min(d["snr"] for d in info["kernels"]) == pytest.approx(r.snr)
    assert f"; signal-to-noise {r.snr:.0f} (lowest)" in r.message


def test_skip_overwrite_and_never_touch_inputs(tmp_path, rng, tiny_ckpt):
    d = tmp_path / "data"
    d.mkdir()
    a = rng.integers(0, 255, (2, 20, 20), dtype=np.uint8)
    tifffile.imwrite(d / "a.tif", a, photometric="minisblack")
    tifffile.imwrite(d / "b.tif", a[:1], photometric="minisblack")
    s1 = run_batch([d], d, tiny_ckpt, quiet=True)  # output dir == input dir
    assert s1.count("done") == 2
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    s2 = run_batch([d], d, tiny_ckpt, quiet=True)  # outputs are not taken as new inputs
    assert s2.count("skipped") == 2 and s2.count("done") == 0
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before
    s3 = run_batch([d / "b.tif"], d, tiny_ckpt, overwrite=True, quiet=True)
    assert s3.count("done") == 1 and (d / "b_x2.tif").stat().st_mtime_ns > before["b_x2.tif"]
    # an input that is another input's output is refused, even with --overwrite
    orig = (d / "a_x2.tif").read_bytes()
    s4 = run_batch([d / "a.tif", d / "a_x2.tif"], d, tiny_ckpt, overwrite=True, quiet=True)
    failed = s4.failed
    assert len(failed) == 1 and failed[0].input.name == "a.tif"
    assert "would replace the input" in failed[0].message
    assert (d / "a_x2.tif").read_bytes() == orig
    assert s4.count("done") == 1 and (d / "a_x2_x2.tif").exists()


def test_same_stem_twice_is_refused(tmp_path, rng, tiny_ckpt):
    for sub in ("p", "q"):
        (tmp_path / sub).mkdir()
        tifffile.imwrite(tmp_path / sub / "img.tif",
                         rng.integers(0, 255, (20, 20), dtype=np.uint8))
    s = run_batch([tmp_path / "p", tmp_path / "q"], tmp_path / "o", tiny_ckpt, quiet=True)
    assert s.count("done") == 1 and len(s.failed) == 1
    assert "same output name" in s.failed[0].message


def test_corrupt_file_reported_others_processed(tmp_path, rng, tiny_ckpt):
    d = tmp_path / "in"
    d.mkdir()
    (d / "broken.tif").write_bytes(b"II*\x00" + os.urandom(64))
    tifffile.imwrite(d / "good.tif", rng.integers(0, 255, (20, 20), dtype=np.uint8))
    s = run_batch([d], tmp_path / "o", tiny_ckpt, quiet=True)
    assert s.count("done") == 1 and [r.input.name for r in s.failed] == ["broken.tif"]
    assert "broken.tif" in s.text() and "FAILED" in s.text()
    assert (tmp_path / "o" / "good_x2.tif").exists()
    assert not (tmp_path / "o" / "broken_x2.tif").exists()
    # when every input fails, the folders the run made are not left behind empty; one that
    # existed stays, and so does anything in it
    s = run_batch([d / "broken.tif", tmp_path / "missing.tif"], tmp_path / "new" / "deeper",
                  tiny_ckpt, quiet=True)
    assert len(s.failed) == 2 and not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    run_batch([d / "broken.tif"], tmp_path / "empty", tiny_ckpt, quiet=True)
    assert (tmp_path / "empty").is_dir()
    run_batch([d / "broken.tif"], tmp_path / "o", tiny_ckpt, quiet=True)
    assert (tmp_path / "o" / "good_x2.tif").exists()


def test_interrupt_leaves_no_partial_and_rerun_continues(tmp_path, rng, tiny_ckpt, monkeypatch):
    d = tmp_path / "in"
    d.mkdir()
    for n in ("a", "b"):
        tifffile.imwrite(d / f"{n}.tif", rng.integers(0, 255, (4, 32, 32), dtype=np.uint8),
                         photometric="minisblack")
    out = tmp_path / "o"
    import napari_dan.io.writing as tiffmod

    calls = {"n": 0}
    real = tiffmod.StackWriter._write_page

    def flaky(self, page, data):  # Ctrl-C while the second file is half written
        calls["n"] += 1
        if calls["n"] == 6:
            assert len(partial_glob(out / "b_x2.tif")) == 1
            raise KeyboardInterrupt
        return real(self, page, data)

    monkeypatch.setattr(tiffmod.StackWriter, "_write_page", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_batch([d], out, tiny_ckpt, tile_size=16, quiet=True)
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.tif", "a_x2_kernel.tif"]
    monkeypatch.setattr(tiffmod.StackWriter, "_write_page", real)
    s = run_batch([d], out, tiny_ckpt, tile_size=16, quiet=True)
    assert s.count("skipped") == 1 and s.count("done") == 1
    assert (out / "b_x2.tif").exists() and not list(out.glob(".*"))


def test_rgb_file_with_rgb_model(tmp_path, rng):
    ck = tmp_path / "rgb.pt"
    tiny_model(in_nc=3, scale=2).save(ck)
    img = rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "photo.tif", img, photometric="rgb")
    s = run_batch([tmp_path / "photo.tif"], tmp_path / "o", ck, quiet=True)
    assert not s.failed
    out, meta = read_tiff(tmp_path / "o" / "photo_x2.tif")
    assert out.shape == (48, 40, 3) and meta.photometric == "rgb"
    ref = napari_dan.super_resolve(img, tiny_model(in_nc=3, scale=2))
    np.testing.assert_array_equal(out, ref.image)


def test_bad_channel_axis_is_an_actionable_error(tmp_path, rng, tiny_ckpt):
    src = tmp_path / "h.tif"
    _hyperstack(src, rng)
    s = run_batch([src], tmp_path / "o", tiny_ckpt, channel_axis=7, quiet=True)
    assert "out of range" in s.failed[0].message and "TZCYX" in s.failed[0].message
    s = run_batch([src], tmp_path / "o", tiny_ckpt, channel_axis="Q", quiet=True)
    assert "no axis 'Q'" in s.failed[0].message
    with pytest.raises(InputError, match="kernel mode"):
        run_batch([src], tmp_path / "o", tiny_ckpt, kernel_mode="local")


def test_psf_loading(tmp_path):
    k = gaussian_kernel(15, 2.0)
    stack = np.stack([k * 0.2, k, k * 0.5])  # in focus in the middle
    tifffile.imwrite(tmp_path / "psf.tif", stack.astype(np.float32))
    got, note = load_psf(tmp_path / "psf.tif")
    assert "plane 1 of 3" in note and got.shape == (15, 15)
    assert got.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(got, k / k.sum(), atol=2e-3)
    # with pixel sizes on both sides it is resampled to the output grid
    tifffile.imwrite(tmp_path / "psf2.tif", k.astype(np.float32), imagej=True,
                     resolution=(1 / 0.2, 1 / 0.2), metadata={"unit": "um"})
    got, note = load_psf(tmp_path / "psf2.tif", hr_pixel_size=0.1, unit="µm")
    assert "resampled" in note
    from napari_dan.model.kernels import kernel_stats

    assert kernel_stats(got).sigma_major == pytest.approx(4.0, rel=0.1)  # 2 px of 0.2 -> 4 of 0.1
    st = kernel_stats(got)
    mid = got.shape[0] // 2  # centred on the middle pixel (the regridding keeps the centre)
    assert got.shape[0] % 2 == 1 and abs(st.centroid_y - mid) < 0.05 and abs(st.centroid_x - mid) < 0.05
    # a PSF in nm beside an image in µm: compared in one unit, resampled (50 nm -> 0.1 µm)
    tifffile.imwrite(tmp_path / "psf3.tif", k.astype(np.float32), imagej=True,
                     resolution=(1 / 50, 1 / 50), metadata={"unit": "nm"})
    got, note = load_psf(tmp_path / "psf3.tif", hr_pixel_size=0.1, unit="µm")
    assert "resampled from 50 nm to 0.1 µm" in note
    assert kernel_stats(got).sigma_major == pytest.approx(1.0, rel=0.1)  # 2 px of 50 nm


def test_psf_run_is_non_blind(tmp_path, rng, tiny_ckpt):
    src = tmp_path / "h.tif"
    tifffile.imwrite(src, rng.integers(0, 255, (2, 24, 24), dtype=np.uint8),
                     photometric="minisblack")
    np.save(tmp_path / "psf.npy", gaussian_kernel(21, 1.5))
    s = run_batch([src], tmp_path / "o", tiny_ckpt, psf=tmp_path / "psf.npy", quiet=True)
    assert not s.failed
    _, info = read_kernels(tmp_path / "o" / "h_x2_kernel.tif")
    assert info["kernel_mode"] == "user kernel" and "psf" in info
    assert s.results[0].snr is None and "signal-to-noise" not in s.results[0].message


def _peak_rss_mb(code: str) -> float:
    """Peak RSS (MB) of a fresh Python process running ``code`` (measured by a parent that has
    no other children)."""
    wrapper = textwrap.dedent(f"""
        import resource, subprocess, sys
        r = subprocess.run([sys.executable, "-c", {code!r}])
        assert r.returncode == 0, r.returncode
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, env=env,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_streaming_memory_does_not_grow_with_stack(tmp_path, tiny_ckpt):
    """Peak RSS of a 40-plane run is about that of a 10-plane run: the stack is never in memory.

    40 x 512 x 512 uint16 is 20 MB in and 80 MB out (x2); the difference in peak RSS between
    the two runs must stay far below the 75 MB (in + out) the 30 extra planes would need if held.
    (Ten planes already saturate the engine's fixed-size samples for normalisation/estimation.)
    """
    rng = np.random.default_rng(0)
    plane = rng.integers(0, 60000, (512, 512), dtype=np.uint16)
    for n in (10, 40):
        with tifffile.TiffWriter(tmp_path / f"s{n}.tif", imagej=True) as tw:
            tw.write((np.roll(plane, i, 0) for i in range(n)), shape=(n, 512, 512),
                     dtype=np.uint16, metadata={"axes": "ZYX"})
    code = ("from napari_dan.batch import run_batch; import sys; "
            "s = run_batch([sys.argv[1]], sys.argv[2], sys.argv[3], tile_size=128, quiet=True); "
            "sys.exit(1 if s.failed else 0)")
    peaks = {}
    for n in (10, 40):
        c = code.replace("sys.argv[1]", repr(str(tmp_path / f"s{n}.tif"))) \
            .replace("sys.argv[2]", repr(str(tmp_path / f"o{n}"))) \
            .replace("sys.argv[3]", repr(str(tiny_ckpt)))
        peaks[n] = _peak_rss_mb(c)
    out = tifffile.memmap(tmp_path / "o40" / "s40_x2.tif", mode="r")
    assert out.shape == (40, 1024, 1024)
    del out
    grown = peaks[40] - peaks[10]
    print(f"peak RSS: 10 planes {peaks[10]:.0f} MB, 40 planes {peaks[40]:.0f} MB")
    assert grown < 20, peaks


def test_psf_from_optics_takes_the_files_pixel_size(tmp_path, rng, tiny_ckpt):
    from napari_dan import Optics

    with_px, without = tmp_path / "px.tif", tmp_path / "nopx.tif"
    data = rng.integers(100, 2000, (2, 24, 24), dtype=np.uint16)
    tifffile.imwrite(with_px, data, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"axes": "ZYX", "unit": "um"})
    tifffile.imwrite(without, data[0])
    s = run_batch([with_px, without], tmp_path / "o", tiny_ckpt, psf=Optics(1.0, 0.6),
                  quiet=True)
    assert [r.status for r in s.results] == ["done", "failed"]
    assert "states no pixel size" in s.results[1].message and "--pixel-size" in s.results[1].message
    _, info = read_kernels(tmp_path / "o" / "px_x2_kernel.tif")
    assert info["kernel_mode"] == "user kernel" and info["optics"]["pixel_size"] == 0.2
    assert "NA 1" in info["psf"] and "from the file" in info["psf"]
    assert info["produced_by"]["options"]["psf"]["optics"]["pixel_size"] == 0.2
    # the same run again is skipped as made with the same options; other optics are refused
    again = run_batch([with_px], tmp_path / "o", tiny_ckpt, psf=Optics(1.0, 0.6), quiet=True)
    assert again.results[0].status == "skipped"
    other = run_batch([with_px], tmp_path / "o", tiny_ckpt, psf=Optics(0.8, 0.6), quiet=True)
    assert other.results[0].status == "failed"
    # a pixel size given wins over the file's; it makes the file without one work
    s2 = run_batch([without], tmp_path / "o2", tiny_ckpt, psf=Optics(1.0, 0.6, pixel_size=0.1),
                   quiet=True)
    assert not s2.failed
    assert read_kernels(tmp_path / "o2" / "nopx_x2_kernel.tif")[1]["optics"]["pixel_size"] == 0.1


def test_engine_warnings_become_the_files_warning_lines(tmp_path, rng):
    import warnings

    from napari_dan.model.kernels import gaussian_kernel as gk

    few = tmp_path / "few.tif"
    tifffile.imwrite(few, rng.integers(1, 9, (24, 24), dtype=np.uint8))  # 8 grey levels
    np.save(tmp_path / "wide.npy", gk(41, 9.0))  # FWHM 21 px: wider than the model knows
    grey_rgb = tiny_model(in_nc=3, scale=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # none may escape as a Python warning
        s = run_batch([few], tmp_path / "o", "dan-x2-fluo", psf=tmp_path / "wide.npy",
                      quiet=True)
        s2 = run_batch([few], tmp_path / "o2", grey_rgb, quiet=True)
    w = s.results[0].warnings
    assert any(m.startswith("few.tif: the image spans only about") for m in w), w
    assert any(m.startswith("few.tif: the PSF given (") and "wider than any PSF" in m for m in w)
    assert any(m.startswith("few.tif: the image is grey and") and "dan-x2-fluo" in m
               for m in s2.results[0].warnings)
    # channels run one by one through a colour model: said the same way; a colour image is not
    chans = tmp_path / "chans.tif"
    tifffile.imwrite(chans, rng.integers(100, 2000, (3, 24, 24), dtype=np.uint16),
                     photometric="minisblack")
    s3 = run_batch([chans], tmp_path / "o3", grey_rgb, channel_axis=0, quiet=True)
    assert any("the image has 3 channels, each run as a grey image, and" in m and "dan-x2-fluo" in m
               for m in s3.results[0].warnings), s3.results[0].warnings
    colour = tmp_path / "colour.tif"
    tifffile.imwrite(colour, rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), photometric="rgb")
    s4 = run_batch([colour], tmp_path / "o4", grey_rgb, quiet=True)
    assert not s4.failed and not any("photographs" in m for m in s4.results[0].warnings)


def test_imagej_roi_and_overlays_are_left_out_and_said_once(tmp_path, rng, tiny_ckpt):
    # ImageJ ROI / overlay records are drawn on the input's pixel grid; copied into the x2
    # output unscaled they would mark the wrong region
    roi = b"Iout" + bytes(60)  # the records are opaque here: only whether they are copied
    src = tmp_path / "roi.tif"
    tifffile.imwrite(src, rng.integers(100, 2000, (2, 24, 24), dtype=np.uint16), imagej=True,
                     metadata={"axes": "ZYX", "ROI": roi, "Overlays": [roi], "Info": "kept"})
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, rng.integers(100, 2000, (24, 24), dtype=np.uint16), imagej=True)
    s = run_batch([src, plain], tmp_path / "o", tiny_ckpt, quiet=True)
    assert not s.failed
    with tifffile.TiffFile(tmp_path / "o" / "roi_x2.tif") as tif:
        ij = tif.imagej_metadata
    assert "ROI" not in ij and "Overlays" not in ij and ij["Info"] == "kept"
    assert s.results[0].dropped == ["ImageJ ROI", "ImageJ overlays"]
    assert s.results[1].dropped == []
    notes = [line for line in s.text().splitlines() if line.startswith("note:")]
    assert notes == ["note: ImageJ ROI and ImageJ overlays left out of the output of roi.tif: "
                     "they mark regions on the input's pixel grid, not the super-resolved one"]


def test_pixel_size_given_wins_and_a_disagreement_is_warned(tmp_path, rng, tiny_ckpt):
    from napari_dan import Optics

    src = tmp_path / "px65.tif"
    tifffile.imwrite(src, rng.integers(100, 2000, (24, 24), dtype=np.uint16), imagej=True,
                     resolution=(1 / 65, 1 / 65), metadata={"axes": "YX", "unit": "nm"})
    s = run_batch([src], tmp_path / "o", tiny_ckpt, psf=Optics(1.0, 0.6, pixel_size=0.1),
                  quiet=True)
    r = s.results[0]
    assert r.status == "done", r.message
    # the physical width is the typed pixel size's (0.05 µm on the x2 grid), not the file's
    assert r.unit == "µm" and r.fwhm_physical == pytest.approx(r.fwhm * 0.05)
    assert f"= {r.fwhm * 0.05:.4g} µm" in r.message
    _, info = read_kernels(tmp_path / "o" / "px65_x2_kernel.tif")
    assert info["pixel_size"] == pytest.approx(0.05) and info["unit"] == "µm"
    assert info["optics"]["pixel_size"] == 0.1
    assert any(w.startswith("px65.tif: the pixel size given (0.1 µm, --pixel-size) differs "
                            "from the file's own (65 nm) by 54%") for w in r.warnings), r.warnings
    _, om = read_tiff(tmp_path / "o" / "px65_x2.tif")  # the image keeps the file's, scaled
    assert om.pixel_size["X"] == pytest.approx(32.5) and om.unit == "nm"
    # within 5%: no warning
    s2 = run_batch([src], tmp_path / "o2", tiny_ckpt, psf=Optics(1.0, 0.6, pixel_size=0.066),
                   quiet=True)
    assert not s2.failed and not any("differs" in w for w in s2.results[0].warnings)



def test_the_estimate_note_is_one_warning_line(tmp_path):
    # the engine now also raises it as an EstimateWarning: caught with the others, printed once
    import warnings

    noisy = tmp_path / "noisy.tif"
    tifffile.imwrite(noisy, (100 + np.random.default_rng(0).poisson(5, (64, 64))).astype(np.uint16))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # none may escape as a Python warning
        s = run_batch([noisy], tmp_path / "o", "dan-x2-fluo", quiet=True)
    notes = [m for m in s.results[0].warnings if "noise biases the blind estimate" in m]
    assert len(notes) == 1 and notes[0].startswith("noisy.tif: the image is noisy"), notes


def test_flat_file_reports_no_psf_and_a_textured_one_its_width(tmp_path, rng, tiny_ckpt, capsys):
    """A flat image has no PSF to estimate: its line says so and the summary gives no width
    for it (it printed the loop's starting kernel as if it were a measurement)."""
    tifffile.imwrite(tmp_path / "flat.tif", np.full((24, 24), 500, np.uint16))
    tifffile.imwrite(tmp_path / "busy.tif", rng.integers(0, 4000, (24, 24), dtype=np.uint16))
    s = run_batch([tmp_path / "flat.tif"], tmp_path / "out", tiny_ckpt)
    r = s.results[0]
    assert r.status == "done" and r.fwhm is None and r.message.startswith("no PSF estimated")
    out = capsys.readouterr().out
    assert "flat.tif -> flat_x2.tif" in out and "kernel no PSF" not in out
    assert "kernel FWHM" not in s.text()
    s2 = run_batch([tmp_path / "busy.tif"], tmp_path / "out", tiny_ckpt, quiet=True)
    assert s2.results[0].fwhm is not None and "kernel FWHM" in s2.text()
