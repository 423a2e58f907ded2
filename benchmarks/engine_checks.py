"""The engine measurements behind docs/benchmarks.md's "What changed" and profile, in one script.

- ``profile``: torch.profiler over ``super_resolve(dan-x2-gray, 512x512 uint16, fp32)``: time
  per operator and the engine's own step timing (estimation, restoration).
- ``inplace``: one Restorer pass on a tile, with the blocks' in-place inference arithmetic
  against the out-of-place (autograd) arithmetic; best of three, and whether the outputs are
  bit-identical.
- ``compile``: one Restorer pass on a tile, eager against ``torch.compile`` (bf16 autocast), and
  the Y-PSNR of ``super_resolve`` on the bundled samples in fp32, bf16 and bf16 compiled.
- ``layout``: every bundled model, ``super_resolve`` of a 512x512 plane with the convolution
  weights as loaded (NCHW) against channels_last (what the engine does for grey models since
  session 8; here for every model, to show where it pays), in fp32 and bf16, side by side in
  one process: time, pixels within 1 grey level, largest difference, and the Y-PSNR of both on
  the bundled sample of the model's kind.

- ``rounds``: the confocal bead stack of ../shared (41 planes) in per-plane mode with
  dan-x2-fluo at 4, 3 and 2 estimation rounds (``iterations``): seconds, and the kernels' FWHM.
- ``consistency``: the cost of the consistency check every result gets
  (:func:`napari_dan.imaging.consistency.consistency`) on random 2048x2048 LR planes: grey at
  x2 and RGB at x4, bicubic and binning, with the peak RSS it added.

Run::

    OMP_NUM_THREADS=2 python benchmarks/engine_checks.py profile inplace compile layout consistency
    OMP_NUM_THREADS=2 python benchmarks/engine_checks.py layout --models dan-x2-gray dan-x4-rgb

Prints Markdown.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch


def _best(f, n: int = 3) -> float:
    f()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def _plane(size: int) -> np.ndarray:
    from skimage import data, transform

    cam = transform.resize(data.camera().astype(np.float32), (size, size))
    rng = np.random.default_rng(0)
    return (cam / 255 * 3000 + 100 + rng.normal(0, 20, cam.shape)).clip(0, 65535).astype(np.uint16)


def profile() -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    import napari_dan

    m = napari_dan.load_model("dan-x2-gray")
    img = _plane(512)
    napari_dan.super_resolve(img[:64, :64], m, precision="fp32")
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        r = napari_dan.super_resolve(img, m, precision="fp32")
    t = r.metadata["timing"]
    print(f"### profile: dan-x2-gray, 512x512 uint16, fp32\n\nestimation {t['estimate_s']:.1f} s, "
          f"restoration {t['restore_s']:.1f} s, total {t['total_s']:.1f} s; "
          f"{r.metadata['tiles']} tiles\n")
    ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ev)
    print("| op | share of CPU time |\n| --- | ---: |")
    for e in ev[:6]:
        print(f"| `{e.key}` | {100 * e.self_cpu_time_total / total:.1f}% |")
    print()


def inplace() -> None:
    import napari_dan

    print("### in-place block arithmetic (one Restorer pass on a tile, best of 3)\n")
    print("| model | tile | precision | in place (s) | out of place (s) | identical |")
    print("| --- | --- | --- | ---: | ---: | --- |")
    for name, size in (("dan-x2-gray", 264), ("dan-x4-rgb", 200)):
        m = napari_dan.load_model(name)
        net = m.network
        x = torch.rand(1, m.in_channels, size, size).contiguous(memory_format=torch.channels_last)
        code = net.initial_code(1)
        for prec in ("fp32", "bf16"):
            def ctx(prec=prec):
                return torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16")

            def fast(net=net, x=x, code=code, ctx=ctx):
                with torch.no_grad(), ctx():  # no autograd: the in-place path
                    return net.restore(x, code)

            def slow(net=net, x=x, code=code, ctx=ctx):
                with torch.enable_grad(), ctx():  # autograd on: the out-of-place path
                    return net.restore(x, code)

            same = torch.equal(fast(), slow())
            print(f"| {name} | {size} | {prec} | {_best(fast):.3f} | {_best(slow):.3f} | {same} |")
    print()


def compile_check() -> None:
    import napari_dan
    from napari_dan.imaging.metrics import y_psnr
    from napari_dan.samples import make_sample

    m = napari_dan.load_model("dan-x2-gray")
    net = m.network
    x = torch.rand(1, 1, 264, 264).contiguous(memory_format=torch.channels_last)
    code = net.initial_code(1)
    compiled = torch.compile(net.Restorer, dynamic=False)

    def eager():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return net.Restorer(x, code)

    def comp():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return compiled(x, code)

    t0 = time.perf_counter()
    comp()
    first = time.perf_counter() - t0
    print("### torch.compile (dan-x2-gray Restorer, 264x264 tile, bf16 autocast)\n")
    print(f"first call (compilation) {first:.1f} s; then eager {_best(eager):.3f} s, compiled "
          f"{_best(comp):.3f} s per pass\n")
    print("| model | sample | fp32 | bf16 | bf16 compiled |\n| --- | --- | ---: | ---: | ---: |")
    for name, kind in (("dan-x2-gray", "microscopy"), ("dan-x4-rgb", "photo")):
        mm = napari_dan.load_model(name)
        s = make_sample(kind, scale=mm.scale)
        row = []
        for kw in (dict(precision="fp32"), dict(precision="bf16"),
                   dict(precision="bf16", compiled=True)):
            img = napari_dan.super_resolve(s["lr"], mm, tile_size=64, **kw).image
            row.append(y_psnr(img / 255.0, s["hr"] / 255.0, mm.scale))
        print(f"| {name} | {kind} | " + " | ".join(f"{v:.3f} dB" for v in row) + " |")
    print()


def layout(names: list[str] | None = None) -> None:
    import napari_dan
    from napari_dan.engine import devices
    from napari_dan.imaging.metrics import y_psnr
    from napari_dan.samples import make_sample

    as_loaded = devices.channels_last_weights
    print("### convolution weights as loaded (NCHW) against channels_last, `super_resolve` of a "
          "512x512 plane (best of 2)\n")
    print("| model | precision | NCHW (s) | channels_last (s) | speed-up | pixels within 1 grey "
          "level | largest difference | sample Y-PSNR NCHW / channels_last (dB) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name in names or [m["name"] for m in napari_dan.list_models()]:
        for prec in ("fp32", "bf16"):
            out, times, psnr = {}, {}, {}
            for weights in ("nchw", "nhwc"):
                m = napari_dan.load_model(name)  # fresh: weights as stored in the file
                if weights == "nhwc":  # every model here, whatever the engine's policy
                    for c in m.network.modules():
                        if isinstance(c, torch.nn.Conv2d):
                            c.weight.data = c.weight.data.contiguous(
                                memory_format=torch.channels_last)
                devices.channels_last_weights = lambda net: net  # no change by the engine
                try:
                    g = _plane(512)
                    img = g if m.in_channels == 1 else np.stack(
                        [g, g[::-1], g[:, ::-1]], -1)
                    napari_dan.super_resolve(img[:64, :64], m, precision=prec)
                    times[weights] = _best(lambda m=m, img=img, prec=prec: napari_dan.super_resolve(
                        img, m, precision=prec), n=2)
                    out[weights] = napari_dan.super_resolve(img, m, precision=prec).image
                    s = make_sample("microscopy" if m.in_channels == 1 else "photo",
                                    scale=m.scale)
                    sr = napari_dan.super_resolve(s["lr"], m, precision=prec, tile_size=64)
                    psnr[weights] = y_psnr(sr.image / 255.0, s["hr"] / 255.0, m.scale)
                finally:
                    devices.channels_last_weights = as_loaded
            d = np.abs(out["nchw"].astype(np.float64) - out["nhwc"].astype(np.float64))
            print(f"| {name} | {prec} | {times['nchw']:.2f} | {times['nhwc']:.2f} | "
                  f"{times['nchw'] / times['nhwc']:.2f}x | {100 * np.mean(d <= 1):.3f}% | "
                  f"{d.max():.0f} | {psnr['nchw']:.3f} / {psnr['nhwc']:.3f} |", flush=True)
    print()


def consistency_cost() -> None:
    import resource

    from napari_dan.imaging.consistency import consistency

    rng = np.random.default_rng(0)
    print("### consistency check cost (random 2048x2048 LR, 21x21 kernel)\n")
    print("| channels | scale | sampling | seconds | peak RSS after (MB) |\n| ---: | ---: | --- | ---: "
          "| ---: |")
    for c, scale in ((1, 2), (3, 4)):
        sr = rng.random((c, 2048 * scale, 2048 * scale), dtype=np.float32)
        lr = rng.random((c, 2048, 2048), dtype=np.float32)
        k = np.full((21, 21), 1 / 441)
        for sampling in ("bicubic", "bin"):
            t0 = time.perf_counter()
            consistency(lr, sr, k, scale, sampling)
            dt = time.perf_counter() - t0
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"| {c} | {scale} | {sampling} | {dt:.1f} | {rss:.0f} |", flush=True)
    print()


def rounds_per_plane() -> None:
    """The bead stack in per-plane mode with 2, 3 and 4 estimation rounds: time and kernels."""
    import tifffile

    import napari_dan
    from napari_dan.model.kernels import kernel_stats

    stack = tifffile.imread(Path(__file__).resolve().parents[2] / "shared" / "data" /
                            "microscopy" / "Bead_Image1_crop.tif")
    m = napari_dan.load_model("dan-x2-fluo")
    napari_dan.super_resolve(stack[0, :48, :48], m)  # warm-up
    print(f"### per-plane mode on Bead_Image1_crop.tif ({stack.shape}, {stack.dtype}), "
          "dan-x2-fluo, precision auto\n")
    print("| iterations | seconds | of which estimation | kernel FWHM (px) per plane, "
          "min / median / max | 5 brightest planes' FWHM (px) |\n| ---: | ---: | ---: | --- | --- |")
    focus = np.argsort(stack.reshape(len(stack), -1).max(1).astype(float))[::-1][:5]
    for n in (4, 3, 2):
        t0 = time.perf_counter()
        r = napari_dan.super_resolve(stack, m, kernel_mode="per-plane", iterations=n)
        dt = time.perf_counter() - t0
        fw = np.array([kernel_stats(k).fwhm for k in r.kernels])
        print(f"| {n} | {dt:.1f} | {r.metadata['timing']['estimate_s']:.1f} | {fw.min():.2f} / "
              f"{np.median(fw):.2f} / {fw.max():.2f} | "
              f"{', '.join(f'{fw[i]:.2f}' for i in sorted(focus))} |", flush=True)
    print()


def main(argv=None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    models = None
    if "--models" in args:  # for layout: which bundled models (default: all)
        i = args.index("--models")
        args, models = args[:i], args[i + 1:]
    what = args or ["profile", "inplace", "compile", "layout"]
    for w in what:
        if w == "layout":
            layout(models)
        else:
            {"profile": profile, "inplace": inplace, "compile": compile_check,
             "consistency": consistency_cost, "rounds": rounds_per_plane}[w]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
