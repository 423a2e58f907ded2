"""TIFF reading/writing block by block with metadata (napari_dan.io)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_dan.errors import InputError
from napari_dan.io import (
    BlockLayout,
    StackWriter,
    open_tiff,
    partial_glob,
    read_kernels,
    read_metadata,
    read_tiff,
    scaled_metadata,
    write_kernels,
    write_tiff,
)
from napari_dan.io import writing as tiffmod


def _upsample_file(src, dst, s=2, channel_axis=None):
    """Write a nearest-neighbour x s copy of ``src`` block by block (stands in for the engine)."""
    with open_tiff(src) as st:
        lay = st.layout(channel_axis)
        with StackWriter(dst, scaled_metadata(st.meta, s), lay.scaled(s)) as w:
            y, x = lay.block_axes.index("Y"), lay.block_axes.index("X")
            for i in range(lay.n_blocks):
                b = st.read_block(lay, i)
                w.write_block(i, b.repeat(s, axis=y).repeat(s, axis=x))
            w.commit()


def _nearest(a, axes, s):
    return a.repeat(s, axis=axes.index("Y")).repeat(s, axis=axes.index("X"))


def test_imagej_hyperstack_metadata_scaled(tmp_path, rng):
    data = rng.integers(0, 4000, (2, 3, 2, 16, 20), dtype=np.uint16)
    src = tmp_path / "hyper.tif"
    tifffile.imwrite(src, data, imagej=True, resolution=(1 / 0.2, 1 / 0.25),
                     metadata={"axes": "TZCYX", "spacing": 0.5, "unit": "um", "finterval": 3.0,
                               "Ranges": (0, 100, 0, 200), "Info": "from test"})
    meta = read_metadata(src)
    assert meta.kind == "imagej" and meta.axes == "TZCYX"
    assert meta.pixel_size["X"] == pytest.approx(0.2)
    assert meta.pixel_size["Y"] == pytest.approx(0.25)
    assert meta.pixel_size["Z"] == 0.5 and meta.pixel_size["T"] == 3.0 and meta.unit == "µm"

    dst = tmp_path / "out.tif"
    _upsample_file(src, dst, s=2)
    out, om = read_tiff(dst)
    np.testing.assert_array_equal(out, _nearest(data, "TZCYX", 2))
    assert om.kind == "imagej" and om.axes == "TZCYX"
    assert om.pixel_size["X"] == pytest.approx(0.1) and om.pixel_size["Y"] == pytest.approx(0.125)
    assert om.pixel_size["Z"] == 0.5 and om.pixel_size["T"] == 3.0 and om.unit == "µm"
    with tifffile.TiffFile(dst) as tif:
        ij = tif.imagej_metadata
        assert ij["Info"] == "from test" and tuple(ij["Ranges"]) == (0, 100, 0, 200)
        assert (ij["frames"], ij["slices"], ij["channels"]) == (2, 3, 2)


def test_ome_channel_names_and_physical_size(tmp_path, rng):
    data = rng.integers(0, 255, (3, 4, 12, 10), dtype=np.uint8)
    src = tmp_path / "x.ome.tif"
    tifffile.imwrite(src, data, ome=True, metadata={
        "axes": "CZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1, "PhysicalSizeZ": 0.3,
        "Channel": {"Name": ["DAPI", "GFP", "RFP"]}})
    meta = read_metadata(src)
    assert meta.kind == "ome" and meta.axes == "CZYX"
    assert meta.channel_names == ["DAPI", "GFP", "RFP"]
    dst = tmp_path / "y.ome.tif"
    _upsample_file(src, dst, s=3)
    out, om = read_tiff(dst)
    np.testing.assert_array_equal(out, _nearest(data, "CZYX", 3))
    assert om.channel_names == ["DAPI", "GFP", "RFP"] and om.axes == "CZYX"
    assert om.pixel_size["X"] == pytest.approx(0.1 / 3) and om.pixel_size["Z"] == pytest.approx(0.3)


@pytest.mark.parametrize("ux,uy,y_read,y_out,uy_out", [
    ("nm", "µm", 100.0, 50.0, "nm"),          # Y converted into X's unit
    ("µm", "nm", 0.1, 0.05, "µm"),
    ("nm", "pixel", 0.1, 0.05, "pixel"),       # not convertible: Y keeps its own unit
    ("pixel", "pixel", 0.1, 0.05, "pixel")])   # no length: kept as it was, not made µm
def test_ome_x_and_y_each_with_its_own_unit(tmp_path, rng, ux, uy, y_read, y_out, uy_out):
    src = tmp_path / "u.ome.tif"
    x = 100.0 if ux == "nm" else 0.1
    y = 0.1 if uy in ("µm", "pixel") else 100.0
    tifffile.imwrite(src, rng.integers(0, 255, (2, 12, 10), dtype=np.uint8), ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": x, "PhysicalSizeXUnit": ux,
                               "PhysicalSizeY": y, "PhysicalSizeYUnit": uy})
    meta = read_metadata(src)
    assert meta.pixel_size["Y"] == pytest.approx(y_read)
    dst = tmp_path / "o.ome.tif"
    _upsample_file(src, dst)
    with tifffile.TiffFile(dst) as tif:
        pix = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert float(pix["PhysicalSizeX"]) == pytest.approx(x / 2)
    assert pix.get("PhysicalSizeXUnit", "µm") == ux
    assert float(pix["PhysicalSizeY"]) == pytest.approx(y_out)
    assert pix.get("PhysicalSizeYUnit", "µm") == uy_out


@pytest.mark.parametrize("spelling,um", [
    ("micrometer", 1.0), ("Micrometre", 1.0), ("micrometers", 1.0), ("MICROMETRES", 1.0),
    ("nanometer", 1e-3), ("nanometres", 1e-3), ("Nanometers", 1e-3), ("millimeter", 1e3),
    ("millimetres", 1e3), ("centimetre", 1e4), ("metre", 1e6), ("micron", 1.0), ("um", 1.0)])
def test_spelled_out_length_units(tmp_path, rng, spelling, um):
    from napari_dan.io import micrometres

    assert micrometres(2.0, spelling) == pytest.approx(2.0 * um)
    src = tmp_path / "u.tif"
    tifffile.imwrite(src, rng.integers(0, 255, (2, 8, 8), dtype=np.uint8), imagej=True,
                     resolution=(10, 10), metadata={"axes": "ZYX", "unit": spelling})
    px, unit = read_metadata(src).spatial_pixel_size()
    assert micrometres(px, unit) == pytest.approx(0.1 * um)


@pytest.mark.parametrize("kind", ["rgb", "planar", "zlib-tiled", "bigendian"])
def test_layouts_round_trip(tmp_path, rng, kind):
    src = tmp_path / f"{kind}.tif"
    if kind == "rgb":
        data = rng.integers(0, 255, (3, 8, 9, 3), dtype=np.uint8)
        tifffile.imwrite(src, data, photometric="rgb")
    elif kind == "planar":
        data = rng.integers(0, 255, (3, 8, 9), dtype=np.uint8)
        tifffile.imwrite(src, data, photometric="rgb", planarconfig="separate")
    elif kind == "zlib-tiled":
        data = rng.integers(0, 60000, (4, 32, 48), dtype=np.uint16)
        tifffile.imwrite(src, data, compression="zlib", tile=(16, 16),
                         photometric="minisblack")
    else:
        data = rng.random((3, 8, 9)).astype(">f4")
        tifffile.imwrite(src, data, byteorder=">", photometric="minisblack")
    meta = read_metadata(src)
    a, _ = read_tiff(src)
    np.testing.assert_array_equal(a, data)
    dst = tmp_path / "o.tif"
    _upsample_file(src, dst)
    out, om = read_tiff(dst)
    np.testing.assert_array_equal(out, _nearest(data, meta.axes, 2))
    assert om.photometric == meta.photometric and om.axes == meta.axes


def test_block_layout_channels():
    # TZCYX with the model taking the C axis: a block is C pages, consecutive only within (t, z)
    lay = BlockLayout((2, 3, 2, 5, 6), "TZCYX", 2, channel_axis="C")
    assert lay.n_blocks == 6 and lay.block_axes == "CYX" and lay.channel == 2
    assert lay.block_pages(0) == [0, 1] and lay.block_pages(4) == [8, 9]
    # channel axis first: the pages of one block are strided
    lay = BlockLayout((3, 4, 5, 6), "CZYX", 2, channel_axis=0)
    assert lay.block_pages(1) == [1, 5, 9]
    # RGB samples are the channel axis by default, and every other axis is looped over
    lay = BlockLayout((4, 5, 6, 3), "ZYXS", 3)
    assert lay.block_axes == "YXS" and lay.n_blocks == 4 and lay.block_pages(2) == [2]
    with pytest.raises(InputError, match="Y axis"):
        BlockLayout((4, 5, 6), "ZYX", 2, channel_axis=1)
    with pytest.raises(InputError, match="out of range"):
        BlockLayout((4, 5, 6), "ZYX", 2, channel_axis=5)
    with pytest.raises(InputError, match="inside each TIFF page"):
        BlockLayout((4, 5, 6, 3), "ZYXS", 3, channel_axis=0)


def test_strided_channel_blocks_written_in_place(tmp_path, rng):
    data = rng.integers(0, 255, (3, 4, 6, 5), dtype=np.uint8)
    src = tmp_path / "c.tif"
    tifffile.imwrite(src, data, photometric="minisblack", metadata={"axes": "CZYX"})
    dst = tmp_path / "o.tif"
    _upsample_file(src, dst, channel_axis="C")
    out, _ = read_tiff(dst)
    np.testing.assert_array_equal(out, _nearest(data, "CZYX", 2))


def test_abort_leaves_no_file(tmp_path, rng):
    src = tmp_path / "s.tif"
    tifffile.imwrite(src, rng.integers(0, 9, (3, 8, 8), dtype=np.uint8), photometric="minisblack")
    dst = tmp_path / "o.tif"
    with open_tiff(src) as st:
        lay = st.layout()
        with pytest.raises(KeyboardInterrupt):
            with StackWriter(dst, scaled_metadata(st.meta, 2), lay.scaled(2)) as w:
                w.write_block(0, np.zeros(lay.scaled(2).block_shape, np.uint8))
                assert w.tmp.exists() and partial_glob(dst) == [w.tmp]
                raise KeyboardInterrupt
    assert not dst.exists() and not partial_glob(dst)


def test_corrupt_and_missing_files_named(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(InputError, match="broken.tif"):
        read_metadata(bad)
    with pytest.raises(InputError, match="nothere.tif"):
        read_metadata(tmp_path / "nothere.tif")
    # a truncated contiguous file: metadata fine, data missing
    good = tmp_path / "trunc.tif"
    tifffile.imwrite(good, np.ones((4, 64, 64), np.uint16), photometric="minisblack")
    raw = good.read_bytes()
    good.write_bytes(raw[: len(raw) - 5000])
    with pytest.raises(InputError, match="trunc.tif"):
        read_tiff(good)


def test_truncated_imagej_hyperstack_is_refused(tmp_path, rng):
    # tifffile falls back to the first page alone when an ImageJ file lacks its other images;
    # that must not pass for a one-plane image
    src = tmp_path / "ij.tif"
    tifffile.imwrite(src, rng.integers(0, 4000, (2, 3, 40, 40), dtype=np.uint16), imagej=True,
                     resolution=(10, 10), metadata={"axes": "TZYX", "unit": "um"})
    assert read_metadata(src).shape == (2, 3, 40, 40)  # whole: fine
    trunc = tmp_path / "trunc.tif"
    trunc.write_bytes(src.read_bytes()[:12000])
    with pytest.raises(InputError, match=r"trunc.tif.*ImageJ header says 6 images but the file "
                                         r"holds 1; truncated"):
        read_metadata(trunc)


def _two_series_ome(path, rng):
    with tifffile.TiffWriter(path, ome=True) as w:
        w.write(rng.integers(0, 255, (2, 30, 30), dtype=np.uint8), metadata={
            "axes": "CYX", "Name": "first", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2,
            "Channel": {"Name": ["A", "B"]}})
        w.write(rng.integers(0, 255, (3, 20, 20), dtype=np.uint8), metadata={
            "axes": "CYX", "Name": "second", "PhysicalSizeX": 0.05, "PhysicalSizeY": 0.05,
            "Channel": {"Name": ["X", "Y", "Z"]}})


def test_ome_series_metadata_is_that_series(tmp_path, rng):
    src = tmp_path / "two.ome.tif"
    _two_series_ome(src, rng)
    with open_tiff(src, series=1) as st:
        m = st.meta
    assert m.shape == (3, 20, 20) and m.ome["Name"] == "second"
    assert m.pixel_size["X"] == pytest.approx(0.05) and m.channel_names == ["X", "Y", "Z"]
    first = read_metadata(src)
    assert first.ome["Name"] == "first" and first.pixel_size["X"] == pytest.approx(0.2)
    # the output of series 1 carries series 1's metadata
    dst = tmp_path / "o.ome.tif"
    with open_tiff(src, series=1) as st:
        lay = st.layout()
        with StackWriter(dst, scaled_metadata(st.meta, 2), lay.scaled(2)) as w:
            for i in range(lay.n_blocks):
                w.write_block(i, _nearest(st.read_block(lay, i), lay.block_axes, 2))
            w.commit()
    om = read_metadata(dst)
    assert om.ome["Name"] == "second" and om.channel_names == ["X", "Y", "Z"]
    assert om.pixel_size["X"] == pytest.approx(0.025)
    # an Image without data (tifffile makes no series of it): matched by its first IFD
    from napari_dan.io.reading import _ome_image

    images = [{"Name": "a", "Pixels": {"TiffData": {"IFD": 0}}},
              {"Name": "empty", "Pixels": {"TiffData": {"IFD": 99}}},
              {"Name": "b", "Pixels": {"TiffData": [{"IFD": 3}, {"IFD": 2}]}}]
    with tifffile.TiffFile(src) as tif:
        assert _ome_image(images, tif, 1)["Name"] == "b"
        assert _ome_image(images, tif, 0)["Name"] == "a"
        assert _ome_image(images[1:2], tif, 1) == {}  # not to be told: no metadata


def test_bigtiff_when_large(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(tiffmod, "BIGTIFF_LIMIT", 1000)
    data = rng.integers(0, 255, (2, 16, 16), dtype=np.uint8)
    src = tmp_path / "s.tif"
    tifffile.imwrite(src, data, imagej=True, metadata={"axes": "ZYX", "spacing": 2.0})
    dst = tmp_path / "o.tif"
    _upsample_file(src, dst)
    with tifffile.TiffFile(dst) as tif:
        assert tif.is_bigtiff
    out, om = read_tiff(dst)
    np.testing.assert_array_equal(out, _nearest(data, "ZYX", 2))
    assert om.pixel_size["Z"] == 2.0


def test_kernels_with_json_description(tmp_path):
    k = np.random.default_rng(1).random((3, 5, 5)).astype(np.float64)
    info = {"mode": "per-plane", "stats": [{"fwhm": 1.5}] * 3}
    p = write_kernels(tmp_path / "k.tif", k, info, pixel_size=0.05, unit="µm")
    data, back = read_kernels(p)
    assert data.dtype == np.float32 and data.shape == (3, 5, 5)
    np.testing.assert_allclose(data, k.astype(np.float32))
    assert back == info
    assert not partial_glob(p)


@pytest.mark.parametrize("px,unit,cm", [(0.05, "µm", 5e-6), (50.0, "nm", 5e-6),
                                         (0.00005, "mm", 5e-6), (0.05, "micron", 5e-6),
                                         (0.05, "pixel", None), (0.05, "furlong", None),
                                         (0.05, None, None),
                                         # beyond what a TIFF rational holds: no tags, no error
                                         (1e-6, "µm", None), (1e16, "µm", None)])
def test_kernel_file_resolution_in_centimetres(tmp_path, px, unit, cm):
    p = write_kernels(tmp_path / "k.tif", np.ones((5, 5)), {}, pixel_size=px, unit=unit)
    with tifffile.TiffFile(p) as tif:
        tags = tif.pages[0].tags
        if cm is None:  # not a length: tifffile's neutral (1, 1) without a unit, never inches
            assert tags["ResolutionUnit"].value == 1
            assert tags["XResolution"].value == tags["YResolution"].value == (1, 1)
            return
        assert tags["ResolutionUnit"].value == 3
        for t in ("XResolution", "YResolution"):
            num, den = tags[t].value
            assert den / num == pytest.approx(cm, rel=1e-6)


def test_plain_tiff_pixel_size_only_from_centimetre_tags(tmp_path, rng):
    # inches are a print resolution (72, 300 dpi), not a size at the sample (docs/cli.md)
    a = rng.integers(0, 255, (8, 8), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "inch.tif", a, resolution=(300, 300), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "cm.tif", a, resolution=(50000, 50000),
                     resolutionunit="CENTIMETER")
    assert read_metadata(tmp_path / "inch.tif").spatial_pixel_size() == (None, None)
    px, unit = read_metadata(tmp_path / "cm.tif").spatial_pixel_size()
    assert px == pytest.approx(0.2) and unit == "µm"


def test_write_tiff_guesses_rgb(tmp_path, rng):
    img = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
    p = write_tiff(tmp_path / "rgb.tif", img)
    back, meta = read_tiff(p)
    np.testing.assert_array_equal(back, img)
    assert meta.photometric == "rgb" and meta.axes.endswith("YXS")


def test_shared_microscopy_metadata(shared_dir):
    meta = read_metadata(shared_dir / "data/microscopy/Bead_Image1_crop.tif")
    assert meta.axes == "ZYX" and meta.kind == "imagej"
    assert meta.unit == "µm"  # stored by ImageJ as the escape sequence \u00B5m
    assert meta.pixel_size["Z"] == pytest.approx(0.125)
    assert 0.01 < meta.pixel_size["X"] < 0.05


def test_tiff_array_indexing_matches_numpy(tmp_path, rng):
    data = rng.integers(0, 999, (3, 4, 10, 12), dtype=np.uint16)
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, data, compression="zlib", photometric="minisblack",
                     metadata={"axes": "TZYX"})
    with open_tiff(src) as st:
        arr = st.array()
        assert arr.shape == data.shape and arr.dtype == data.dtype
        for key in [(1, 2), (slice(None), 3), (..., 2, slice(1, 9, 2)), (2, slice(None, None, -1)),
                    (0, 1, slice(8, 1, -3), 4), (-1,)]:
            np.testing.assert_array_equal(arr[key], data[key], err_msg=str(key))
        np.testing.assert_array_equal(np.asarray(arr), data)
        with pytest.raises(IndexError):
            arr[[0, 1]]


def test_stack_writer_setitem_whole_pages(tmp_path, rng):
    data = rng.integers(0, 255, (2, 3, 8, 8), dtype=np.uint8)
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, data, photometric="minisblack", metadata={"axes": "TZYX"})
    with open_tiff(src) as st:
        lay = st.layout()
        with StackWriter(tmp_path / "o.tif", st.meta, lay) as w:
            assert w.shape == data.shape and w.dtype == data.dtype
            w[1] = data[1]
            w[0, 2] = data[0, 2]
            w[0, :2, ...] = data[0, :2]
            with pytest.raises(IndexError, match="whole TIFF pages"):
                w[0, 0, :4] = 0
            w.commit()
    back, _ = read_tiff(tmp_path / "o.tif")
    np.testing.assert_array_equal(back, data)
