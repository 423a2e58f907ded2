"""One value map for a stack against one per plane, side by side in one run.

A z-stack's focus can be tens of times brighter than its other planes. Until session 31 the
engine mapped a whole stack with one pair of percentiles (except in per-plane kernel mode); now
every plane of a stack gets its own. This script measures what that changes: the fluorescence
focus series (``make_sample("fluorescence-stack", 2)``) with its middle plane made F times
brighter, restored by ``dan-x2-fluo`` with one kernel for the stack (the true in-focus PSF, and
blind), each plane's PSNR against its HR truth (peak = that plane's truth maximum), with the
engine's per-plane maps and with the old single map (``Plan.per_plane_norm`` forced off, the
rule before session 31).

Run from the repository root: ``env OMP_NUM_THREADS=2 python benchmarks/stack_normalisation.py
[--factors 1 10 50] [--json FILE]`` (about 1 minute).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import napari_dan
from napari_dan.engine import plan as plan_module
from napari_dan.samples import make_sample


def psnr(out: np.ndarray, truth: np.ndarray) -> float:
    t = truth.astype(np.float64)
    err = np.mean((out.astype(np.float64) - t)[4:-4, 4:-4] ** 2)
    return float(10 * np.log10(t.max() ** 2 / max(err, 1e-12)))


def run(factors: list[float]) -> list[dict]:
    s = make_sample("fluorescence-stack", 2)
    model = napari_dan.load_model("dan-x2-fluo")
    mid = len(s["lr"]) // 2
    rule = plan_module.Plan.per_plane_norm
    rows = []
    for f in factors:
        lr = s["lr"].astype(np.float32)
        hr = s["hr"].astype(np.float32)
        # the middle plane F times brighter above the camera offset (100), input and truth alike
        lr[mid] = (lr[mid] - 100) * f + 100
        hr[mid] = (hr[mid] - 100) * f + 100
        for kernel_name, kernel in (("true PSF", s["kernel"][mid]), ("blind", None)):
            row = {"factor": f, "kernel": kernel_name}
            for maps in ("per plane", "one for the stack"):
                if maps == "one for the stack":
                    plan_module.Plan.per_plane_norm = property(lambda self: False)
                try:
                    r = napari_dan.super_resolve(lr, model, kernel=kernel, precision="fp32")
                finally:
                    plan_module.Plan.per_plane_norm = rule
                row[maps] = [psnr(r.image[z], hr[z]) for z in range(len(lr))]
            rows.append(row)
            others = [z for z in range(len(lr)) if z != mid]
            print(f"x{f:g} brighter focus, {kernel_name}: other planes "
                  f"{np.mean([row['per plane'][z] for z in others]):.2f} dB (own maps) vs "
                  f"{np.mean([row['one for the stack'][z] for z in others]):.2f} dB (one map); "
                  f"the bright plane {row['per plane'][mid]:.2f} vs "
                  f"{row['one for the stack'][mid]:.2f} dB", flush=True)
    return rows


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--factors", type=float, nargs="+", default=[1.0, 10.0, 50.0])
    p.add_argument("--json", help="write the per-plane PSNRs here")
    args = p.parse_args(argv)
    rows = run(args.factors)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"command": "python benchmarks/stack_normalisation.py " + " ".join(argv),
                       "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
