"""Engine speed and the global-mode quality check.

Speed: LR pixels per second of (1) the plain whole-image ``network(lr)`` (all iterations, no
tiling), (2) ``super_resolve`` in global mode, (3) per-tile mode (the full loop on every tile, the
same tiles as global mode), with the peak RSS, at several sizes. Every measurement runs in a fresh
process so that its peak RSS is its own. The plain forward is skipped where its activations would
not fit comfortably (estimated > ``--plain-max-gb``); per-tile mode above ``--per-tile-max`` (it
takes long); both are said in the table.

Quality: Y-PSNR of global mode against the plain whole-image forward on Set5/Set14 Gaussian8 x4
inputs (HR mod-cropped, 21x21 Gaussian, sigma linspace(1.8, 3.2, 8), MATLAB-bicubic downsample,
8-bit; by default only the two end sigmas, ``--sigmas 8`` for all), made with
``napari_dan.training.degradations``; border of s pixels cropped. Two global variants: the
default (automatic precision; these small images are estimated from the whole image), and
fp32 with estimation forced onto four 32x32 patches (what larger images get).

Model: the bundled default model if present, else an untrained compact DANv2 (nf 32, nb 4, ng 2,
est_nf 32, est_nb 2, x4, RGB), which measures speed faithfully but not quality.

Run (results go to stdout as Markdown)::

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "data" / "bench"


def get_model():
    import napari_dan
    from napari_dan.model import DEFAULT_MODEL, create_model

    names = [m["name"] for m in napari_dan.list_models()]
    if DEFAULT_MODEL in names:
        return napari_dan.load_model(DEFAULT_MODEL), f"bundled {DEFAULT_MODEL}"
    if names:
        return napari_dan.load_model(names[0]), f"bundled {names[0]}"
    # a 3000-kernel PCA keeps model creation from dominating the peak RSS; speed is unaffected
    m = create_model("DANv2", nf=32, nb=4, ng=2, scale=4, est_nf=32, est_nb=2, seed=0,
                     pca_samples=3000)
    return m, "untrained compact DANv2 (nf 32, nb 4, ng 2, est 32/2, x4, RGB; no bundled model yet)"


def test_image(size: int, in_nc: int) -> np.ndarray:
    """Deterministic textured uint8 image (size x size [x 3])."""
    rng = np.random.default_rng(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    chans = []
    for c in range(in_nc):
        img = 0.5 + 0.25 * np.sin(xx / (7 + c) + yy / 13) * np.cos(yy / (5 + c))
        img += 0.1 * rng.standard_normal((size, size), dtype=np.float32)
        chans.append(img)
    img = np.stack(chans, -1) if in_nc == 3 else chans[0]
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(method: str, size: int, precision: str) -> dict:
    """Run one measurement in this process; returns seconds, RSS and details."""
    import napari_dan
    from napari_dan.engine.devices import autocast, resolve_device, resolve_precision

    model, _ = get_model()
    img = test_image(size, model.in_channels)
    dev = resolve_device("cpu")
    prec = resolve_precision(precision, dev, model.network)
    # warm up (allocator, kernels, the bf16 check) on a small image, then take the baseline
    napari_dan.super_resolve(img[:48, :48], model, precision=precision, device="cpu")
    import gc

    gc.collect()
    base = rss_mb()
    info: dict = {}
    t0 = time.perf_counter()
    if method == "plain":
        x = torch.from_numpy(img.astype(np.float32) / 255)
        x = (x.permute(2, 0, 1) if x.ndim == 3 else x[None])[None]
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(dev, prec):
            model.network(x)
    else:
        mode = "global" if method == "global" else "per-tile"
        # per-tile mode gets the tiles global mode chooses, so the two differ only in the loop
        from napari_dan.engine.devices import memory_budget
        from napari_dan.engine.tiling import auto_overlap, auto_tile_size

        tile = auto_tile_size(model.network, 1, memory_budget(dev), auto_overlap(model.network),
                              full_loop=False)
        r = napari_dan.super_resolve(img, model, kernel_mode=mode, tile_size=tile,
                                     precision=precision, device="cpu")
        info = {"tile": r.metadata["tile_size"], "overlap": r.metadata["tile_overlap"],
                "tiles": r.metadata["tiles"], "estimate_s": r.metadata["timing"]["estimate_s"]}
    dt = time.perf_counter() - t0
    return {"method": method, "size": size, "seconds": dt, "px_per_s": size * size / dt,
            "peak_rss_mb": rss_mb(), "added_mb": rss_mb() - base, "precision": prec.name, **info}


def plain_gb(model, size: int) -> float:
    """Rough peak memory (GB) of the whole-image forward (0.77 GB measured at 512x512 for the
    compact x4 model in bf16, i.e. about 4 * nf * (8 + s^2) bytes per LR pixel)."""
    nf = model.network.Restorer.head1.out_channels if hasattr(model.network.Restorer, "head1") \
        else model.network.Restorer.head.out_channels
    s = model.scale
    return 4 * size * size * nf * (8 + s * s) / 1e9


def run_speed(args) -> list[dict]:
    model, _ = get_model()
    rows = []
    for size in args.sizes:
        for method in ("plain", "global", "per-tile"):
            if method == "plain" and plain_gb(model, size) > args.plain_max_gb:
                rows.append({"method": method, "size": size, "skipped":
                             f"needs ~{plain_gb(model, size):.0f} GB of activations"})
                continue
            if method == "per-tile" and size > args.per_tile_max:
                rows.append({"method": method, "size": size, "skipped":
                             f"above --per-tile-max {args.per_tile_max} (takes long)"})
                continue
            cmd = [sys.executable, __file__, "--one", method, str(size), "--precision",
                   args.precision]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                rows.append({"method": method, "size": size,
                             "skipped": "failed: " + res.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def gaussian8_inputs(scale: int = 4, n_sigmas: int = 8):
    from skimage.io import imread

    from napari_dan.model.kernels import gaussian_kernel
    from napari_dan.training.degradations import degrade

    sigmas = np.linspace(1.8, 3.2, 8)
    # a subset keeps the default run short: evenly spaced, always both ends
    sigmas = sigmas[np.unique(np.rint(np.linspace(0, 7, max(1, min(n_sigmas, 8)))).astype(int))]
    for ds in ("Set5", "Set14"):
        for p in sorted((BENCH / ds).glob("*.png")):
            hr = imread(p)
            if hr.ndim == 2:
                hr = np.stack([hr] * 3, -1)
            hr = hr[..., :3]
            h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
            hr = hr[:h, :w].astype(np.float64) / 255
            for sig in sigmas:
                lr = degrade(hr, gaussian_kernel(21, float(sig)), scale)
                yield ds, p.stem, float(sig), hr, np.clip(np.rint(lr * 255), 0, 255).astype(np.uint8)


def run_quality(args) -> dict:
    import napari_dan
    from napari_dan.engine import kernels as km
    from napari_dan.training.metrics import y_psnr

    model, _ = get_model()
    s = model.scale
    per: dict[str, list] = {"plain": [], "global": [], "global_patches": []}
    t0 = time.perf_counter()
    for _ds, _name, _sig, hr, lr in gaussian8_inputs(s, args.sigmas):
        x = torch.from_numpy(lr.astype(np.float32) / 255).permute(2, 0, 1)[None]
        with torch.inference_mode():
            sr, _ = model.network(x.contiguous(memory_format=torch.channels_last))
        plain = np.clip(np.rint(sr[0].permute(1, 2, 0).numpy() * 255), 0, 255) / 255
        g = napari_dan.super_resolve(lr, model, device="cpu").image / 255
        saved = km.ESTIMATION_PATCH
        km.ESTIMATION_PATCH = 32
        try:
            gp = napari_dan.super_resolve(lr, model, device="cpu", precision="fp32").image / 255
        finally:
            km.ESTIMATION_PATCH = saved
        per["plain"].append(y_psnr(plain, hr, s))
        per["global"].append(y_psnr(g, hr, s))
        per["global_patches"].append(y_psnr(gp, hr, s))
    out = {k: float(np.mean(v)) for k, v in per.items()}
    out["n"] = len(per["plain"])
    out["sigmas"] = args.sigmas
    out["max_abs_diff_global"] = float(np.max(np.abs(np.subtract(per["global"], per["plain"]))))
    out["max_abs_diff_patches"] = float(np.max(np.abs(np.subtract(per["global_patches"],
                                                                  per["plain"]))))
    out["seconds"] = time.perf_counter() - t0
    return out


def markdown(rows: list[dict], quality: dict | None, args, model_desc: str) -> str:
    lines = []
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines.append(f"Model: {model_desc}. CPU: {cpu}, torch {torch.__version__}, "
                 f"{torch.get_num_threads()} thread(s) (OMP_NUM_THREADS="
                 f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), precision {args.precision}.")
    lines.append("")
    lines.append("| LR size | method | time (s) | of which estimation (s) | LR Mpx/s | "
                 "peak RSS (MB) | added RSS (MB) | precision | tile / overlap / tiles |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        size = f"{r['size']}x{r['size']}"
        if "skipped" in r:
            lines.append(f"| {size} | {r['method']} | skipped: {r['skipped']} | | | | | | |")
            continue
        tiles = f"{r['tile']} / {r['overlap']} / {r['tiles']}" if "tile" in r else "whole image"
        est = f"{r['estimate_s']:.1f}" if r.get("estimate_s") else ""
        lines.append(f"| {size} | {r['method']} | {r['seconds']:.1f} | {est} | "
                     f"{r['px_per_s'] / 1e6:.3f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['added_mb']:.0f} | {r['precision']} | {tiles} |")
    speed = {(r["method"], r["size"]): r for r in rows if "skipped" not in r}
    lines.append("")
    for size in args.sizes:
        g, t = speed.get(("global", size)), speed.get(("per-tile", size))
        if g and t:
            lines.append(f"- {size}x{size}: global mode is {g['px_per_s'] / t['px_per_s']:.1f}x "
                         "the throughput of per-tile mode.")
    if quality:
        lines.append("")
        lines.append(f"Global mode vs the plain whole-image forward, Set5+Set14 Gaussian8 x4, "
                     f"{quality['n']} inputs ({quality['sigmas']} of the 8 sigmas; mean Y-PSNR, dB): plain fp32 "
                     f"{quality['plain']:.3f}; global (auto precision) {quality['global']:.3f} "
                     f"(largest per-image difference {quality['max_abs_diff_global']:.3f} dB); "
                     f"global fp32 estimated from four 32x32 patches "
                     f"{quality['global_patches']:.3f} (largest per-image difference "
                     f"{quality['max_abs_diff_patches']:.3f} dB). {quality['seconds']:.0f} s.")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024, 2048],
                    help="LR sizes to time (none: only the quality check)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--per-tile-max", type=int, default=1024)
    ap.add_argument("--plain-max-gb", type=float, default=8.0)
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--sigmas", type=int, default=2,
                    help="how many of the 8 Gaussian8 sigmas to use (8 = the full protocol)")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.precision)))
        return
    _, desc = get_model()
    rows = run_speed(args)
    quality = None if args.no_quality or not BENCH.exists() else run_quality(args)
    print(markdown(rows, quality, args, desc))


if __name__ == "__main__":
    main()
