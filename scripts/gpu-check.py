"""Check the engine on a CUDA (or any) device against the CPU: the same image, model and kernel
mode, fp32 and the device's automatic precision. Prints one JSON line per case.

    python scripts/gpu-check.py [MODEL ...]        (default: the bundled models)

Run on a GPU machine; compares with the CPU result of the same call (fp32), so a device-specific
error in tiling, blending, normalisation or precision shows as a low PSNR between the two.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from skimage import data

import napari_dan


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def main(models: list[str]) -> int:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    print(json.dumps({"device": dev, "name": torch.cuda.get_device_name() if dev == "cuda" else "",
                      "torch": torch.__version__}), flush=True)
    rgb = data.astronaut()[100:292, 100:292]
    gray = data.camera()[100:292, 100:292]
    big = np.tile(data.astronaut(), (2, 2, 1))  # 1024 x 1024 RGB: several tiles on any device
    for m in models:
        model = napari_dan.load_model(m)
        img = rgb if model.in_channels == 3 else gray
        ref = napari_dan.super_resolve(img, model, device="cpu", precision="fp32")
        for prec in ("fp32", "auto"):
            for mode in ("global", "per-tile"):
                t = time.perf_counter()
                r = napari_dan.super_resolve(img, model, device=dev, precision=prec, kernel_mode=mode,
                                             tile_size=96 if mode == "per-tile" else "auto")
                dt = time.perf_counter() - t
                cpu = ref if mode == "global" else napari_dan.super_resolve(
                    img, model, device="cpu", precision="fp32", kernel_mode=mode, tile_size=96)
                print(json.dumps({"model": model.name, "precision": r.metadata.get("precision"),
                                  "mode": mode, "psnr_vs_cpu": round(psnr(r.image, cpu.image), 2),
                                  "kernel_l1_vs_cpu": round(float(np.abs(r.kernel - cpu.kernel).sum()), 4),
                                  "fwhm": round(float(r.kernel_stats.fwhm), 3), "seconds": round(dt, 3)}),
                      flush=True)
        if model.in_channels == 3:
            napari_dan.super_resolve(big[:128, :128], model, device=dev)  # warm-up
            if dev == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            r = napari_dan.super_resolve(big, model, device=dev)
            dt = time.perf_counter() - t
            print(json.dumps({"model": model.name, "case": "1024x1024 RGB, auto tiles/precision",
                              "out_shape": list(r.image.shape), "seconds": round(dt, 3),
                              "tiles": r.metadata.get("tiles"), "precision": r.metadata.get("precision")}),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or [m["name"] for m in napari_dan.list_models()]))
