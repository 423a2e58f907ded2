"""What ``kernel_views`` costs: ``super_resolve`` with one view and with four, side by side.

    env OMP_NUM_THREADS=2 python benchmarks/kernel_views_speed.py [--model dan-x2-fluo]
        [--sizes 512 1024] [--repeats 2]

A synthetic filament field (the microscopy benchmark's camera: binning by the model's scale,
1,000 photons, offset 100; PSF FWHM 5 HR px) of each LR size, global mode, the engine's default
precision; after a warm-up call, each setting ``--repeats`` times, alternating. Printed: total
seconds and the estimation's share (``metadata["timing"]["estimate_s"]``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import microscopy as bench  # noqa: E402


def main(argv=None) -> int:
    from napari_dan import load_model, super_resolve
    from napari_dan.imaging.specimens import random_specimen

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="dan-x2-fluo")
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    m = load_model(a.model)
    rng = np.random.default_rng(0)
    for n in a.sizes:
        hr = n * m.scale
        spec, _ = random_specimen((hr, hr), rng, kind="filaments", density=1 / 300, haze=False)
        lr, _ = bench.observe(spec + 0.02, bench.psf_for(5.0), m.scale, 1000.0, rng)
        super_resolve(lr[:64, :64], m)  # warm-up
        for _ in range(a.repeats):
            for views in (1, 4):
                t = time.perf_counter()
                r = super_resolve(lr, m, kernel_views=views)
                total = time.perf_counter() - t
                est = r.metadata["timing"]["estimate_s"]
                print(f"{m.name} LR {n}: kernel_views {views}: {total:.1f} s, estimation "
                      f"{est:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
