"""How bright the fields are between their structures: the training draws against the
microscopy benchmark's specimens.

A widefield recording of a dense specimen (the benchmark's TIRF microtubules, a nuclei field) is
bright almost everywhere: out-of-focus light and the structures' own overlap put its median at
0.15-0.33 of its peak, while a synthetic training field is mostly dark. Where the shot noise
sits follows from that. This prints, for each source, the median of ``median / 99.9th
percentile`` over its fields (the engine maps the 0.1 and 99.9 percentiles to 0 and 1), with
its 10th and 90th percentiles across fields:

* ``training, default``: ``imaging.microscope.MicroscopyFields`` as every recipe draws it
  (synthetic specimens only; real-specimen fields are left out here);
* ``training, bright SHARE HIGH``: the same with ``bright_background=(1, HIGH)``, i.e. the
  bright half of a ``--bright-background 0.5 HIGH`` run (session 34);
* each specimen of ``benchmarks/microscopy.py`` (one field each).

Run::

    python benchmarks/field_brightness.py --json docs/field-brightness.json   (10 s)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import command_line  # noqa: E402


def level(img: np.ndarray) -> float:
    return float(np.median(img) / max(np.percentile(img, 99.9), 1e-12))


def training_levels(n: int, bright: float, seed: int = 0) -> list[float]:
    from napari_dan.imaging.microscope import MicroscopyFields

    f = MicroscopyFields(128, 21, np.random.default_rng(seed),
                         bright_background=(1.0, bright) if bright else (0.0, 0.0))
    return [level(f._specimen()) for _ in range(n)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fields", type=int, default=300, help="training fields drawn per source")
    p.add_argument("--bright", type=float, default=0.5, help="HIGH of the bright draw")
    p.add_argument("--json", type=Path, help="write the numbers here")
    a = p.parse_args(argv)
    import microscopy

    rows = []
    for name, bright in (("training, default", 0.0),
                         (f"training, bright 1 {a.bright:g}", a.bright)):
        v = training_levels(a.fields, bright)
        rows.append({"source": name, "fields": len(v), "median": float(np.median(v)),
                     "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90))})
    for name, spec in microscopy.specimens(False).items():
        rows.append({"source": f"benchmark: {name}", "fields": 1, "median": level(spec)})
    for r in rows:
        spread = f" (10-90%: {r['p10']:.3f}-{r['p90']:.3f})" if "p10" in r else ""
        print(f"{r['source']:34s} {r['median']:.3f}{spread}")
    if a.json:
        a.json.write_text(json.dumps({"command": command_line(), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
