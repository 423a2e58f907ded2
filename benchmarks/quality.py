"""Gaussian8 quality of every bundled model on Set5 and Set14, written to docs/quality.md.

The protocol is ``napari_dan.training.evaluate`` (dan-facts.md exactly): HR mod-cropped, 8
isotropic 21x21 Gaussians per image, MATLAB antialiased bicubic downsampling, uint8 LR; the SR
output quantised to uint8; Y-PSNR / SSIM with a border of ``scale`` pixels. Each model is shown
with the bicubic and the true-kernel (non-blind) baselines and the DANv2 paper numbers.

Run (full, rewrites the Gaussian8 section of docs/quality.md)::

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/quality.py

Runs made in parallel (one thread each), published together afterwards::

    env OMP_NUM_THREADS=1 python benchmarks/quality.py --model dan-x2-rgb dan-x4-rgb \
        --output /tmp/a.md --json /tmp/a.json &
    env OMP_NUM_THREADS=1 python benchmarks/quality.py --model dan-x2-gray dan-x4-gray \
        --output /tmp/b.md --json /tmp/b.json
    python benchmarks/quality.py --merge /tmp/a.json /tmp/b.json --json docs/quality-gaussian8.json

Re-measure only some models and keep the other rows of an earlier run (each row says when and
where it was measured)::

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/quality.py --model dan-x4-rgb \
        --keep docs/quality-gaussian8.json --json docs/quality-gaussian8.json

Quick check of any checkpoint (2 images per set, markdown on stdout, docs untouched)::

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/quality.py --quick --model runs/x/x.pt
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "data" / "bench"
DOC = ROOT / "docs" / "quality.md"

#: published DANv2 Gaussian8 Y-PSNR / SSIM (dan-facts.md); None where the paper gives no SSIM here
PAPER = {(4, "Set5"): (32.00, 0.8885), (4, "Set14"): (28.50, 0.7715),
         (2, "Set5"): (37.60, None), (2, "Set14"): (33.44, None),
         (3, "Set5"): (34.19, None), (3, "Set14"): (30.20, None)}
#: the issue's bicubic figures for these inputs (Y-PSNR)
BICUBIC_REFERENCE = {(4, "Set5"): 25.9, (4, "Set14"): 24.3, (2, "Set5"): 30.4, (2, "Set14"): 27.7}

INTRO = """# Quality

How well the models restore images they were not trained on, measured the way the DAN papers
measure it, and on microscopy data. Every number here is written by a script in `benchmarks/`;
the exact command and the date are given with each table. Nothing here is edited by hand.

## Conventions

* **Gaussian8** (the papers' setting-1 tables; `napari_dan.training.evaluate`): each HR image is
  mod-cropped to a multiple of the scale s; 8 isotropic 21x21 Gaussian kernels per image with
  sigma = linspace(lo, hi, 8), x2 [0.80, 1.60], x3 [1.35, 2.40], x4 [1.80, 3.20]; blur (reflect
  padding), MATLAB antialiased bicubic downsampling, 8-bit quantisation. The set's number is the
  mean over all image-kernel pairs.
* **Scores** (`napari_dan.imaging.metrics`): PSNR (peak 255) and SSIM (11x11 Gaussian window,
  sigma 1.5, C1 = (0.01*255)^2, C2 = (0.03*255)^2, valid region) on BT.601 Y =
  16 + 65.481 R + 128.553 G + 24.966 B (RGB in [0, 1], not rounded), after cropping s pixels on
  every side. Every method's output is first quantised to 8 bit, `round(clip(sr, 0, 1) * 255)`,
  as the papers do. A gray image in Set14 (`bridge`) is replicated to RGB for RGB models, as the
  authors' OpenCV reading does.
* **Gray models** are scored on 255 * gray, gray = 0.299 R + 0.587 G + 0.114 B = (Y - 16) / 219.
  The same error reads 1.32 dB lower on that scale than on Y, so gray-model numbers are compared
  only with the gray bicubic and true-kernel baselines next to them, never with RGB numbers.
* **Baselines**: *bicubic* = MATLAB-style bicubic upscaling of the LR input; *true kernel* = the
  model's own Restorer given the true kernel's code (`network.restore(lr, network.encode(k))`),
  the ceiling of a perfect kernel estimate; *kernel error* = |sigma_est - sigma_true| in HR pixels
  (round-equivalent sigma from `kernel_stats`, both kernels measured the same way) and the L1
  distance between the kernels (0 = equal, 2 = disjoint).
* **DAN (blind)** runs through `napari_dan.super_resolve` (tiling, one global kernel; fp32) unless
  the table says *whole-image* (`model.network(lr)` on the whole image, the papers' way).
"""

_BEGIN = "<!-- BEGIN {key}: written by {script}; do not edit by hand -->"
_END = "<!-- END {key} -->"


def write_section(path: Path, key: str, body: str, script: str) -> None:
    """Replace (or append) the marked section ``key`` of ``path``; create the file with INTRO."""
    begin, end = _BEGIN.format(key=key, script=script), _END.format(key=key)
    text = path.read_text() if path.exists() else INTRO
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape("<!-- BEGIN " + key + ":") + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")


def refresh_intro(path: Path) -> None:
    """Keep the conventions at the top of the file current (the text above the first section)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(INTRO)
        return
    text = path.read_text()
    i = text.find("<!-- BEGIN ")
    path.write_text(INTRO.rstrip() + "\n\n" + (text[i:] if i >= 0 else ""))


def publish(md: str, output: str, key: str, script: str, json_path: str | None, payload) -> None:
    """Print the table (``output`` "-") or write it as section ``key`` of ``output``; dump
    ``payload`` (already JSON-safe) to ``json_path`` if given."""
    if output == "-":
        print(md)
    else:
        refresh_intro(Path(output))
        write_section(Path(output), key, md, script)
        print(f"wrote {output}", file=sys.stderr)
    if json_path:
        Path(json_path).write_text(json.dumps(payload, indent=1) + "\n")


def command_line() -> str:
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    niceness = os.nice(0)  # say "nice" only when the run was niced
    return f"{f'nice -n {niceness} ' if niceness else ''}env OMP_NUM_THREADS={threads} python " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        name = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
        cpu = f"{cpu} ({name})"
    except (OSError, StopIteration):
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} CPU threads visible, {dev}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def _pair(p, s) -> str:
    if p is None:
        return "-"
    return f"{p:.2f}" + (f" / {s:.4f}" if s is not None else "")


def summary_rows(res: dict) -> str:
    scale, ds = res["protocol"]["scale"], res["dataset"]
    m, mean = res["model"], res["mean"]
    if m is None:  # bicubic-only run (the protocol's sanity check)
        ref = BICUBIC_REFERENCE.get((scale, ds))
        return (f"| bicubic only | x{scale} | RGB | {ds} | - | - | "
                f"**{_pair(mean['psnr']['bicubic'], mean['ssim']['bicubic'])}** (issue: {ref or '-'}) | "
                f"{_pair(*PAPER[(scale, ds)]) if (scale, ds) in PAPER else '-'} | - | - | - | "
                f"{res['seconds']:.0f} |")
    wins = sum(1 for r in res["per_image"] if r["psnr"]["dan"] > r["psnr"]["bicubic"])
    gray = res["protocol"]["channels"] == 1
    paper = PAPER.get((scale, ds))
    paper_cell = "n/a (RGB)" if gray else (_pair(*paper) if paper else "-")
    nb = mean["psnr"].get("non_blind")
    return (f"| {m['name']} | x{scale} | {'gray' if gray else 'RGB'} | {ds} | "
            f"**{_pair(mean['psnr']['dan'], mean['ssim']['dan'])}** | "
            f"{_pair(nb, mean['ssim'].get('non_blind')) if nb is not None else '-'} | "
            f"{_pair(mean['psnr']['bicubic'], mean['ssim']['bicubic'])} | {paper_cell} | "
            f"{wins}/{len(res['per_image'])} | {mean['kernel']['abs_sigma_error']:.3f} | "
            f"{mean['kernel']['l1']:.3f} | {res['seconds']:.0f} |")


#: the stamp of rows written before results carried their own (the first full run, session 1)
_FIRST_RUN = {"date": "2026-11-25 19:52 UTC",
              "machine": "x86_64 (AMD EPYC with avx512_bf16), 2 CPU threads visible, no GPU; Python 3.11.7, "
                         "torch 2.13.0+cpu",
              "command": "nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/quality.py --json "
                         "docs/quality-gaussian8.json"}


def _key(res: dict) -> tuple:
    m = res["model"]
    return (m["name"] if m else f"bicubic x{res['protocol']['scale']}", res["dataset"])


def merge_kept(results: list[dict], kept: list[dict]) -> list[dict]:
    """The kept rows in their order, each replaced by a new result for the same model and set;
    new results without a kept row are appended."""
    new = {_key(r): r for r in results}
    out = [new.pop(_key(r)) if _key(r) in new
           else dict(r, measured=r.get("measured") or _FIRST_RUN, carried_over=True) for r in kept]
    return out + [r for r in results if _key(r) in new]


def markdown(results: list[dict], *, quick: bool, max_images: int | None, seconds: float) -> str:
    from napari_dan.training.evaluate import format_table

    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    inference = sorted({r["inference"] for r in results if r["inference"]}) or ["none (bicubic only)"]
    lines = ["## Gaussian8 benchmark: Set5 and Set14", ""]
    if quick or max_images:
        lines += [f"**Partial run: only the first {max_images} images of each set** (not comparable "
                  "with the paper's set means).", ""]
    lines += [f"Command: `{command_line()}`  ", f"Date: {date}; {seconds / 60:.1f} min on {machine()}.  ",
              f"DAN inference: {', '.join(inference)}.", ""]
    runs = {}
    for r in results:
        st = r.get("measured") or {}
        if st.get("command") and not r.get("carried_over") and st["command"] != command_line():
            runs.setdefault((st["command"], st.get("date", "")), []).append(_key(r)[0])
    if runs:  # --merge: say which run measured which rows
        lines += ["Rows measured by: " + "; ".join(
            f"`{c}` ({d}: {', '.join(dict.fromkeys(v))})" for (c, d), v in runs.items()) +
            " (the minutes above are their sum).", ""]
    lines += ["| model | scale | channels | set | DAN (blind) PSNR / SSIM | true kernel | bicubic | "
              "paper DANv2 | DAN > bicubic (images) | abs sigma error (px) | kernel L1 | seconds |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [summary_rows(r) for r in results]
    groups: dict[tuple, list[str]] = {}
    for r in results:
        if r.get("carried_over") and _key(r)[0] not in groups.setdefault(
                (r["measured"]["date"], r["measured"]["machine"]), []):
            groups[(r["measured"]["date"], r["measured"]["machine"])].append(_key(r)[0])
    groups = {k: v for k, v in groups.items() if v}
    if groups:
        lines += ["", "Rows of unchanged models carried over from earlier runs (not re-measured here): "
                  + "; ".join(f"{', '.join(v)} (measured {d} on {m})" for (d, m), v in groups.items())
                  + ". The "
                  "seconds column is only comparable between rows measured on the same machine."]
    refs = ", ".join(f"x{s} {d} {v}" for (s, d), v in BICUBIC_REFERENCE.items())
    lines += ["", f"Bicubic figures the issue quotes for these inputs (Y-PSNR): {refs}.", "",
              "### Per image and per kernel width", ""]
    for r in results:
        who = r["model"]["name"] if r["model"] else f"bicubic x{r['protocol']['scale']}"
        lines += ["<details><summary>" + f"{who} on {r['dataset']}" + "</summary>", "",
                  format_table(r), "", "</details>", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-m", nargs="+", action="extend", metavar="NAME_OR_PATH",
                   help="models (bundled names or checkpoint files); default: every bundled model; "
                   "'bicubic' runs the bicubic baseline alone at --scale (the protocol's sanity check)")
    p.add_argument("--scale", type=int, nargs="+", choices=(2, 3, 4), default=[4, 2],
                   help="scales of a 'bicubic' run (default 4 2)")
    p.add_argument("--data", nargs="+", action="extend", metavar="DIR",
                   help=f"benchmark folders (default: {BENCH}/Set5 and Set14)")
    p.add_argument("--max-images", type=int, metavar="N", help="first N images of each set")
    p.add_argument("--quick", action="store_true",
                   help="2 images per set; markdown to stdout unless --output")
    p.add_argument("--no-non-blind", dest="non_blind", action="store_false",
                   help="skip the true-kernel baseline")
    p.add_argument("--whole-image", action="store_true", help="network on whole images (papers' way)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--output", help=f"markdown file to update (default {DOC.relative_to(ROOT)}; "
                   "with --quick: stdout); '-' for stdout")
    p.add_argument("--json", metavar="PATH", help="every number as JSON")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="measure nothing: publish the rows of earlier --json outputs together "
                   "(e.g. of runs made in parallel), each with the command that measured it")
    p.add_argument("--keep", metavar="JSON",
                   help="an earlier --json file: its rows for models not run now are kept (and "
                   "marked as carried over) in the markdown and the JSON")
    args = p.parse_args(argv)

    import napari_dan
    from napari_dan.training.evaluate import _json_safe, evaluate_gaussian8

    models = args.model or [m["name"] for m in napari_dan.list_models()]
    if not models:
        print("error: no bundled models in src/napari_dan/model/weights; pass --model PATH",
              file=sys.stderr)
        return 2
    data = [Path(d) for d in (args.data or [BENCH / "Set5", BENCH / "Set14"])]
    missing = [str(d) for d in data if not d.is_dir()]
    if missing:
        print(f"error: benchmark folder(s) not found: {', '.join(missing)}; pass --data", file=sys.stderr)
        return 2
    max_images = args.max_images or (2 if args.quick else None)
    output = args.output or ("-" if args.quick else str(DOC))

    stamp = {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
             "machine": machine(), "command": command_line()}
    if args.keep and not Path(args.keep).is_file():
        print(f"error: --keep {args.keep}: no such file (an earlier --json output)", file=sys.stderr)
        return 2
    kept = json.loads(Path(args.keep).read_text()) if args.keep else []
    t0 = time.perf_counter()
    if args.merge:
        from napari_dan.training.evaluate import _json_safe

        merged = [r for path in args.merge for r in json.loads(Path(path).read_text())]
        md = markdown(merged, quick=args.quick, max_images=max_images,
                      seconds=sum(r["seconds"] for r in merged))
        publish(md, output, "gaussian8", "benchmarks/quality.py", args.json, _json_safe(merged))
        return 0
    results = []
    jobs = []
    for name in models:
        if name == "bicubic":
            jobs += [(None, s) for s in args.scale]
        else:
            jobs.append((napari_dan.load_model(name), None))
    for model, scale in jobs:
        for d in data:
            label = f"{model.name} x{model.scale}" if model else f"bicubic x{scale}"
            print(f"{label} on {d.name} ...", file=sys.stderr, flush=True)
            res = evaluate_gaussian8(model, d, scale=scale, max_images=max_images,
                                     whole_image=args.whole_image, non_blind=args.non_blind,
                                     device=args.device)
            res["measured"] = stamp
            results.append(res)
            m = res["mean"]["psnr"]
            print(f"  DAN {m.get('dan', float('nan')):.2f} dB, bicubic {m['bicubic']:.2f} dB, "
                  f"true kernel {m.get('non_blind', float('nan')):.2f} dB ({res['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
    results = merge_kept(results, kept)
    md = markdown(results, quick=args.quick, max_images=max_images, seconds=time.perf_counter() - t0)
    publish(md, output, "gaussian8", "benchmarks/quality.py", args.json, _json_safe(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
