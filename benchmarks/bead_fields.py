"""Blind FWHM on more bead fields than the microscopy benchmark's one per cell.

    env OMP_NUM_THREADS=1 python benchmarks/bead_fields.py MODEL_OR_RUN_DIR [...] [--seeds 3]
        [--kernel-views auto|1|4|8]

Each argument is a bundled model name, a checkpoint file or a training run folder (as in
benchmarks/training_check.py). The fields are those of benchmarks/microscopy.py (its bead
density, 1 per 800 HR px, no haze, a 0.02 background; its widefield PSFs of FWHM 2.5 / 5 / 8.5
HR px; its camera: binning by the model's scale, offset 100, Poisson and 1.5 e- read noise) but
drawn from ``--seeds`` other seeds (100, 101, ...), clean and at 1,000 photons. Printed: the blind
FWHM (global mode, Gaussian fit, output grid) of every field, and the mean |log(blind / true)|
over all of them, which does not hang on one field per cell as the benchmark's median does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import training_check  # noqa: E402
from microscopy import SIZE, observe, psf_for  # noqa: E402


def main(argv=None) -> int:
    from napari_dan import super_resolve
    from napari_dan.imaging.specimens import random_specimen
    from napari_dan.model.kernels import kernel_stats

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="bundled names, checkpoint files or run folders")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--kernel-views", default="auto", choices=("auto", "1", "4", "8"),
                   help="SROptions.kernel_views of the blind runs (default auto)")
    a = p.parse_args(argv)
    views = a.kernel_views if a.kernel_views == "auto" else int(a.kernel_views)
    with tempfile.TemporaryDirectory() as tmp:
        for arg in a.models:
            label, model = training_check._load(arg, Path(tmp))
            print(label, flush=True)
            errs = []
            for fw in (2.5, 5.0, 8.5):
                psf = psf_for(fw)
                true = kernel_stats(psf).fwhm
                for photons in (None, 1000.0):
                    out = []
                    for seed in range(a.seeds):
                        rng = np.random.default_rng(100 + seed)
                        spec, _ = random_specimen((SIZE, SIZE), rng, kind="beads",
                                                  density=1 / 800, haze=False)
                        lr, _ = observe(spec + 0.02, psf, model.scale, photons, rng)
                        k = super_resolve(lr, model, precision="fp32", kernel_views=views).kernel
                        out.append(kernel_stats(k).fwhm)
                    errs += [abs(np.log(v / true)) for v in out]
                    noise = "clean" if photons is None else "1000 ph"
                    print(f"  true {true:5.2f} {noise:8s} blind "
                          + " ".join(f"{v:5.2f}" for v in out), flush=True)
            print(f"  mean |log(blind / true)| over {len(errs)} fields: {np.mean(errs):.3f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
