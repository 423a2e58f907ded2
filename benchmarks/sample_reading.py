"""What a fluorescence model reads on the samples users open first.

The microscopy benchmark (benchmarks/microscopy.py) scores beads, filaments and nuclei one kind
at a time; the napari samples and ``napari-dan demo`` show a mix of filaments and beads through
the 1.4-NA widefield PSF at 1,000 photons, and a focus series of it. A candidate model that
improves the benchmark can still read those worse (session 33), so this measures them:

- the "fluorescence" sample at its scale, seeds 0-3 (seed 0 is what the demo and the napari menu
  show): the blind FWHM against the true 4.55 HR px, and the Y-PSNR of DAN and bicubic with the
  truth's maximum as peak (the demo's numbers);
- for x2 models the "fluorescence-stack" focus series in per-plane mode: each plane's blind FWHM
  against its PSF's.

Run::

    env OMP_NUM_THREADS=1 python benchmarks/sample_reading.py --model dan-x2-fluo dan-x4-fluo \\
        --json docs/sample-reading.json
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np


def measure(model_ref: str, seeds=(0, 1, 2, 3)) -> dict:
    from skimage.transform import resize

    import napari_dan
    from napari_dan.imaging.metrics import y_psnr
    from napari_dan.model.kernels import kernel_stats
    from napari_dan.samples import make_sample

    m = napari_dan.load_model(model_ref)
    s = m.scale
    out: dict = {"model": model_ref, "name": m.name, "fingerprint": m.fingerprint, "sample": []}
    for seed in seeds:
        smp = make_sample("fluorescence", s, seed=seed)
        lr, hr = smp["lr"], smp["hr"].astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            r = napari_dan.super_resolve(lr, m)
        top = float(np.iinfo(lr.dtype).max)
        bic = np.clip(np.round(resize(lr / top, r.image.shape, order=3, mode="edge",
                                      anti_aliasing=False) * top), 0, top)
        peak = hr.max()
        row = {"seed": seed, "true_fwhm": kernel_stats(smp["kernel"]).fwhm,
               "blind_fwhm": r.kernel_stats.fwhm,
               "dan_psnr": y_psnr(r.image / peak, hr / peak, s),
               "bicubic_psnr": y_psnr(bic / peak, hr / peak, s)}
        row["fwhm_error"] = row["blind_fwhm"] / row["true_fwhm"] - 1
        out["sample"].append(row)
        print(f"{model_ref} fluorescence seed {seed}: blind {row['blind_fwhm']:.2f} px (true "
              f"{row['true_fwhm']:.2f}, {100 * row['fwhm_error']:+.1f}%), DAN "
              f"{row['dan_psnr']:.2f} dB, bicubic {row['bicubic_psnr']:.2f} dB", flush=True)
    if s == 2:
        st = make_sample("fluorescence-stack", 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            r = napari_dan.super_resolve(st["lr"], m, kernel_mode="per-plane")
        blind = [kernel_stats(k).fwhm for k in r.kernels]
        true = [kernel_stats(k).fwhm for k in st["kernel"]]
        out["focus_series"] = {"blind_fwhm": blind, "true_fwhm": true}
        print(f"{model_ref} focus series per plane: blind "
              + ", ".join(f"{b:.2f}" for b in blind) + " px; true "
              + ", ".join(f"{t:.2f}" for t in true), flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", default=["dan-x2-fluo", "dan-x4-fluo"])
    p.add_argument("--json", help="write the numbers here")
    a = p.parse_args(argv)
    results = [measure(m) for m in a.model]
    if a.json:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from quality import command_line  # the command as it was run, threads included

        cmd = command_line()
        with open(a.json, "w") as f:
            json.dump({"command": cmd, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
