"""Side-by-side summary of microscopy benchmark runs (the JSON of benchmarks/microscopy.py).

One line per model and run, the numbers issue 13's targets are stated in: mean PSNR of blind DAN,
DAN with the true PSF, bicubic and Richardson-Lucy; the median blind FWHM error over all fields,
the synthetic specimens and the real images; the smallest blind - bicubic margin over image x
noise (all images and synthetic only) and how many of those fields are at least 1 dB above
bicubic; the blind FWHM on the real beads' in-focus planes (|dz| <= 1, as microscopy.py logs it)
against the averaged PSF's. ``fwhm_synth_snr``: the synthetic specimens' median FWHM error on
the fields whose signal-to-noise ratio is at least the engine's ``LOW_SNR`` (runs that recorded
it, from session 17 on).

Run::

    python benchmarks/compare_microscopy.py docs/quality-fluorescence.json /tmp/m.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from microscopy import REAL  # noqa: E402


def summary(result: dict) -> dict:
    rows = result["rows"]
    images = list(dict.fromkeys(r["image"] for r in rows))
    noises = list(dict.fromkeys(r["noise"] for r in rows))
    margins = {}
    for im in images:
        for nz in noises:
            rs = [r for r in rows if r["image"] == im and r["noise"] == nz]
            if rs:
                margins[im, nz] = float(np.mean([r["dan_blind"] - r["bicubic"] for r in rs]))
    synth = {k: v for k, v in margins.items() if k[0] not in REAL}
    out = {k: float(np.mean([r[k] for r in rows]))
           for k in ("dan_blind", "dan_true", "bicubic", "rl_best")}
    out["fwhm_all"] = float(np.median([r["fwhm_error"] for r in rows]))
    out["fwhm_synth"] = float(np.median([r["fwhm_error"] for r in rows if r["image"] not in REAL]
                                        or [np.nan]))
    out["fwhm_real"] = float(np.median([r["fwhm_error"] for r in rows if r["image"] in REAL]
                                       or [np.nan]))
    from napari_dan.engine.result import LOW_SNR

    hi = [r["fwhm_error"] for r in rows if r["image"] not in REAL
          and r.get("snr") is not None and r["snr"] >= LOW_SNR]
    out["fwhm_synth_snr"] = float(np.median(hi)) if hi else None
    out["worst"] = min(margins.values())
    out["worst_synth"] = min(synth.values()) if synth else np.nan
    out["fields_1db"] = f"{sum(v >= 1 for v in margins.values())}/{len(margins)}"
    focus = [b for b in result.get("beads") or [] if abs(b["dz"]) <= 1 and b["psf_avg"]]
    out["beads_focus"] = float(np.mean([b["dan"] for b in focus])) if focus else None
    out["beads_ref"] = float(np.mean([b["psf_avg"] for b in focus])) if focus else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+", help="JSON files written by benchmarks/microscopy.py")
    a = ap.parse_args(argv)
    cols = ("dan_blind", "dan_true", "bicubic", "rl_best", "fwhm_all", "fwhm_synth", "fwhm_real",
            "fwhm_synth_snr", "worst", "worst_synth", "fields_1db", "beads_focus", "beads_ref")
    print("| run | model | " + " | ".join(cols) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in cols) + " |")
    for f in a.json:
        for res in json.loads(Path(f).read_text())["results"]:
            s = summary(res)
            cells = []
            for c in cols:
                v = s[c]
                if isinstance(v, str) or v is None:
                    cells.append(str(v if v is not None else "-"))
                elif c.startswith("fwhm"):
                    cells.append(f"{100 * v:.1f}%")
                else:
                    cells.append(f"{v:.2f}")
            print(f"| {Path(f).name} | {res['model']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
