"""Microscopy benchmark: the gray models against bicubic and Richardson-Lucy with the true PSF.

Ground truth: the 2D images of ../shared/data/microscopy, and for 3D stacks the middle plane and
the maximum-intensity projection (the averaged PSF file is not an image and is skipped); each is
normalised to [0, 1] by its 0.1 / 99.9 percentiles (clipped) and mod-cropped to the scale.
Images the gray models were trained on (``napari_dan.training.recipes``) are flagged and kept out
of the headline table.

Degradation (``napari_dan.training.degradations.degrade``): a Gaussian PSF on the HR grid (three
widths per scale, from the Gaussian8 range), MATLAB antialiased bicubic downsampling,
Poisson-Gaussian noise at several levels (``photons`` = expected count at intensity 1.0,
``read_noise`` = Gaussian sigma in the same [0, 1] units), then 16-bit quantisation. Seeded.

Methods, all scored with PSNR / SSIM on 255 * gray (``napari_dan.training.metrics``; border of s
pixels; outputs clipped to [0, 1], *not* quantised to 8 bit, since microscopy data is 16-bit):

* bicubic: MATLAB-style bicubic upscaling;
* Richardson-Lucy: ``skimage.restoration.richardson_lucy`` on the bicubic upscaling with the true
  HR-grid PSF (reflect-padded by the PSF radius so the FFT's zero border does not ring), at
  several iteration counts; the table shows, per noise level, the count with the best mean PSNR
  on these very images (chosen with the ground truth: an upper bound for RL, favouring it);
* DAN blind (through ``napari_dan.super_resolve`` on the 16-bit LR image, as a user would run it,
  or whole-image with ``--whole-image``) and DAN given the true PSF (``network.restore``), with
  the kernel's sigma error.

Run (rewrites the microscopy section of docs/quality.md)::

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/microscopy.py

Quick check (2 images, 1 PSF, 2 noise levels; stdout)::

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/microscopy.py --quick --model runs/x/x.pt
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DOC, ROOT, command_line, machine, publish  # noqa: E402

MICRO = ROOT.parent / "shared" / "data" / "microscopy"

#: PSF sigmas (HR pixels) per scale: the ends and middle of the Gaussian8 range
PSF_SIGMAS = {2: (0.8, 1.2, 1.6), 3: (1.35, 1.9, 2.4), 4: (1.8, 2.5, 3.2)}
#: noise levels: name -> degrade(noise=...) (None: noise-free, 16-bit quantisation only)
NOISE = {"none": None,
         "high SNR (1000 ph, read 0.005)": {"photons": 1000.0, "read_noise": 0.005},
         "medium (200 ph, read 0.01)": {"photons": 200.0, "read_noise": 0.01},
         "low SNR (50 ph, read 0.02)": {"photons": 50.0, "read_noise": 0.02}}
RL_ITERATIONS = (2, 5, 10, 20, 40, 80)
PSF_SIZE = 21


def normalise(img: np.ndarray, lo: float = 0.1, hi: float = 99.9) -> np.ndarray:
    """Percentile normalisation to [0, 1], clipped."""
    a = img.astype(np.float64)
    p0, p1 = np.percentile(a, [lo, hi])
    if p1 <= p0:
        raise ValueError("image is constant between its percentiles")
    return np.clip((a - p0) / (p1 - p0), 0, 1)


def training_files() -> set[str]:
    """File names the gray recipes train on (so their results can be flagged)."""
    try:
        from napari_dan.training.recipes import RECIPES
    except ImportError:
        return set()
    names = set()
    for r in RECIPES.values():
        if r.get("in_nc") == 1:
            names |= {Path(d).name for d in r.get("data", [])}
    return names


def load_images(folder: Path) -> list[dict]:
    """Ground-truth planes: name, data in [0, 1], in_training flag."""
    import tifffile

    train = training_files()
    out = []
    for f in sorted(folder.glob("*.tif*")):
        if "psf" in f.stem.lower():
            continue  # a PSF measurement, not a specimen
        a = np.squeeze(tifffile.imread(f))
        flag = f.name in train
        if a.ndim == 2:
            planes = {f.stem: a}
        elif a.ndim == 3:
            planes = {f"{f.stem} z{a.shape[0] // 2}": a[a.shape[0] // 2], f"{f.stem} MIP": a.max(0)}
        else:
            print(f"skipping {f.name}: shape {a.shape}", file=sys.stderr)
            continue
        for name, p in planes.items():
            out.append({"name": name, "hr": normalise(p), "in_training": flag})
    # held-out 2D images first, so that --max-images / --quick keep the ones that matter most
    return sorted(out, key=lambda d: (d["in_training"], d["name"].endswith("MIP") or " z" in d["name"]))


def richardson_lucy(img: np.ndarray, psf: np.ndarray, iterations: int) -> np.ndarray:
    from skimage.restoration import richardson_lucy as rl

    r = psf.shape[0] // 2
    padded = np.pad(np.clip(img, 0, 1), r, mode="reflect")
    return rl(padded, psf, num_iter=iterations, clip=False)[r:-r, r:-r]


def run(models: list, images: list[dict], scales: list[int], sigmas_per_scale: dict, noise: dict,
        whole_image: bool, device: str, log) -> list[dict]:
    from napari_dan.model.kernels import gaussian_kernel
    from napari_dan.training.degradations import degrade, imresize
    from napari_dan.training.evaluate import _ModelRunner, mod_crop
    from napari_dan.training.metrics import kernel_errors, y_psnr, y_ssim

    runners = {m.name: _ModelRunner(m, whole_image, device, "fp32") for m in models}
    records = []
    for scale in scales:
        here = [m for m in models if m.scale == scale]
        for i, im in enumerate(images):
            hr = mod_crop(im["hr"], scale)
            for j, sigma in enumerate(sigmas_per_scale[scale]):
                psf = gaussian_kernel(PSF_SIZE, sigma).astype(np.float64)
                for n, (level, nz) in enumerate(noise.items()):
                    rng = np.random.default_rng(10_000 * scale + 100 * i + 10 * j + n)
                    lr = degrade(hr, psf, scale, noise=nz, quantize_bits=16, rng=rng)
                    rec = {"scale": scale, "image": im["name"], "in_training": im["in_training"],
                           "sigma": sigma, "noise": level, "psnr": {}, "ssim": {}, "kernel": {}}

                    def score(key, out, rec=rec, hr=hr, border=scale):
                        out = np.clip(out, 0, 1)
                        rec["psnr"][key], rec["ssim"][key] = y_psnr(out, hr, border), y_ssim(out, hr, border)

                    bic = imresize(lr, scale)
                    score("bicubic", bic)
                    for it in RL_ITERATIONS:
                        score(f"rl{it}", richardson_lucy(bic, psf, it))
                    for m in here:
                        r = runners[m.name]
                        sr, k_est = r.blind(lr, bits=16)
                        score(f"dan:{m.name}", sr)
                        score(f"true:{m.name}", r.non_blind(lr, psf))
                        rec["kernel"][m.name] = kernel_errors(k_est, psf)
                    records.append(rec)
                    log(f"x{scale} {im['name']} sigma {sigma} {level}: bicubic "
                        f"{rec['psnr']['bicubic']:.2f}" + "".join(
                            f", {m.name} {rec['psnr'][f'dan:{m.name}']:.2f}" for m in here))
    return records


def _mean(recs, kind, key):
    return float(np.mean([r[kind][key] for r in recs]))


def markdown(records: list[dict], models: list, quick: bool, seconds: float, whole_image: bool) -> str:
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    images = list(dict.fromkeys((r["image"], r["in_training"]) for r in records))
    lines = ["## Microscopy: Gaussian PSFs and Poisson-Gaussian noise", ""]
    if quick:
        lines += ["**Quick run (subset of images, PSFs and noise levels).**", ""]
    lines += [f"Command: `{command_line()}`  ", f"Date: {date}; {seconds / 60:.1f} min on {machine()}.", "",
              "Ground truth: " + ", ".join(f"`{n}`" + (" (in the gray models' training data)" if t else "")
                                           for n, t in images) + ".",
              "Degradation: Gaussian PSF (21x21, HR grid), antialiased bicubic downsampling, "
              "Poisson-Gaussian noise (photons at intensity 1.0, read noise in [0, 1] units), 16-bit. "
              "PSNR / SSIM on 255 * gray, border = scale, outputs clipped to [0, 1] (not 8-bit). "
              f"Richardson-Lucy: true PSF on the bicubic upscaling, iterations tried {list(RL_ITERATIONS)}; "
              "the count shown is the best for that noise level on these images (an upper bound for RL). "
              "DAN (blind): " + ("whole image" if whole_image else "`napari_dan.super_resolve` on the "
                                 "16-bit LR image (percentile normalisation)") +
              "; DAN (true PSF): the model's Restorer given the true PSF. The ground truths are real "
              "acquisitions with noise of their own (the grid has only 8 grey levels), which caps every "
              "method's PSNR: compare the methods with each other, not with the photograph tables.", ""]
    if not models:
        lines += ["*No gray model was given or bundled: bicubic and Richardson-Lucy only.*", ""]
    for scale in sorted({r["scale"] for r in records}):
        rs = [r for r in records if r["scale"] == scale]
        held = [r for r in rs if not r["in_training"]]
        which = "held-out images"
        if not held:
            held, which = rs, "all images (none held out from training)"
        here = [m for m in models if m.scale == scale]
        sig = sorted({r["sigma"] for r in rs})
        lines += [f"### x{scale}, {which} (PSF sigma {', '.join(f'{s:g}' for s in sig)} px, "
                  "mean over images and PSFs)", ""]
        head = ["noise", "bicubic", "Richardson-Lucy (true PSF)"]
        for m in here:
            head += [f"{m.name} blind", f"{m.name} true PSF", f"{m.name} abs sigma error (px)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for level in dict.fromkeys(r["noise"] for r in rs):
            g = [r for r in held if r["noise"] == level]
            best = max(RL_ITERATIONS, key=lambda it, g=g: _mean(g, "psnr", f"rl{it}"))
            cells = [level, f"{_mean(g, 'psnr', 'bicubic'):.2f} / {_mean(g, 'ssim', 'bicubic'):.4f}",
                     f"{_mean(g, 'psnr', f'rl{best}'):.2f} / {_mean(g, 'ssim', f'rl{best}'):.4f} ({best} it)"]
            for m in here:
                for key in (f"dan:{m.name}", f"true:{m.name}"):
                    cells.append(f"{_mean(g, 'psnr', key):.2f} / {_mean(g, 'ssim', key):.4f}")
                cells.append(f"{np.mean([r['kernel'][m.name]['abs_sigma_error'] for r in g]):.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Per image (x{scale}, PSNR, mean over PSFs and noise levels; RL at each count):", ""]
        head = ["image", "bicubic", *(f"RL {it}" for it in RL_ITERATIONS), *(f"{m.name} blind" for m in here)]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, t in images:
            g = [r for r in rs if r["image"] == name]
            cells = [name + (" (training)" if t else ""), f"{_mean(g, 'psnr', 'bicubic'):.2f}",
                     *(f"{_mean(g, 'psnr', f'rl{it}'):.2f}" for it in RL_ITERATIONS),
                     *(f"{_mean(g, 'psnr', f'dan:{m.name}'):.2f}" for m in here)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-m", nargs="+", action="extend", metavar="NAME_OR_PATH",
                   help="models (default: every bundled gray model)")
    p.add_argument("--data", type=Path, default=MICRO, help=f"folder of TIFFs (default {MICRO})")
    p.add_argument("--scale", type=int, nargs="+", choices=(2, 3, 4),
                   help="scales to run without models (default: the models' scales, else 2 and 4)")
    p.add_argument("--max-images", type=int, metavar="N", help="first N ground-truth planes")
    p.add_argument("--quick", action="store_true",
                   help="2 planes, the middle PSF, no noise and medium noise; stdout unless --output")
    p.add_argument("--whole-image", action="store_true", help="network on whole images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", help=f"markdown file to update (default {DOC.relative_to(ROOT)}; "
                   "with --quick: stdout); '-' for stdout")
    p.add_argument("--json", metavar="PATH", help="every record as JSON")
    p.add_argument("--quiet", "-q", action="store_true")
    args = p.parse_args(argv)

    import napari_dan

    names = args.model or [m["name"] for m in napari_dan.list_models() if m["in_channels"] == 1]
    models = [napari_dan.load_model(n) for n in names]
    scales = sorted({m.scale for m in models}) or args.scale or [2, 4]
    if not args.data.is_dir():
        print(f"error: {args.data} is not a folder; pass --data", file=sys.stderr)
        return 2
    images = load_images(args.data)
    max_images = args.max_images or (2 if args.quick else None)
    images = images[:max_images] if max_images else images
    sigmas = {s: (PSF_SIGMAS[s][1],) if args.quick else PSF_SIGMAS[s] for s in scales}
    noise = {k: v for k, v in NOISE.items() if k in ("none", "medium (200 ph, read 0.01)")} \
        if args.quick else NOISE
    output = args.output or ("-" if args.quick else str(DOC))

    t0 = time.perf_counter()
    records = run(models, images, scales, sigmas, noise, args.whole_image, args.device,
                  log=(lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True)))
    md = markdown(records, models, args.quick, time.perf_counter() - t0, args.whole_image)
    publish(md, output, "microscopy", "benchmarks/microscopy.py", args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
