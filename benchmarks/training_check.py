"""Quick look at microscopy models or training runs in progress, for deciding whether a run helps.

    env OMP_NUM_THREADS=1 python benchmarks/training_check.py MODEL_OR_RUN_DIR [...]

Each argument is a bundled model name, a checkpoint file, or a training run folder (its
``state.pt`` is exported to a temporary checkpoint first, so a running job is not disturbed).
For each, on the fields of benchmarks/microscopy.py (synthetic beads, filaments, nuclei and the
three real images as specimens; widefield PSFs of FWHM 2.5 and 5 HR px; no noise and 200
photons): blind DAN and DAN with the true PSF minus bicubic (dB, mean) and the median blind
FWHM error; then the blind FWHM on the real bead stack per plane (dz -6..+6) against the averaged
PSF. A subset of the full benchmark (a few minutes per model), not a replacement for it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import microscopy as mb  # noqa: E402


def _load(arg: str, tmp: Path):
    from napari_dan import load_model

    run = Path(arg)
    if not (run.is_dir() and (run / "state.pt").exists()):
        return arg, load_model(arg)
    import torch

    from napari_dan.training.train import TrainConfig, Trainer

    state = torch.load(run / "state.pt", weights_only=True)
    cfg = TrainConfig(**json.loads(state["config"]))
    cfg.init_from = None  # the state holds every weight
    tr = Trainer(cfg, run, log=lambda m: None)
    tr.try_resume()
    out = tr.export(tmp / f"{run.name}.pt")
    return f"{arg} (step {tr.step})", load_model(out)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0 if args else 2
    specs = mb.specimens(False)
    with tempfile.TemporaryDirectory() as tmp:
        for arg in args:
            label, model = _load(arg, Path(tmp))
            rows = mb.run_model(model, specs, [2.5, 5.0], ["none", "200 ph"], lambda m: None)
            print(label)
            for im in specs:
                rs = [r for r in rows if r["image"] == im]
                print(f"  {im:22s} blind - bicubic "
                      f"{np.mean([r['dan_blind'] - r['bicubic'] for r in rs]):+6.2f} dB, "
                      f"true PSF - bicubic {np.mean([r['dan_true'] - r['bicubic'] for r in rs]):+6.2f}"
                      f" dB, FWHM error {np.median([r['fwhm_error'] for r in rs]):.0%}")
            beads = [r for r in mb.real_beads(model, lambda m: None)
                     if abs(r["dz"]) <= 6 and r["dz"] % 2 == 0]
            print("  real beads, dz: blind / averaged PSF FWHM (px): " + ", ".join(
                f"{r['dz']:+d}: {r['dan']:.2f} / {r['psf_avg'] or float('nan'):.2f}" for r in beads),
                flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
