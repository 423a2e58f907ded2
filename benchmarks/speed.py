"""Engine speed on the CPU, and the global-mode quality check.

Speed, in one run on the same deterministic image, for each model (default: every bundled one) and
LR size (default 512, 1024, 2048), each measurement in a fresh process so that its peak RSS is its
own:

- ``restorer``: the raw Restorer pass, ``network.restore(x, code)`` once on the whole image
  (channels_last, the engine's precision): what one network pass costs without any engine;
- ``global``: ``super_resolve`` in global mode (estimation on a few patches, then every tile once);
- ``per-tile``: ``super_resolve`` in per-tile mode (the full loop on every tile);
- ``global-compiled`` (with ``--compiled``): global mode with ``compiled=True``, compilation
  included (each measurement is a fresh process);
- ``global-openvino`` (with ``--openvino``): global mode with ``runtime="openvino"`` (the
  network's conversion, about a second once per process, is done in the warm-up, as PyTorch's
  first-call costs are);
- ``global-itN`` (with ``--iterations N``): global mode with ``iterations=N`` rounds of the
  estimation loop instead of the model's default (fewer rounds: faster, approximate;
  ``benchmarks/iterations.py`` measures what they cost in quality);
- ``convs``: every convolution of the Restorer alone, on inputs of the shapes the Restorer gives it
  at this size, timed one by one and summed: the practical limit of a Restorer pass (what its
  convolutions cost without anything between them).

The table gives seconds, LR pixels per second, peak RSS, ``super_resolve`` / ``restorer`` and
``convs`` / ``restorer`` (the share of the Restorer pass its convolutions would take alone: 1.0
means nothing else costs anything). The whole-image passes are skipped where their activations
would not fit comfortably (``--plain-max-gb``), per-tile mode above ``--per-tile-max``; the table
says so.

``--contention`` adds: ``super_resolve`` global on a 512x512 image with 1 thread, 2 threads and
``threads="auto"``, idle and while another process keeps one core busy.

Quality (unless ``--no-quality``): Y-PSNR of global mode against the plain whole-image forward on
Set5/Set14 Gaussian8 x4 inputs (HR mod-cropped, 21x21 Gaussian, sigma linspace(1.8, 3.2, 8),
MATLAB-bicubic downsample, 8-bit; by default only the two end sigmas, ``--sigmas 8`` for all), made
with ``napari_dan.imaging.degradations``; border of s pixels cropped; the default model.

Run (results go to stdout as Markdown)::

    OMP_NUM_THREADS=2 python benchmarks/speed.py --no-quality --contention
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


def _model(name: str | None):
    import napari_dan

    if name is None:
        return get_model()[0]
    return napari_dan.load_model(name)


def _conv_inputs(model, size: int) -> list[tuple[torch.nn.Conv2d, tuple[int, ...]]]:
    """Every Restorer convolution with the input shape it gets on a size x size image (found
    with hooks on a small image, spatial sides scaled)."""
    seen: list = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].shape)))
             for m in model.network.Restorer.modules() if isinstance(m, torch.nn.Conv2d)]
    small = 32
    x = torch.zeros(1, model.in_channels, small, small)
    with torch.inference_mode():
        model.network.restore(x, model.network.initial_code(1))
    for h in hooks:
        h.remove()
    out = []
    for mod, shp in seen:
        f = size / small
        spatial = tuple(int(round(v * f)) if v > 1 else int(v) for v in shp[2:])
        out.append((mod, (shp[0], shp[1], *spatial)))
    return out


def one(method: str, size: int, precision: str, model_name: str | None = None) -> dict:
    """Run one measurement in this process; returns seconds, RSS and details."""
    import napari_dan
    from napari_dan.engine.devices import (
        autocast,
        channels_last_weights,
        resolve_device,
        resolve_precision,
    )

    model = _model(model_name)
    channels_last_weights(model.network)  # as the engine runs it (the raw passes too)
    img = test_image(size, model.in_channels)
    dev = resolve_device("cpu")
    prec = resolve_precision(precision, dev, model.network)
    # warm up (allocator, kernels, the bf16 check, OpenVINO's conversion) on a small image,
    # then take the baseline
    napari_dan.super_resolve(img[:48, :48], model, precision=precision, device="cpu",
                             runtime="openvino" if method == "global-openvino" else "torch")
    import gc

    gc.collect()
    base = rss_mb()
    info: dict = {}
    if method == "convs":
        convs = _conv_inputs(model, size)
        total = 0.0
        with torch.inference_mode(), autocast(dev, prec):
            for mod, shp in convs:
                x = torch.rand(shp).contiguous(memory_format=torch.channels_last)
                mod(x[..., :16, :16])  # warm this shape's kernel choice
                t0 = time.perf_counter()
                mod(x)
                total += time.perf_counter() - t0
                del x
        info = {"convs": len(convs)}
        dt = total
    else:
        t0 = time.perf_counter()
        if method in ("plain", "restorer"):
            x = torch.from_numpy(img.astype(np.float32) / 255)
            x = (x.permute(2, 0, 1) if x.ndim == 3 else x[None])[None]
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), autocast(dev, prec):
                if method == "plain":
                    model.network(x)
                else:
                    model.network.restore(x, model.network.initial_code(1))
        else:
            mode = "per-tile" if method == "per-tile" else "global"
            # per-tile mode gets the tiles global mode chooses: the two differ only in the loop
            from napari_dan.engine.devices import memory_budget
            from napari_dan.engine.tiling import auto_overlap, auto_tile_size

            tile = auto_tile_size(model.network, 1, memory_budget(dev),
                                  auto_overlap(model.network), full_loop=False)
            its = int(method[len("global-it"):]) if method.startswith("global-it") else "auto"
            r = napari_dan.super_resolve(img, model, kernel_mode=mode, tile_size=tile,
                                         precision=precision, device="cpu", iterations=its,
                                         compiled=method == "global-compiled",
                                         runtime="openvino" if method == "global-openvino"
                                         else "torch")
            info = {"tile": r.metadata["tile_size"], "overlap": r.metadata["tile_overlap"],
                    "tiles": r.metadata["tiles"],
                    "estimate_s": r.metadata["timing"]["estimate_s"],
                    "iterations": r.metadata["iterations"]}
        dt = time.perf_counter() - t0
    return {"model": model.name, "method": method, "size": size, "seconds": dt,
            "px_per_s": size * size / dt, "peak_rss_mb": rss_mb(), "added_mb": rss_mb() - base,
            "precision": prec.name, **info}


def contention(precision: str, model_name: str | None, size: int = 512) -> list[dict]:
    """super_resolve global with 1, 2 and auto threads, idle and with one core kept busy."""
    rows = []
    for load in ("idle", "one core busy"):
        spin = None
        if load != "idle":
            spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            for threads in ("1", "2", "auto"):
                cmd = [sys.executable, __file__, "--one-threads", threads, str(size),
                       "--precision", precision] + (["--models", model_name] if model_name
                                                    else [])
                res = subprocess.run(cmd, capture_output=True, text=True)
                row = json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 \
                    else {"skipped": (res.stderr.strip().splitlines()[-1:]
                                      or [f"exit {res.returncode}"])[0]}
                rows.append({"load": load, "threads": threads, **row})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        finally:
            if spin is not None:
                spin.kill()
                spin.wait()
    return rows


def one_threads(threads: str, size: int, precision: str, model_name: str | None) -> dict:
    import napari_dan

    model = _model(model_name)
    img = test_image(size, model.in_channels)
    napari_dan.super_resolve(img[:48, :48], model, precision=precision, device="cpu")
    t = threads if threads == "auto" else int(threads)
    t0 = time.perf_counter()
    r = napari_dan.super_resolve(img, model, precision=precision, device="cpu", threads=t)
    return {"model": model.name, "seconds": time.perf_counter() - t0,
            "used": r.metadata["threads"]["used"]}


def plain_gb(model, size: int) -> float:
    """Rough peak memory (GB) of the whole-image forward (0.77 GB measured at 512x512 for the
    compact x4 model in bf16, i.e. about 4 * nf * (8 + s^2) bytes per LR pixel)."""
    nf = model.network.Restorer.head1.out_channels if hasattr(model.network.Restorer, "head1") \
        else model.network.Restorer.head.out_channels
    s = model.scale
    return 4 * size * size * nf * (8 + s * s) / 1e9


def run_speed(args) -> list[dict]:
    import napari_dan

    names = args.models or [m["name"] for m in napari_dan.list_models()] or [None]
    rows = []
    for name in names:
        model = _model(name)
        for size in args.sizes:
            methods = ["restorer", "global", "per-tile", "convs"]
            if args.compiled:
                methods.insert(2, "global-compiled")
            if args.openvino:
                methods.insert(2, "global-openvino")
            if args.iterations:
                methods.insert(2, f"global-it{args.iterations}")
            if args.methods:
                methods = [m for m in methods if m in args.methods]
            for method in methods:
                row = {"model": model.name, "method": method, "size": size}
                if method in ("restorer", "convs") and plain_gb(model, size) > args.plain_max_gb:
                    row["skipped"] = f"needs ~{plain_gb(model, size):.0f} GB of activations"
                elif method == "per-tile" and size > args.per_tile_max:
                    row["skipped"] = f"above --per-tile-max {args.per_tile_max} (takes long)"
                if "skipped" in row:
                    rows.append(row)
                    continue
                cmd = [sys.executable, __file__, "--one", method, str(size), "--precision",
                       args.precision] + (["--models", name] if name else [])
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    last = res.stderr.strip().splitlines()[-1:] or [f"exit {res.returncode}"
                                                                    " (killed: out of memory?)"]
                    row["skipped"] = "failed: " + last[0]
                    rows.append(row)
                else:
                    rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def gaussian8_inputs(scale: int = 4, n_sigmas: int = 8):
    from skimage.io import imread

    from napari_dan.imaging.degradations import degrade
    from napari_dan.model.kernels import gaussian_kernel

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
    from napari_dan.engine.kernel_modes import ESTIMATION_PATCH
    from napari_dan.imaging.metrics import y_psnr

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
        saved = ESTIMATION_PATCH
        ESTIMATION_PATCH = 32
        try:
            gp = napari_dan.super_resolve(lr, model, device="cpu", precision="fp32").image / 255
        finally:
            ESTIMATION_PATCH = saved
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


def markdown(rows: list[dict], quality: dict | None, args, model_desc: str,
             cont: list[dict] | None = None) -> str:
    lines = []
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines.append(f"CPU: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
                 f"{torch.get_num_threads()} thread(s) (OMP_NUM_THREADS="
                 f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), precision {args.precision}.")
    lines.append("")
    lines.append("| model | LR size | method | time (s) | of which estimation (s) | LR kpx/s | "
                 "peak RSS (MB) | precision | tile / overlap / tiles |")
    lines.append("| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        size = f"{r['size']}x{r['size']}"
        if "skipped" in r:
            lines.append(f"| {r['model']} | {size} | {r['method']} | skipped: {r['skipped']} "
                         "| | | | | |")
            continue
        tiles = f"{r['tile']} / {r['overlap']} / {r['tiles']}" if "tile" in r else (
            f"{r['convs']} convolutions, summed" if "convs" in r else "whole image")
        est = f"{r['estimate_s']:.1f}" if r.get("estimate_s") else ""
        lines.append(f"| {r['model']} | {size} | {r['method']} | {r['seconds']:.1f} | {est} | "
                     f"{r['px_per_s'] / 1e3:.1f} | {r['peak_rss_mb']:.0f} | {r['precision']} | "
                     f"{tiles} |")
    got = {(r["model"], r["method"], r["size"]): r for r in rows if "skipped" not in r}
    ratios = []
    for model, size in sorted({(k[0], k[2]) for k in got}):
        r = got.get((model, "restorer", size))
        g, c = got.get((model, "global", size)), got.get((model, "convs", size))
        parts = []
        if g and r:
            parts.append(f"super_resolve / Restorer pass {g['seconds'] / r['seconds']:.2f}")
        for (m_, meth, sz), gi in got.items():
            if (m_, sz) == (model, size) and meth.startswith("global-it") and r:
                parts.append(f"{meth} / Restorer pass {gi['seconds'] / r['seconds']:.2f}")
        go = got.get((model, "global-openvino", size))
        if go and g:
            parts.append(f"openvino super_resolve / torch super_resolve "
                         f"{go['seconds'] / g['seconds']:.2f}")
        gc = got.get((model, "global-compiled", size))
        if gc and r:
            parts.append(f"compiled super_resolve / Restorer pass "
                         f"{gc['seconds'] / r['seconds']:.2f}")
        if c and r:
            parts.append(f"convolutions alone / Restorer pass {c['seconds'] / r['seconds']:.2f}")
        if c and g:
            parts.append(f"convolutions alone / super_resolve's restoration (global minus "
                         f"estimation) {c['seconds'] / (g['seconds'] - g['estimate_s']):.2f}")
        if parts:
            ratios.append(f"- {model}, {size}x{size}: " + "; ".join(parts))
    if ratios:
        lines += ["", *ratios]
    if cont:
        lines += ["", "Threads, `super_resolve` global on a 512x512 image "
                      f"({cont[0].get('model', '')}):", "",
                  "| machine | threads | time (s) | threads used (per plane) |",
                  "| --- | --- | ---: | --- |"]
        for r in cont:
            if "skipped" in r:
                lines.append(f"| {r['load']} | {r['threads']} | {r['skipped']} | |")
            else:
                lines.append(f"| {r['load']} | {r['threads']} | {r['seconds']:.2f} | "
                             f"{r['used']} |")
    if quality:
        lines.append("")
        lines.append(f"Global mode vs the plain whole-image forward ({model_desc}), Set5+Set14 "
                     f"Gaussian8 x4, {quality['n']} inputs ({quality['sigmas']} of the 8 sigmas; "
                     f"mean Y-PSNR, dB): plain fp32 "
                     f"{quality['plain']:.3f}; global (auto precision) {quality['global']:.3f} "
                     f"(largest per-image difference {quality['max_abs_diff_global']:.3f} dB); "
                     f"global fp32 estimated from four 32x32 patches "
                     f"{quality['global_patches']:.3f} (largest per-image difference "
                     f"{quality['max_abs_diff_patches']:.3f} dB). {quality['seconds']:.0f} s.")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="bundled names or checkpoints (default: all "
                                                "bundled models)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[512, 1024, 2048],
                    help="LR sizes to time (none: only the quality check)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--per-tile-max", type=int, default=1024)
    ap.add_argument("--plain-max-gb", type=float, default=12.0)
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--compiled", action="store_true",
                    help="also time global mode with compiled=True (torch.compile; the time "
                         "includes compiling)")
    ap.add_argument("--methods", nargs="*",
                    help="only these methods (restorer, global, global-openvino, "
                         "global-compiled, global-itN, per-tile, convs)")
    ap.add_argument("--openvino", action="store_true",
                    help="also time global mode with runtime='openvino' (conversion included)")
    ap.add_argument("--iterations", type=int, default=None,
                    help="also time global mode with this many estimation rounds")
    ap.add_argument("--contention", action="store_true",
                    help="also time 1, 2 and auto threads, idle and with one core busy")
    ap.add_argument("--sigmas", type=int, default=2,
                    help="how many of the 8 Gaussian8 sigmas to use (8 = the full protocol)")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    ap.add_argument("--one-threads", nargs=2, metavar=("THREADS", "SIZE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    name = args.models[0] if args.models else None
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.precision, name)))
        return
    if args.one_threads:
        print(json.dumps(one_threads(args.one_threads[0], int(args.one_threads[1]),
                                     args.precision, name)))
        return
    _, desc = get_model()
    rows = run_speed(args)
    cont = contention(args.precision, name) if args.contention else None
    quality = None if args.no_quality or not BENCH.exists() else run_quality(args)
    print(markdown(rows, quality, args, desc, cont))


if __name__ == "__main__":
    main()
