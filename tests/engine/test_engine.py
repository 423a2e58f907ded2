"""The engine: tiling, kernel modes, inputs, dtypes, progress/cancel, OOM retry, dask, memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_dan
from conftest import tiny_model
from napari_dan.engine import core, devices, kernel_modes, normalize, restoration, tiling
from napari_dan.engine.kernel_modes import candidate_patches, select_patches
from napari_dan.errors import Cancelled, InputError
from napari_dan.model.kernels import gaussian_kernel

FP32 = dict(precision="fp32", device="cpu")
#: one view of each estimation patch: what the network's own forward pass computes
ONE_VIEW = dict(FP32, kernel_views=1)


def textured(h: int, w: int, seed: int = 0, dtype=np.uint8, lo: float = 0, hi: float = 255):
    """Smooth structures plus fine texture, so every tile has something to show."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.5 + 0.3 * np.sin(xx / 5.0 + yy / 9.0) * np.cos(yy / 4.0)
    img += 0.15 * rng.standard_normal((h, w))
    img = np.clip(img, 0, 1) * (hi - lo) + lo
    return img.astype(dtype) if np.issubdtype(np.dtype(dtype), np.floating) else \
        np.rint(img).astype(dtype)


def plain_forward(model, lr01: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        sr, _ = model.network(torch.from_numpy(lr01.astype(np.float32))[None, None])
    return sr[0, 0].numpy()


def agreement(a: np.ndarray, b: np.ndarray, tol: float = 1) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64)) <= tol))


# ---------------------------------------------------------------- tiling


@pytest.mark.parametrize("deep", [False, True])
def test_tiled_equals_untiled_global(deep):
    # a deeper tiny model has a larger receptive field, so the automatic overlap is tested too
    img = textured(150, 170, seed=2)
    m = calibrated(tiny_model(seed=1) if not deep else _deep_tiny(), img)
    whole = napari_dan.super_resolve(img, m, tile_size=1024, **FP32)
    tiled = napari_dan.super_resolve(img, m, tile_size=48, **FP32)
    assert tiled.metadata["tiles"] > 9 and whole.metadata["tiles"] == 1
    np.testing.assert_array_equal(tiled.kernel, whole.kernel)  # same estimation patches
    assert whole.image.std() > 20  # the comparison is not between two flat images
    assert agreement(tiled.image, whole.image) >= 0.999
    # on floats, relative to the output's range: the blend is far below one 8-bit step
    f = textured(150, 170, seed=2, dtype=np.float32, lo=0, hi=1)
    wf = napari_dan.super_resolve(f, m, tile_size=1024, **FP32).image
    tf = napari_dan.super_resolve(f, m, tile_size=48, **FP32).image
    rng_ = float(np.percentile(wf, 99.9) - np.percentile(wf, 0.1))
    assert agreement(tf / rng_ * 255, wf / rng_ * 255, 1) >= 0.999


def calibrated(m, img: np.ndarray):
    """Rescale a random model's last convolution so that its output on ``img`` spans about
    0.1..0.9: a random network otherwise gives a nearly flat 8-bit image, which would make an
    8-bit comparison meaningless. Still a plain model of the same architecture."""
    sr = plain_forward(m, img / 255.0)
    lo, hi = np.percentile(sr, [1, 99])
    a = 0.8 / max(hi - lo, 1e-6)
    conv = m.network.Restorer.upscale[-1]
    with torch.no_grad():
        conv.weight.mul_(a)
        conv.bias.mul_(a).add_(0.1 - a * lo)
    return m


def _deep_tiny():
    from napari_dan.model import create_model

    return create_model("DANv2", in_nc=1, nf=8, nb=3, ng=2, scale=2, code_len=10, kernel_size=21,
                        loop=2, est_nf=16, est_nb=1, pca_samples=2000, seed=4)


def test_no_overlap_shows_seams():
    # the blend matters: with no overlap the tiled result differs from the whole one
    img = textured(150, 170, seed=2)
    m = calibrated(_deep_tiny(), img)
    whole = napari_dan.super_resolve(img, m, tile_size=1024, **FP32).image
    seams = napari_dan.super_resolve(img, m, tile_size=48, tile_overlap=0, **FP32).image
    assert agreement(seams, whole) < 0.999


def test_tiled_equals_untiled_bundled_model():
    models = napari_dan.list_models()
    if not models:
        pytest.skip("no bundled model yet")
    m = napari_dan.load_model(models[0]["name"])
    shape = (120, 130, 3) if m.in_channels == 3 else (120, 130)
    img = np.stack([textured(120, 130, seed=s) for s in range(3)], -1) if m.in_channels == 3 \
        else textured(*shape)
    whole = napari_dan.super_resolve(img, m, tile_size=1024, **FP32)
    tiled = napari_dan.super_resolve(img, m, tile_size=64, **FP32)
    assert agreement(tiled.image, whole.image) >= 0.999


def test_single_patch_global_matches_plain_forward():
    # loop - 1 rounds restore exactly the network's own output, and the kernel reported is the
    # one whose code restored it (the second-to-last of the network's kernels); that is what
    # "auto" means for the authors' checkpoints
    from dataclasses import replace

    img = textured(64, 80, seed=5)
    m = calibrated(tiny_model(seed=3), img)
    official = replace(m, info={"format": "official"})
    plain = np.clip(np.rint(plain_forward(m, img / 255.0) * 255), 0, 255)
    with torch.inference_mode():
        _, ks, _ = m.network.forward_all(torch.from_numpy(img / 255.0).float()[None, None])
    k = ks[-2][0].numpy()
    for model, settings in ((m, {"iterations": m.network.loop - 1, "kernel_views": 1}),
                            (official, {})):
        r = napari_dan.super_resolve(img, model, **settings, **FP32)
        assert r.metadata["iterations"] == m.network.loop - 1
        assert agreement(r.image, plain, 1) == 1.0
        np.testing.assert_allclose(r.kernel, k / k.sum(), atol=1e-6)
    # napari-dan's models restore with the loop's last kernel by default
    assert napari_dan.super_resolve(img, m, **FP32).metadata["iterations"] == m.network.loop


class _WiderEachRound(torch.nn.Module):
    """An Estimator whose Gaussian kernel widens with every call since ``calls`` was reset, so
    each round of the loop has its own kernel and code."""

    def __init__(self, size: int):
        super().__init__()
        yy, xx = torch.meshgrid(torch.arange(size) - size // 2, torch.arange(size) - size // 2,
                                indexing="ij")
        self.register_buffer("r2", (yy * yy + xx * xx).float().reshape(1, -1))
        self.calls = 0

    def forward(self, sr, lr):
        self.calls += 1
        sigma = 0.4 + 0.5 * self.calls
        k = torch.exp(-self.r2 / (2 * sigma * sigma)).expand(sr.shape[0], -1)
        return k / k.sum(1, keepdim=True)


def test_rounds_run_once_each():
    # a plane that is its own estimation patch: `iterations` Restorer and Estimator passes for
    # the estimate, then one Restorer pass for the image; no extra round for the kernel
    m = tiny_model(seed=3, loop=4)
    img = textured(60, 70, seed=1)
    net = m.network
    net.Estimator = est = _WiderEachRound(net.kernel_size)  # every round's kernel differs
    napari_dan.super_resolve(img, m, **ONE_VIEW)  # the overlap probe runs the Restorer once per model
    calls = {"R": 0, "E": 0}
    hr, he = (net.Restorer.register_forward_hook(lambda *a: calls.__setitem__("R", calls["R"] + 1)),
              net.Estimator.register_forward_hook(lambda *a: calls.__setitem__("E", calls["E"] + 1)))
    try:
        for n in (1, 2, 3, 4):
            calls.update(R=0, E=0)
            est.calls = 0
            r = napari_dan.super_resolve(img, m, iterations=n, **ONE_VIEW)
            assert calls == {"R": n + 1, "E": n} and r.metadata["iterations"] == n
            assert r.metadata["steps"] == 2
    finally:
        hr.remove()
        he.remove()
    # `n` rounds restore with the n-th code: n = 3 is the network's own output (loop 4)
    est.calls = 0
    with torch.inference_mode():
        srs, ks, codes = net.forward_all(torch.from_numpy(img / 255.0).float()[None, None])
    k1, k3 = (ks[i][0].numpy() / ks[i][0].numpy().sum() for i in (0, 2))
    assert np.abs(k1 - k3).max() > 1e-3 and np.abs(codes[0] - codes[2]).max() > 1e-3
    for n in (1, 3):
        est.calls = 0
        r = napari_dan.super_resolve(img, m, iterations=n, **ONE_VIEW)
        with torch.inference_mode():
            sr = net.restore(torch.from_numpy(img / 255.0).float()[None, None], codes[n - 1])
        ref = np.clip(np.rint(sr[0, 0].numpy() * 255), 0, 255)
        assert agreement(r.image, ref, 1) == 1.0
        np.testing.assert_allclose(r.kernel, ks[n - 1][0].numpy() / ks[n - 1][0].numpy().sum(),
                                   atol=1e-6)
    plain = np.clip(np.rint(srs[-1][0, 0].numpy() * 255), 0, 255)
    est.calls = 0
    assert agreement(napari_dan.super_resolve(img, m, iterations=3, **ONE_VIEW).image, plain,
                     1) == 1.0


def test_settled_rounds_stop_when_the_kernel_stops_moving():
    img = textured(60, 70, seed=1)
    m = tiny_model(seed=3, loop=4)  # a random Estimator: the kernel hardly moves after round 1
    r = napari_dan.super_resolve(img, m, iterations="settled", **ONE_VIEW)
    assert r.metadata["settled"]["rounds_run"] == [2]
    two = napari_dan.super_resolve(img, m, iterations=2, **ONE_VIEW)
    np.testing.assert_array_equal(r.image, two.image)  # the same rounds, the same result
    m.network.Estimator = est = _WiderEachRound(m.network.kernel_size)  # it never settles
    est.calls = 0
    r = napari_dan.super_resolve(img, m, iterations="settled", **ONE_VIEW)
    assert r.metadata["settled"]["rounds_run"] == [4] and r.metadata["iterations"] == 4
    stack = np.stack([img, img[::-1]])
    per = napari_dan.super_resolve(stack, tiny_model(seed=3, loop=4), kernel_mode="per-plane",
                                   iterations="settled", **ONE_VIEW)
    assert per.metadata["settled"]["rounds_run"] == [2, 2]
    assert "settled" not in napari_dan.super_resolve(img, m, iterations=4, **ONE_VIEW).metadata
    # "auto" settles for napari-dan's models, never for the authors' checkpoints (as released)
    from dataclasses import replace

    est.calls = 0
    assert napari_dan.super_resolve(img, m, **ONE_VIEW).metadata["settled"]["rounds_run"] == [4]
    official = replace(m, info={"format": "official"})
    assert "settled" not in napari_dan.super_resolve(img, official, **ONE_VIEW).metadata


@pytest.mark.parametrize("bad", [0, 5, -1, 2.5, True, "all", None])
def test_bad_iterations_are_refused(bad):
    m = tiny_model(loop=4)
    with pytest.raises(InputError, match="iterations must be 'auto', 'settled' or an int from 1 to 4"):
        napari_dan.super_resolve(textured(32, 32), m, iterations=bad, **FP32)


def test_mirror_views_round_trip():
    from napari_dan.engine.plan import mirror, unmirror

    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    seen = set()
    for v in range(8):
        assert np.array_equal(unmirror(mirror(x, v), v), x)
        seen.add(mirror(x, v)[0, 0].tobytes() + bytes(mirror(x, v).shape[-2:]))
    assert len(seen) == 8 and np.array_equal(mirror(x, 0), x)  # eight different views
    # a kernel estimated on a mirrored image is the mirrored kernel: unmirror undoes it
    k = gaussian_kernel(11, 1.0, 2.5, 0.4)[None]
    for v in range(8):
        assert np.array_equal(unmirror(mirror(k, v), v), k)


@pytest.mark.parametrize("views", [4, 8])
def test_kernel_views_average_the_mirrored_estimates(views):
    from napari_dan.engine.devices import Precision
    from napari_dan.engine.plan import NetworkRunner, mirror, unmirror

    m = tiny_model(seed=5, loop=3)
    x = (textured(40, 40, seed=2) / 255.0).astype(np.float32)[None, None]
    runner = NetworkRunner(m, torch.device("cpu"), Precision("fp32", "test"))
    singles = [unmirror(runner.estimate(np.ascontiguousarray(mirror(x, v)), 3)[0], v)
               for v in range(views)]
    assert np.abs(singles[0] - singles[1]).max() > 1e-4  # the estimator is not mirror-symmetric
    kernel, code, done = runner.estimate(x, 3, views=views)
    mean = np.mean(singles, 0)
    np.testing.assert_allclose(kernel, mean / mean.sum((-2, -1), keepdims=True), atol=1e-6)
    with torch.inference_mode():
        np.testing.assert_allclose(code, m.network.encode(torch.from_numpy(kernel)).numpy(),
                                   atol=1e-6)
    assert done == 3 and kernel.shape == (1, 21, 21)
    # through super_resolve: the image is restored with that code, the metadata says so
    img = textured(40, 40, seed=2)
    r = napari_dan.super_resolve(img, m, kernel_views=views, iterations=3, **FP32)
    assert r.metadata["kernel_views"] == views
    np.testing.assert_allclose(r.kernel, kernel[0] / kernel[0].sum(), atol=1e-5)


def test_kernel_views_default_and_refusals():
    from dataclasses import replace

    img = textured(40, 40, seed=2)
    photo = tiny_model(seed=5)  # a photo model (bicubic sampling): one view, as before
    assert napari_dan.super_resolve(img, photo, **FP32).metadata["kernel_views"] == 1
    m = replace(photo, info={"provenance": {"config": {"data_kind": "microscopy"}}})
    assert m.sampling == "bin"
    assert napari_dan.super_resolve(img, m, **FP32).metadata["kernel_views"] == 4
    per_tile = napari_dan.super_resolve(img, m, kernel_mode="per-tile", **FP32)
    assert per_tile.metadata["kernel_views"] == 1
    stack = np.stack([img, img.T])
    assert napari_dan.super_resolve(stack, m, kernel_mode="per-plane",
                                    **FP32).metadata["kernel_views"] == 4
    # the authors' checkpoints run as released: one view, the same image as kernel_views=1
    official = replace(m, info={"format": "official"})
    r = napari_dan.super_resolve(img, official, **FP32)
    assert r.metadata["kernel_views"] == 1
    np.testing.assert_array_equal(
        r.image, napari_dan.super_resolve(img, official, kernel_views=1, **FP32).image)
    for bad in (0, 2, 3, 16, True, "all", 4.0, None):
        with pytest.raises(InputError, match="kernel_views must be 'auto' or one of 1, 4, 8"):
            napari_dan.super_resolve(img, m, kernel_views=bad, **FP32)

def test_whole_plane_and_tiled_restorations_agree():
    m = tiny_model(seed=3)
    img = textured(60, 70, seed=1)
    r = napari_dan.super_resolve(img, m, **FP32)
    t = napari_dan.super_resolve(img, m, tile_size=40, **FP32)
    assert agreement(r.image, t.image) >= 0.999


def test_tile_grid_and_window():
    # balanced: the fewest tiles of at most 64 px, all of one size, evenly spaced
    assert tiling.tile_extent(100, 64, 16) == 58 and tiling.tile_starts(100, 64, 16) == [0, 42]
    assert tiling.tile_starts(50, 64, 16) == [0] and tiling.tile_extent(50, 64, 16) == 50
    # 512 px in tiles of at most 416: two of 264 px (full 416-px tiles computed 832 px)
    assert tiling.tile_extent(512, 416, 16) == 264 and tiling.tile_starts(512, 416, 16) == [0, 248]
    for n in range(1, 400):
        for tile, ov in ((16, 0), (40, 16), (64, 16), (100, 24), (256, 40)):
            e, st = tiling.tile_extent(n, tile, ov), tiling.tile_starts(n, tile, ov)
            assert e <= tile and st[0] == 0 and st[-1] + e == n
            assert all(a + e - b >= ov and b > a for a, b in zip(st, st[1:], strict=False))
            # never more work than the old full-size tiles, and near the image itself
            assert len(st) * e <= n + (len(st) - 1) * (ov + 1)
    tiles = tiling.make_tiles(100, 130, 48, 16)
    cover = np.zeros((100, 130), int)
    for t in tiles:
        cover[t.y0:t.y1, t.x0:t.x1] += 1
    assert cover.min() >= 1
    w = tiling.axis_weights(40, True, True, 16)
    assert w[0] < 1e-5 and w[-1] < 1e-5 and w[20] == 1
    assert np.all(np.diff(w[:12]) >= 0)


def test_auto_overlap_grows_with_depth():
    small = tiling.auto_overlap(tiny_model().network)
    deep = tiling.auto_overlap(_deep_tiny().network)
    assert 8 <= small <= deep


# ---------------------------------------------------------------- kernel modes


def test_modes_kernels_and_centres():
    m = tiny_model(seed=2)
    stack = np.stack([textured(70, 90, seed=s) for s in range(3)])
    g = napari_dan.super_resolve(stack, m, **FP32)
    assert g.kernels.shape == (1, 21, 21) and g.kernel_centers.shape == (1, 3)
    assert abs(g.kernel.sum() - 1) < 1e-5
    pp = napari_dan.super_resolve(stack, m, kernel_mode="per-plane", **FP32)
    assert pp.kernels.shape == (3, 21, 21)
    np.testing.assert_array_equal(pp.kernel_centers[:, 0], [0, 1, 2])
    assert not np.allclose(pp.kernels[0], pp.kernels[1])  # different planes, different estimates
    pt = napari_dan.super_resolve(stack, m, kernel_mode="per-tile", tile_size=40, **FP32)
    n = pt.metadata["tiles"]
    assert pt.kernels.shape == (n, 21, 21) and pt.kernel_centers.shape == (n, 3)
    assert pt.kernel_centers[:, 1].max() < 70 and pt.kernel_centers[:, 2].max() < 90
    assert pt.kernel_stats.fwhm > 0 and g.metadata["mode"] == "global"


@pytest.mark.parametrize("mode", ["global", "per-plane", "per-tile"])
def test_building_blocks_are_super_resolve(mode):
    # prepare + restore_plane per plane + finish: the same bytes and kernels as super_resolve,
    # also when the plan goes through pickle and gets its model back (what a cluster worker does)
    import pickle

    from napari_dan.engine import finish, prepare, restore_plane

    m = tiny_model(seed=4)
    stack = np.stack([textured(40, 50, seed=s, dtype=np.uint16, lo=50, hi=3000)
                      for s in range(3)])
    ref = napari_dan.super_resolve(stack, m, kernel_mode=mode, tile_size=24, **FP32)
    plan = prepare(stack, m, kernel_mode=mode, tile_size=24, **FP32)
    assert plan.leads == [(0,), (1,), (2,)]
    assert (plan.estimate is not None) == (mode == "global")
    shipped = pickle.loads(pickle.dumps(plan))
    assert shipped.model is None and shipped.source is None
    assert len(pickle.dumps(plan)) < 10_000  # no weights (the model alone is ~100 kB), no pixels
    with pytest.raises(InputError, match="attach"):
        restore_plane(shipped, (0,), stack[0])
    with pytest.raises(InputError, match="not the model"):
        shipped.attach(tiny_model(scale=4))
    remote = shipped.attach(m)
    out = np.zeros_like(ref.image)
    parts = []
    for lead in plan.leads:
        p = restore_plane(plan, lead) if lead != (1,) else restore_plane(remote, lead, stack[1])
        assert p.lead == lead and p.tiles == 6
        out[plan.layout.plane_index(lead)] = p.plane
        parts.append(p)
    np.testing.assert_array_equal(out, ref.image)
    res = finish(plan, out, parts)
    assert res.image is out
    np.testing.assert_array_equal(res.kernel, ref.kernel)
    np.testing.assert_array_equal(res.kernels, ref.kernels)
    np.testing.assert_array_equal(res.kernel_centers, ref.kernel_centers)
    for key in ("mode", "tiles", "tiles_per_plane", "tile_size", "normalisation"):
        assert res.metadata[key] == ref.metadata[key], key


def test_restore_plane_progress_and_cancel():
    from napari_dan.engine import prepare, restore_plane

    m = tiny_model()
    img = textured(40, 50)
    plan = prepare(img, m, kernel_mode="per-plane", tile_size=24, **FP32)
    seen = []
    restore_plane(plan, (), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 7) for i in range(1, 8)]  # one estimation patch, six tiles
    with pytest.raises(Cancelled):
        restore_plane(plan, (), cancel=lambda: True)


def test_user_kernel_skips_estimator(monkeypatch):
    m = tiny_model(seed=2)

    def boom(*a, **k):
        raise AssertionError("the Estimator must not run with a user kernel")

    monkeypatch.setattr(m.network.Estimator, "forward", boom)
    psf = gaussian_kernel(15, 1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = napari_dan.super_resolve(textured(60, 60), m, kernel=psf, **FP32)
    assert r.metadata["mode"] == "user kernel"
    assert r.metadata["kernel_projection_error"] < 0.2
    assert r.kernel.shape == (21, 21)
    assert abs(r.kernel_stats.sigma_major - 1.5) < 0.3


def test_user_kernel_warns_and_rejects():
    m = tiny_model()
    odd = np.zeros((21, 21))
    odd[2, 18] = 1  # an off-centre delta: nothing like a training kernel
    with pytest.warns(UserWarning, match="projection"):
        napari_dan.super_resolve(textured(40, 40), m, kernel=odd, **FP32)
    with pytest.raises(InputError, match="odd"):
        napari_dan.super_resolve(textured(40, 40), m, kernel=np.ones((4, 4)), **FP32)
    with pytest.raises(InputError, match="odd"):
        napari_dan.super_resolve(textured(40, 40), m, kernel=np.ones(5), **FP32)


def test_patch_selection_prefers_texture():
    x = np.zeros((1, 1, 400, 400), np.float32)
    x[..., 300:380, 20:100] = np.random.default_rng(0).random((80, 80))
    p = select_patches({(): x}, n=1)[0]
    assert p.y1 > 300 and p.x0 < 100


def test_estimation_patch_size_is_read_at_call_time(monkeypatch):
    # benchmarks/speed.py changes ESTIMATION_PATCH to force patch-based estimation; a default
    # argument bound at import time once made that a silent no-op
    assert candidate_patches(100, 100) == [(0, 100, 0, 100)]  # within the budget: whole plane
    monkeypatch.setattr(kernel_modes, "ESTIMATION_PATCH", 32)
    cands = candidate_patches(100, 100)
    assert len(cands) == 16 and all(y1 - y0 == 32 and x1 - x0 == 32 for y0, y1, x0, x1 in cands)
    assert len(select_patches({(): np.random.default_rng(0).random((100, 100))})) == 4
    assert {(p.y1 - p.y0) for p in select_patches({(): np.ones((100, 100))})} == {32}


# ---------------------------------------------------------------- inputs, dtypes, channels


@pytest.mark.parametrize("dtype,lo,hi", [(np.uint8, 0, 255), (np.uint16, 100, 4000),
                                         (np.int16, -300, 900), (np.float16, 0, 2),
                                         (np.float32, 1000, 5000), (np.float64, -1, 1),
                                         (np.int32, 0, 70000)])
def test_dtypes_round_trip(dtype, lo, hi):
    m = tiny_model()
    img = textured(40, 50, dtype=dtype, lo=lo, hi=hi)
    r = napari_dan.super_resolve(img, m, **FP32)
    assert r.image.dtype == np.dtype(dtype) and r.image.shape == (80, 100)
    assert np.all(np.isfinite(r.image.astype(np.float64)))


def test_normalisation_inverts_and_keeps_scale():
    lay = normalize.analyse(np.zeros((30, 30), np.float32), None, 1, 2)
    data = textured(30, 30, dtype=np.float32, lo=1000, hi=5000)[..., None]
    norm = normalize.compute_normalisation(lambda lead: data, lay)
    u = norm.to_unit(data)
    assert -0.05 < u.min() < 0.05 and 0.95 < u.max() < 1.05
    np.testing.assert_allclose(norm.from_unit(u, np.float32), data, rtol=1e-5)
    # integer outputs are clipped to their range, not wrapped
    assert normalize.cast(np.array([-5.0, 70000.0]), np.uint16).tolist() == [0, 65535]


@pytest.mark.parametrize("bad,match", [
    (np.zeros((10, 10), bool), "boolean"),
    (np.array(3.0), "0-d"),
    (np.zeros(10), "1-D"),
    (np.zeros((0, 10)), "empty"),
    (np.zeros((3, 50)), "at least"),
])
def test_bad_inputs(bad, match):
    with pytest.raises(InputError, match=match):
        napari_dan.super_resolve(bad, tiny_model(), **FP32)


def test_nan_inf_and_bad_parameters():
    m = tiny_model()
    for v in (np.nan, np.inf):
        img = np.ones((20, 20), np.float32)
        img[3, 4] = v
        with pytest.raises(InputError, match="NaN or Inf"):
            napari_dan.super_resolve(img, m, **FP32)
    img = textured(20, 20)
    with pytest.raises(InputError, match="kernel_mode"):
        napari_dan.super_resolve(img, m, kernel_mode="local", **FP32)
    with pytest.raises(InputError, match="channel_axis"):
        napari_dan.super_resolve(np.zeros((3, 20, 20), np.uint8), m, channel_axis=5, **FP32)
    with pytest.raises(InputError, match="channel_axis"):
        napari_dan.super_resolve(img, m, channel_axis=0, **FP32)
    with pytest.raises(InputError, match="precision"):
        napari_dan.super_resolve(img, m, precision="fp8")
    with pytest.raises(InputError, match="tile_size"):
        napari_dan.super_resolve(img, m, tile_size=3, **FP32)
    with pytest.raises(InputError, match="cancel"):
        napari_dan.super_resolve(img, m, cancel=5, **FP32)


def test_small_image_runs():
    r = napari_dan.super_resolve(textured(5, 7), tiny_model(), **FP32)
    assert r.image.shape == (10, 14)


def test_rgb_rgba_with_gray_model():
    m = tiny_model(in_nc=1)
    rgb = np.stack([textured(40, 44, seed=s) for s in range(3)], -1)
    r = napari_dan.super_resolve(rgb, m, kernel=gaussian_kernel(21, 1.0), **FP32)
    assert r.image.shape == (80, 88, 3) and "channel by channel" in r.metadata["channels"]
    # channel by channel: the red channel equals the red channel run alone
    red = napari_dan.super_resolve(rgb[..., 0], m, kernel=gaussian_kernel(21, 1.0), **FP32)
    np.testing.assert_array_equal(r.image[..., 0], red.image)
    rgba = np.concatenate([rgb, np.full((40, 44, 1), 200, np.uint8)], -1)
    ra = napari_dan.super_resolve(rgba, m, kernel=gaussian_kernel(21, 1.0), **FP32)
    assert ra.image.shape == (80, 88, 4) and np.all(ra.image[..., 3] == 200)
    np.testing.assert_array_equal(ra.image[..., :3], r.image)
    assert "alpha" in ra.metadata["channels"]


def test_rgb_model_on_gray_and_multichannel():
    m = tiny_model(in_nc=3)
    g = napari_dan.super_resolve(textured(30, 40), m, **FP32)
    assert g.image.shape == (60, 80) and "replicated" in g.metadata["channels"]
    mc = np.stack([textured(30, 40, seed=s, dtype=np.uint16, lo=0, hi=3000 * (s + 1))
                   for s in range(2)])
    r = napari_dan.super_resolve(mc, m, channel_axis=0, **FP32)
    assert r.image.shape == (2, 60, 80) and r.metadata["normalisation"]["method"].find(
        "per channel") > 0
    # channels normalised independently: the bright channel stays brighter
    assert r.image[1].mean() > 1.5 * r.image[0].mean()


def test_channel_axis_in_the_middle_of_a_stack():
    m = tiny_model(in_nc=1)
    zcyx = np.stack([np.stack([textured(24, 28, seed=z * 2 + c) for c in range(2)])
                     for z in range(3)])
    r = napari_dan.super_resolve(zcyx, m, channel_axis=1, kernel_mode="per-plane", **FP32)
    assert r.image.shape == (3, 2, 48, 56) and r.kernels.shape == (3, 21, 21)


def test_danv1_runs():
    m = tiny_model(architecture="DANv1", in_nc=3)
    r = napari_dan.super_resolve(np.stack([textured(30, 30, seed=s) for s in range(3)], -1), m,
                                 **FP32)
    assert r.image.shape == (60, 60, 3) and abs(r.kernel.sum() - 1) < 1e-5


# ---------------------------------------------------------------- progress, cancel, out, OOM


def test_progress_and_iter():
    m = tiny_model()
    seen = []
    gen = core.super_resolve_iter(textured(100, 100), m, tile_size=40, progress=lambda d, t:
                                  seen.append((d, t)), **FP32)
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert steps == seen and steps[-1][0] == steps[-1][1] == result.metadata["steps"]
    assert [d for d, _ in steps] == list(range(1, len(steps) + 1))
    assert isinstance(result, napari_dan.SRResult)


def test_cancel_leaves_only_complete_planes():
    m = tiny_model()
    stack = np.stack([textured(60, 60, seed=s) for s in range(3)])
    out = np.full((3, 120, 120), 7, np.uint8)
    ev = threading.Event()
    n_per_plane = []

    def progress(done, total):
        n_per_plane.append(done)
        if done == 9:  # 3 estimation patches (one per plane), 4 tiles per plane: in plane 2
            ev.set()

    with pytest.raises(Cancelled, match="1 complete plane"):
        napari_dan.super_resolve(stack, m, tile_size=40, out=out, progress=progress, cancel=ev,
                                 **FP32)
    ref = napari_dan.super_resolve(stack[:1], m, tile_size=40, **FP32).image[0]
    assert np.any(out[0] != 7) and np.all(out[1] == 7) and np.all(out[2] == 7)
    assert agreement(out[0], ref, 1) > 0.999
    with pytest.raises(Cancelled):
        napari_dan.super_resolve(stack, m, cancel=lambda: True, **FP32)


def test_out_memmap(tmp_path):
    m = tiny_model()
    stack = np.stack([textured(30, 30, seed=s, dtype=np.uint16, lo=0, hi=999) for s in range(2)])
    mm = np.lib.format.open_memmap(tmp_path / "o.npy", "w+", np.uint16, (2, 60, 60))
    r = napari_dan.super_resolve(stack, m, out=mm, **FP32)
    assert r.image is mm
    ref = napari_dan.super_resolve(stack, m, **FP32).image
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), ref)
    with pytest.raises(InputError, match="out has shape"):
        napari_dan.super_resolve(stack, m, out=np.zeros((2, 30, 30), np.uint16), **FP32)
    with pytest.raises(InputError, match="dtype"):
        napari_dan.super_resolve(stack, m, out=np.zeros((2, 60, 60), np.uint8), **FP32)


def test_oom_halves_tiles_then_reports(monkeypatch):
    m = tiny_model()
    img = textured(128, 128)
    real = restoration.run_tile
    sizes = []

    def fake(runner, x, code, *rounds):
        sizes.append(max(x.shape[-2:]))
        if max(x.shape[-2:]) > 40:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(runner, x, code, *rounds)

    monkeypatch.setattr(restoration, "run_tile", fake)
    psf = gaussian_kernel(21, 1.2)  # no estimation: every network call is a tile
    r = napari_dan.super_resolve(img, m, tile_size=128, kernel=psf, **FP32)
    assert [e["tile_size"] for e in r.metadata["oom_retries"]] == [64, 32]
    assert r.metadata["tile_size"] == 32
    monkeypatch.setattr(restoration, "run_tile", real)
    ref = napari_dan.super_resolve(img, m, tile_size=128, kernel=psf, **FP32)
    assert agreement(r.image, ref.image) >= 0.999

    def always(runner, x, code, *rounds):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(restoration, "run_tile", always)
    with pytest.raises(devices.OutOfMemory, match="even with"):
        napari_dan.super_resolve(img, m, tile_size=128, kernel=psf, **FP32)

    def other(runner, x, code, *rounds):
        raise RuntimeError("something else")

    monkeypatch.setattr(restoration, "run_tile", other)
    with pytest.raises(RuntimeError, match="something else"):
        napari_dan.super_resolve(img, m, tile_size=128, kernel=psf, **FP32)


# ---------------------------------------------------------------- devices


def test_device_and_precision_choice(monkeypatch):
    assert devices.resolve_device("auto").type in ("cuda", "mps", "cpu")
    assert devices.resolve_device("cpu").type == "cpu"
    with pytest.raises(InputError):
        devices.resolve_device("tpu")
    net = tiny_model().network
    cpu = torch.device("cpu")
    assert devices.resolve_precision("fp32", cpu, net).name == "fp32"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.resolve_precision("auto", cpu, net).name == "fp32"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(devices, "bf16_accurate_on_cpu", lambda n, runtime="torch": False)
    assert devices.resolve_precision("auto", cpu, net).name == "fp32"
    monkeypatch.setattr(devices, "bf16_accurate_on_cpu", lambda n, runtime="torch": True)
    assert devices.resolve_precision("auto", cpu, net).name == "bf16"


def test_bf16_check_is_cached():
    net = tiny_model().network
    a = devices.bf16_accurate_on_cpu(net)
    assert devices._BF16_OK[net] == {"torch": a}
    assert devices.is_oom(torch.OutOfMemoryError("x")) and not devices.is_oom(ValueError("x"))


# ---------------------------------------------------------------- dask, zarr, memory


def test_dask_input_gives_lazy_output():
    da = pytest.importorskip("dask.array")
    m = tiny_model()
    stack = np.stack([textured(50, 60, seed=s) for s in range(3)])
    lazy = da.from_array(stack, chunks=(2, 25, 30))
    r = napari_dan.super_resolve(lazy, m, **FP32)
    assert isinstance(r.image, da.Array) and r.metadata["lazy"]
    assert r.image.shape == (3, 100, 120) and r.image.chunks[0] == (1, 1, 1)
    eager = napari_dan.super_resolve(stack, m, **FP32)
    np.testing.assert_array_equal(r.kernel, eager.kernel)
    np.testing.assert_array_equal(r.image[1].compute(), eager.image[1])
    np.testing.assert_array_equal(r.image.compute(), eager.image)
    pp = napari_dan.super_resolve(lazy, m, kernel_mode="per-plane", **FP32)
    assert pp.kernels.shape == (3, 21, 21) and isinstance(pp.image, da.Array)
    pt = napari_dan.super_resolve(lazy, m, kernel_mode="per-tile", **FP32)
    assert isinstance(pt.image, np.ndarray)


def test_zarr_input_and_output():
    zarr = pytest.importorskip("zarr")
    m = tiny_model()
    stack = np.stack([textured(30, 30, seed=s) for s in range(2)])
    z = zarr.array(stack, chunks=(1, 30, 30))
    o = zarr.zeros((2, 60, 60), dtype=np.uint8, chunks=(1, 60, 60))
    napari_dan.super_resolve(z, m, out=o, **FP32)
    np.testing.assert_array_equal(o[:], napari_dan.super_resolve(stack, m, **FP32).image)


@pytest.mark.slow
def test_peak_memory_2048_uint16(tmp_path):
    # in a fresh process: peak RSS added by one 2048x2048 uint16 plane at x2 (output 32 MB)
    code = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        import numpy as np
        from conftest import tiny_model
        import napari_dan
        m = tiny_model()
        img = (np.random.default_rng(0).random((2048, 2048)) * 4000).astype(np.uint16)
        napari_dan.super_resolve(img[:64, :64], m, precision="fp32")  # warm up torch
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r = napari_dan.super_resolve(img, m, precision="fp32")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) / 1024, r.metadata["tile_size"], r.image.shape)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    added_mb, tile, shape = res.stdout.split(maxsplit=2)
    print(f"peak RSS added: {float(added_mb):.0f} MB (tile {tile})")
    assert float(added_mb) < 1500


def test_each_plane_of_a_stack_is_mapped_by_its_own_range():
    # a z-stack whose focus is 50x brighter than its other planes: each plane is seen (and
    # restored) as if it were run alone, in every kernel mode, and the metadata lists the maps
    m = tiny_model(seed=5)
    stack = np.stack([textured(24, 28, seed=s, dtype=np.uint16, lo=100, hi=100 + f)
                      for s, f in enumerate((60, 3000, 60))])
    res = napari_dan.super_resolve(stack, m, kernel_mode="per-plane", **FP32)
    for z in range(3):
        alone = napari_dan.super_resolve(stack[z], m, **FP32)
        np.testing.assert_array_equal(res.image[z], alone.image)
        np.testing.assert_allclose(res.kernels[z], alone.kernel, atol=1e-6)
    norm = res.metadata["normalisation"]
    assert "each plane" in norm["method"] and norm["per_plane"]["planes"] == [[0], [1], [2]]
    assert norm["per_plane"]["high"][1][0] > norm["per_plane"]["high"][0][0] + 1000
    # one kernel for the stack (known here): the dim planes are still restored as if alone,
    # not squeezed into a fiftieth of the unit range by the bright one
    k = gaussian_kernel(m.kernel_size, 1.5)
    g = napari_dan.super_resolve(stack, m, kernel=k, **FP32)
    assert "each plane" in g.metadata["normalisation"]["method"]
    for z in range(3):
        np.testing.assert_array_equal(g.image[z], napari_dan.super_resolve(stack[z], m, kernel=k,
                                                                           **FP32).image)
    # global (blind) mode: one kernel, each plane its own map
    b = napari_dan.super_resolve(stack, m, **FP32)
    assert b.metadata["normalisation"]["per_plane"]["planes"] == [[0], [1], [2]]


def test_a_channel_axis_given_to_a_grey_model_means_independent_channels():
    # (Y, X, 3) with channel_axis=-1 through a 1-channel model: three images, each with its own
    # map, as in (3, Y, X) with channel_axis=0 (not one RGB map that squeezes the dim channel)
    m = tiny_model(seed=5)
    base = textured(24, 28, seed=3, dtype=np.uint16, lo=100, hi=400).astype(np.float64)
    yxc = np.stack([base * 20, base * 5, base / 5], -1).astype(np.uint16)
    a = napari_dan.super_resolve(yxc, m, channel_axis=-1, **FP32)
    b = napari_dan.super_resolve(np.moveaxis(yxc, -1, 0), m, channel_axis=0, **FP32)
    assert "per channel" in a.metadata["normalisation"]["method"]
    np.testing.assert_allclose(a.image, np.moveaxis(b.image, 0, -1), atol=1)
    # four channels given as an axis: all four through the network (no alpha)
    four = np.concatenate([yxc, yxc[..., :1]], -1)
    r = napari_dan.super_resolve(four, m, channel_axis=-1, **FP32)
    assert "alpha" not in r.metadata["channels"] and "4 channels" in r.metadata["channels"]
    np.testing.assert_array_equal(r.image[..., 3], r.image[..., 0])
    # found by itself, a last axis of 4 is still RGBA (napari's reading)
    assert "alpha" in napari_dan.super_resolve(four.astype(np.uint8), m, **FP32).metadata[
        "channels"]


def test_microscopy_models_stretch_8bit_input_photo_models_do_not():
    img = textured(24, 28, seed=1, dtype=np.uint8, lo=2, hi=40)  # a dim 8-bit recording
    photo = tiny_model(seed=6)
    micro = tiny_model(seed=6)
    micro.info["provenance"] = {"config": {"data_kind": "microscopy"}}
    assert photo.sampling == "bicubic" and micro.sampling == "bin"
    a = napari_dan.super_resolve(img, photo, **FP32).metadata["normalisation"]
    b = napari_dan.super_resolve(img, micro, **FP32).metadata["normalisation"]
    assert a["method"] == "uint8/255" and a["high"] == [255.0]
    assert b["method"].startswith("percentiles") and b["high"][0] <= 40


# ---------------------------------------------------------------- kernel range report


def _with_training(model, **config):
    from dataclasses import replace

    return replace(model, info={"provenance": {"config": config}})


def test_trained_range_comes_from_the_training_record():
    m = tiny_model()
    assert m.trained_fwhm_range is None  # no record (like the authors' checkpoints)
    micro = _with_training(m, data_kind="microscopy", psf_fwhm_range=[1.6, 10.5])
    assert micro.sampling == "bin" and micro.trained_fwhm_range == (1.6, 10.5)
    photo = _with_training(m, sigma_range=[0.2, 3.0])
    lo, hi = photo.trained_fwhm_range
    assert lo == pytest.approx(0.471, abs=1e-3) and hi == pytest.approx(7.064, abs=1e-3)


def test_kernel_report_flags_both_ends_of_the_trained_range():
    from napari_dan.engine.result import kernel_report
    from napari_dan.model.kernels import kernel_stats

    micro = _with_training(tiny_model(), data_kind="microscopy", psf_fwhm_range=[1.6, 10.5])
    ks = np.stack([gaussian_kernel(21, s) for s in (0.6, 1.5, 1.7, 3.9)])
    fw = [kernel_stats(k).fwhm for k in ks]
    assert fw[0] < 2.0 < fw[1] < fw[2] < 8.9 < fw[3]  # 1.25 x 1.6 and 0.85 x 10.5
    r = kernel_report(ks, micro, "planes")
    assert (r["count"], r["near_narrow_end"], r["near_wide_end"]) == (4, 1, 1)
    assert r["min"] == pytest.approx(fw[0]) and r["max"] == pytest.approx(fw[3])
    assert r["median"] == pytest.approx(np.median(fw))
    assert "1 of 4 planes are at the wide end" in r["warning"] and "narrow end" in r["warning"]
    assert kernel_report(ks[1:3], micro)["warning"] is None
    one = kernel_report(ks[3:], micro)
    assert one["warning"].startswith("the estimate is at the wide end")
    # a photo model: a narrow kernel means a sharp image, no warning; no range, no verdict
    photo = _with_training(tiny_model(), sigma_range=[0.2, 3.0])
    assert kernel_report(ks[:1], photo)["warning"] is None
    assert "warning" not in kernel_report(ks, tiny_model())


def test_per_plane_runs_report_their_kernels_spread():
    m = tiny_model(seed=2)
    stack = np.stack([textured(40, 44, seed=s) for s in range(3)])
    r = napari_dan.super_resolve(stack, m, kernel_mode="per-plane", **FP32)
    spread = r.metadata["kernel_fwhm"]
    assert spread["count"] == 3 and spread["what"] == "planes"
    assert spread["min"] <= spread["median"] <= spread["max"]
    g = napari_dan.super_resolve(stack, m, **FP32).metadata["kernel_fwhm"]
    assert g["count"] == 1 and g["what"] == "kernels"
    assert "kernel_fwhm" not in napari_dan.super_resolve(
        stack[0], m, kernel=gaussian_kernel(21, 1.0), **FP32).metadata


def test_kernel_report_warns_about_noisy_fields_for_microscopy_models_only():
    from napari_dan.engine.result import LOW_SNR, kernel_report

    micro = _with_training(tiny_model(), data_kind="microscopy", psf_fwhm_range=[1.6, 10.5])
    ks = np.stack([gaussian_kernel(21, 1.5)] * 3)  # mid-range: no edge warnings
    quiet = kernel_report(ks, micro, "planes", [80.0, 45.0, 300.0])
    assert quiet["warning"] is None and quiet["low_snr"] == 0
    assert quiet["snr_min"] == 45.0 and quiet["snr_median"] == 80.0
    assert quiet["snr"] == [80.0, 45.0, 300.0]  # kernel order
    r = kernel_report(ks, micro, "planes", [80.0, LOW_SNR - 1, 6.0])
    assert r["low_snr"] == 2
    assert r["warning"].startswith("2 of 3 planes come from noisy fields (signal-to-noise "
                                   "below 20, lowest 6): noise biases their blind estimates")
    one = kernel_report(ks[:1], micro, snrs=[12.0])
    assert one["warning"].startswith("the image is noisy (signal-to-noise 12, below 20): noise "
                                     "biases the blind estimate")
    # noisy fields rarely hold enough bright spots for the spots PSF: a brighter image is named
    assert one["warning"].endswith("(a brighter image of beads, if this one has too few) is "
                                   "the better reference")
    edge = kernel_report(gaussian_kernel(21, 0.4)[None], micro, snrs=[300.0])
    assert edge["warning"].endswith("; a PSF measured from isolated spots is the better reference")
    # a photo model reports the ratio but gives no verdict; without a ratio for every kernel
    # there is no ratio at all
    photo = _with_training(tiny_model(), sigma_range=[0.2, 3.0])
    p = kernel_report(ks[:1], photo, snrs=[5.0])
    assert p["snr_min"] == 5.0 and p["warning"] is None
    assert "snr_min" not in kernel_report(ks, micro, "planes", [80.0, None, 9.0])
    assert "snr_min" not in kernel_report(ks, micro, "planes", [80.0])


def test_every_kernel_mode_reports_the_signal_to_noise_of_its_fields():
    from napari_dan.imaging.camera import signal_to_noise

    m = tiny_model(seed=2)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:44]
    smooth = 100 + 50 * np.sin(xx / 5.0 + yy / 9.0) * np.cos(yy / 4.0)
    clean = np.stack([smooth, smooth[::-1]]).astype(np.float32)
    noisy = clean.copy()
    noisy[1] += rng.normal(0, 10.0, noisy[1].shape).astype(np.float32)
    g = napari_dan.super_resolve(clean[0], m, **FP32).metadata["kernel_fwhm"]
    assert g["snr_median"] == pytest.approx(signal_to_noise(clean[0]), rel=1e-3)
    pp = napari_dan.super_resolve(noisy, m, kernel_mode="per-plane", **FP32)
    spread = pp.metadata["kernel_fwhm"]
    assert spread["snr_min"] == pytest.approx(signal_to_noise(noisy[1]), rel=1e-3)
    assert signal_to_noise(noisy[1]) < 20 < signal_to_noise(noisy[0])
    import dask.array as da

    lazy = napari_dan.super_resolve(da.from_array(noisy, chunks=(1, 40, 44)), m,
                                    kernel_mode="per-plane", **FP32)
    assert lazy.metadata["kernel_fwhm"]["snr_min"] == pytest.approx(spread["snr_min"])
    t = napari_dan.super_resolve(clean[0], m, kernel_mode="per-tile", tile_size=24,
                                 tile_overlap=4, **FP32).metadata["kernel_fwhm"]
    assert t["what"] == "tiles" and t["count"] > 1 and 0 < t["snr_min"] <= t["snr_median"]
    assert "snr_min" not in (napari_dan.super_resolve(
        clean[0], m, kernel=gaussian_kernel(21, 1.0), **FP32).metadata.get("kernel_fwhm") or {})


def test_spots_wider_than_the_trained_range_or_far_from_the_blind_estimate_get_a_note():
    from napari_dan.engine.result import spots_note

    micro = _with_training(tiny_model(), data_kind="microscopy", psf_fwhm_range=[1.6, 10.5])
    assert spots_note(8.3, micro) is None
    note = spots_note(16.0, micro, blind_fwhm=7.9)
    assert "(16.0 px)" in note and "up to 10.5 px" in note
    assert spots_note(16.0, tiny_model()) is None  # no training record, no blind: no verdict
    # within the range: a note only when the two disagree by more than 1.25x either way
    assert spots_note(8.3, micro, blind_fwhm=7.5) is None
    assert spots_note(8.3, micro, blind_fwhm=10.0) is None
    note = spots_note(8.3, micro, blind_fwhm=5.1)
    assert "1.63x the blind estimate (5.1 px)" in note and "--psf spots" in note
    assert "0.50x" in spots_note(4.0, tiny_model(), blind_fwhm=8.0)
    # the same width but an elongated PSF beside the round blind kernel: beads come out stretched
    note = spots_note(8.3, micro, blind_fwhm=7.5, spots_anisotropy=1.32)
    assert "elongated (1.32x" in note and "'PSF from spots'" in note
    assert spots_note(8.3, micro, blind_fwhm=7.5, spots_anisotropy=1.1) is None


def test_a_tile_too_small_for_the_overlap_warns_of_seams():
    from napari_dan.engine import prepare

    m = tiny_model(seed=2)
    img = textured(60, 64)
    wanted = prepare(img, m, tile_size=1024, **FP32).overlap
    tile = 2 * wanted + 6  # 2 px short of the core a tile needs
    assert tile >= 16, wanted  # the smallest tile_size the engine takes
    with pytest.warns(UserWarning, match="seams may show"):
        napari_dan.super_resolve(img, m, tile_size=tile, **FP32)
    with warnings.catch_warnings():  # one tile: nothing to warn of
        warnings.simplefilter("error")
        napari_dan.super_resolve(img[:tile - 2, :tile - 2], m, tile_size=tile, **FP32)


def test_a_wide_psf_warns_once_and_names_the_kernel_actually_used():
    # a PSF far wider than the trained range: one warning, which also says that the model uses
    # its projection (a different width), so the reported kernel is not a surprise
    m = napari_dan.load_model("dan-x2-fluo")
    k = gaussian_kernel(45, 17.0 / 2.3548)  # FWHM 17 px
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        r = napari_dan.super_resolve(textured(32, 32, dtype=np.uint16, hi=3000), m, kernel=k,
                                     **FP32)
    msgs = [str(w.message) for w in got if issubclass(w.category, UserWarning)]
    wide = [t for t in msgs if "wider than any PSF" in t]
    assert len(wide) == 1 and "projection" in wide[0], msgs
    used = float(wide[0].rsplit("reads ", 1)[1].split(" px")[0])
    assert abs(used - r.kernel_stats.fwhm) < 0.01 and abs(used - 17.0) > 1
    assert not any("far from what the model knows" in t for t in msgs)


def test_a_colour_model_on_a_grey_image_says_which_models_are_made_for_it():
    # the widget, the CLI and scripts get the same warning from the engine; colour input none
    m = tiny_model(in_nc=3, seed=1)
    grey = textured(32, 32, dtype=np.uint16, hi=3000)
    with pytest.warns(UserWarning, match="the image is grey and .* model of colour photographs"):
        napari_dan.super_resolve(grey, m, **FP32)
    with pytest.warns(UserWarning, match="has 2 channels, each run as a grey image"):
        napari_dan.super_resolve(np.stack([grey, grey]), m, channel_axis=0, **FP32)
    rgb = np.stack([textured(32, 32, seed=s) for s in range(3)], axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        napari_dan.super_resolve(rgb, m, **FP32)
        napari_dan.super_resolve(grey, tiny_model(in_nc=1, seed=1), **FP32)


def test_a_short_last_axis_is_read_as_x_with_a_warning():
    m = tiny_model(seed=1)
    img = textured(64, 64 * 5, dtype=np.uint16).reshape(64, 64, 5)
    with pytest.warns(UserWarning, match="pass channel_axis=-1"):
        r = napari_dan.super_resolve(img, m, **FP32)
    assert r.image.shape == (64, 128, 10)  # read as 64 planes of 64 x 5, as the axes rule says
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert napari_dan.super_resolve(img, m, channel_axis=-1, **FP32).image.shape == \
            (128, 128, 5)


def test_a_blind_estimate_that_says_little_warns_python_callers():
    # the range / noise note reached only the widget and the CLI; a script got nothing
    from napari_dan.errors import EstimateWarning

    m = napari_dan.load_model("dan-x2-fluo")
    img = (100 + np.random.default_rng(0).poisson(5, (64, 64))).astype(np.uint16)  # noise only
    with pytest.warns(EstimateWarning, match="noise biases the blind estimate") as got:
        r = napari_dan.super_resolve(img, m, **FP32)
    assert str([w for w in got if w.category is EstimateWarning][0].message) == \
        r.metadata["kernel_fwhm"]["warning"]
