"""How fast the microscopy training fields are drawn, in the training process and by a
``FieldPool`` (``--data-workers``) of 1 and 2 processes.

The fields (specimens and PSFs) are drawn on the CPU whatever the training device, so on a GPU
the draw bounds the step unless worker processes share it (session 34). Each figure is the mean
of 5 batches after one warm-up batch (imports, psfmodels); the pool's start-up is not counted.

Run::

    env OMP_NUM_THREADS=1 python benchmarks/field_drawing.py --json docs/field-drawing.json   (20 s)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import command_line, machine  # noqa: E402


def timed(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def main(argv=None) -> int:
    from napari_dan.imaging.microscope import FieldPool, MicroscopyFields

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", type=Path, help="write the numbers here")
    a = p.parse_args(argv)
    rows = []
    # x4 batches: the restorer's 32 LR px (128 HR px) at batch 32, the Estimator GPU script's
    # 48 LR px (192 HR px) at batch 64
    for size, n in ((128, 32), (192, 64)):
        f = MicroscopyFields(size, 21, np.random.default_rng(0))
        row = {"hr_px": size, "fields": n, "in_process_s": timed(lambda f=f, n=n: f.draw(n))}
        for w in a.workers:
            with FieldPool([f], w) as pool:
                row[f"workers_{w}_s"] = timed(lambda f=f, n=n, pool=pool: f.draw(n, pool))
        rows.append(row)
        print(f"{n} fields of {size} px: " + ", ".join(
            f"{k.removesuffix('_s')} {v:.2f} s" for k, v in row.items() if k.endswith("_s")))
    if a.json:
        a.json.write_text(json.dumps({"command": command_line(), "machine": machine(),
                                      "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
