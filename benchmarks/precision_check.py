"""PSNR of ``precision="auto"`` against fp32 on the microscopy benchmark's 36 synthetic fields.

    env OMP_NUM_THREADS=2 python benchmarks/precision_check.py MODEL

On a CPU with native bf16 instructions ``auto`` runs a model in bf16 when the engine's accuracy
check passes (docs/engine.md); this says what that costs on the benchmark's fields (its seeds,
specimens, PSFs and noise levels), blind, global mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from microscopy import psnr, synthetic_fields  # noqa: E402


def main(argv=None) -> int:
    from napari_dan import load_model, super_resolve

    m = load_model((argv or sys.argv[1:])[0])
    d, chosen = [], None
    for *_, lr, hr in synthetic_fields(m.scale):
        a = super_resolve(lr, m, precision="fp32").image.astype(np.float64)
        r = super_resolve(lr, m, precision="auto")
        chosen = r.metadata.get("precision")
        d.append(psnr(r.image.astype(np.float64), hr, 2 * m.scale) - psnr(a, hr, 2 * m.scale))
    print(f"{m.name}: auto chose {chosen}; auto - fp32 PSNR over {len(d)} fields: mean "
          f"{np.mean(d):+.3f} dB, min {np.min(d):+.3f}, max {np.max(d):+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
