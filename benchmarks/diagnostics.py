"""Three small diagnostics behind numbers that docs/models.md and docs/user-guide.md quote.

``per-image``: DAN blind minus bicubic per held-out image and noise level (mean over the PSFs),
and the signed sigma error on clean data, read from a ``benchmarks/microscopy.py --json`` file::

    python benchmarks/diagnostics.py per-image docs/quality-microscopy.json --model dan-x2-gray

``code-sensitivity``: one Set5/Set14 image, one Gaussian, the Gaussian8 degradation; Y-PSNR of
the blind result (the whole network, as ``--whole-image`` does), of the Restorer given the true
kernel's code, and of bicubic, the estimate's sigma error and kernel L1, and the two codes::

    OMP_NUM_THREADS=2 python benchmarks/diagnostics.py code-sensitivity --model dan-x2-rgb \\
        --image ../shared/data/bench/Set5/baby.png --sigma 1.6

``kernel-profile``: the width of the estimated kernel's centre row at half its peak (linear
interpolation between pixels) next to its second-moment FWHM, on the bundled microscopy sample::

    OMP_NUM_THREADS=2 python benchmarks/diagnostics.py kernel-profile --model dan-x4-gray
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import numpy as np


def per_image(path: str, model: str) -> None:
    recs = [r for r in json.loads(open(path).read())
            if not r["in_training"] and f"dan:{model}" in r["psnr"]]
    if not recs:
        sys.exit(f"error: no held-out records of {model} in {path}")
    gains, errs = collections.defaultdict(list), collections.defaultdict(list)
    for r in recs:
        key = r["image"].split()[0]  # the line grid's z plane and MIP count as one image
        gains[key, r["noise"]].append(r["psnr"][f"dan:{model}"] - r["psnr"]["bicubic"])
        if r["noise"] == "none":
            errs[key].append(r["kernel"][model]["sigma_error"])
    noises = list(dict.fromkeys(r["noise"] for r in recs))
    print(f"{model}: DAN blind minus bicubic (dB), mean over PSFs; noise: {', '.join(noises)}")
    for img in sorted(errs):
        row = " / ".join(f"{np.mean(gains[img, n]):+.2f}" for n in noises)
        print(f"  {img}: {row}; clean sigma error {np.mean(errs[img]):+.2f} px")
    print(f"  all held-out, clean: sigma error {np.mean([e for v in errs.values() for e in v]):+.2f} px")


def code_sensitivity(model_name: str, image: str, sigma: float) -> None:
    import torch

    import napari_dan
    from napari_dan.imaging.degradations import degrade, imresize
    from napari_dan.imaging.metrics import crop_border, kernel_errors, psnr, to_y
    from napari_dan.model.kernels import gaussian_kernel
    from napari_dan.training.evaluate import match_channels, mod_crop, read_benchmark_image

    model = napari_dan.load_model(model_name)
    net, s = model.network.eval(), model.scale
    hr = match_channels(mod_crop(read_benchmark_image(image), s), model.in_channels)
    hr3 = hr if hr.ndim == 3 else hr[..., None]
    k = gaussian_kernel(model.kernel_size, sigma)
    lr = degrade(hr3, k, s)
    x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1), dtype=np.float32))[None]
    kt = torch.from_numpy(k.astype(np.float32)).reshape(1, -1)

    def score(out: np.ndarray) -> float:
        out = np.round(np.clip(out, 0, 1) * 255) / 255
        if model.in_channels == 1:
            return psnr(crop_border(out[..., 0] * 255, s), crop_border(hr3[..., 0] * 255, s))
        return psnr(crop_border(to_y(out), s), crop_border(to_y(hr3), s))

    with torch.no_grad():
        sr_blind, k_est = net(x)
        code_est, code_true = net.encode(k_est.reshape(1, -1).float()), net.encode(kt)
        sr_true = net.restore(x, code_true)
    hwc = lambda t: t[0].float().numpy().transpose(1, 2, 0)  # noqa: E731
    k_est = k_est[0].float().numpy()
    print(f"{model.name}, {image}, sigma {sigma}: blind {score(hwc(sr_blind)):.2f} dB, true code "
          f"{score(hwc(sr_true)):.2f} dB, bicubic {score(imresize(lr, s)):.2f} dB")
    err = kernel_errors(k_est, k)
    print(f"  sigma error {err['sigma_error']:+.3f} px, kernel L1 {err['l1']:.3f}, peak "
          f"{k_est.max():.4f} (true {k.max():.4f})")
    print("  code, estimate:", np.round(code_est[0].numpy(), 3))
    print("  code, true:    ", np.round(code_true[0].numpy(), 3))


def _half_max_width(row: np.ndarray) -> float:
    half = row.max() / 2
    above = np.flatnonzero(row >= half)
    lo, hi = above[0], above[-1]
    left = lo - (row[lo] - half) / (row[lo] - row[lo - 1]) if lo > 0 else float(lo)
    right = hi + (row[hi] - half) / (row[hi] - row[hi + 1]) if hi < row.size - 1 else float(hi)
    return float(right - left)


def kernel_profile(model_name: str) -> None:
    import napari_dan
    from napari_dan.samples import make_sample

    model = napari_dan.load_model(model_name)
    sample = make_sample("microscopy", model.scale)
    res = napari_dan.super_resolve(sample["lr"], model)
    c = res.kernel.shape[0] // 2
    true = sample["kernel"]
    print(f"{model.name} on the microscopy sample: FWHM {res.kernel_stats.fwhm:.2f} px, centre row "
          f"at half peak {_half_max_width(res.kernel[c]):.2f} px; true kernel: "
          f"{_half_max_width(true[true.shape[0] // 2]):.2f} px")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("per-image")
    a.add_argument("json")
    a.add_argument("--model", required=True)
    b = sub.add_parser("code-sensitivity")
    b.add_argument("--model", required=True)
    b.add_argument("--image", required=True)
    b.add_argument("--sigma", type=float, required=True)
    c = sub.add_parser("kernel-profile")
    c.add_argument("--model", required=True)
    args = p.parse_args(argv)
    if args.cmd == "per-image":
        per_image(args.json, args.model)
    elif args.cmd == "code-sensitivity":
        code_sensitivity(args.model, args.image, args.sigma)
    else:
        kernel_profile(args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
