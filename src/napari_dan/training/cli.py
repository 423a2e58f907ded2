"""The ``napari-dan train`` and ``napari-dan evaluate`` subcommands (wired by napari_dan.cli)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import fields
from pathlib import Path

__all__ = ["register", "run_train"]


def _int_from(low: int):
    """An argparse type: an integer of at least ``low`` (else a one-line usage error, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from .recipes import RECIPES

    p.add_argument("--recipe", choices=sorted(RECIPES),
                   help="start from the recipe of a bundled model (the other options override it)")
    p.add_argument("--name", help="model name (default: the recipe's, or 'my-dan')")
    p.add_argument("--data", nargs="+", metavar="DIR_OR_FILE",
                   help="folders/files of training images (PNG, JPEG, TIFF; 8/16 bit; gray or RGB)")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="upscaling factor")
    p.add_argument("--channels", dest="in_nc", type=int, choices=(1, 3),
                   help="1 for grey/microscopy models, 3 for RGB")
    helps = {
        "nf": "Restorer features (released DANv2: 64)",
        "nb": "dual-path blocks per group (released: 10)",
        "ng": "groups of blocks (released: 5)",
        "est_nf": "Estimator features (released: 64)",
        "est_nb": "Estimator blocks (released: 5)",
        "code_len": "PCA kernel-code length (released: 10)",
        "kernel_size": "kernel side in HR pixels (released: 21)",
        "loop": "unrolled Estimator/Restorer iterations (released: 4)",
        "batch": "patches per step",
        "lr_patch": "LR patch side (HR side = this x scale)",
        "steps": "total training steps (the cosine schedule spans them)",
        "seed": "random seed (data, kernels, initialisation, PCA)",
        "threads": "CPU threads for torch (0: its default)",
        "checkpoint_every": "steps between resumable checkpoints",
        "val_every": "steps between validation PSNR measurements",
        "pca_samples": "kernels sampled to build the PCA basis",
    }
    from .train import MIN_LR_PATCH

    least = {"threads": 0, "lr_patch": MIN_LR_PATCH}  # the others: at least 1
    for name, text in helps.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=_int_from(least.get(name, 1)),
                       help=text)
    p.add_argument("--lr", type=float, help="initial learning rate (cosine decay)")
    p.add_argument("--budget-minutes", dest="budget_minutes", type=float,
                   help="training-time budget: the schedule (cosine decay, stage switch) ends "
                   "at whichever comes first, --steps or this many minutes of training")
    p.add_argument("--real-fraction", dest="real_fraction", type=float,
                   help="microscopy models: share of training fields whose specimen is a crop of "
                   "--data (real images) instead of a synthetic one")
    p.add_argument("--real-lr-patch", dest="real_lr_patch", type=int,
                   help="microscopy models: LR patch side of the real-specimen fields, when the "
                   "real images are too small for --lr-patch: each batch is then wholly real "
                   "(--real-fraction of the steps) or wholly synthetic, each at its own size")
    p.add_argument("--specimen-kinds", dest="specimen_kinds", nargs="+", metavar="KIND",
                   help="microscopy models: the synthetic specimen kinds to draw, each entry "
                   "equally often (repeat one to draw it more often; default: all kinds once)")
    p.add_argument("--bead-psf-fraction", dest="bead_psf_fraction", type=float,
                   help="microscopy models: share of training fields whose PSF is one measured "
                   "from beads of finite size (the PSF convolved with a bead 0.5-2x its FWHM: "
                   "flat-topped), as blur and as kernel label")
    p.add_argument("--lumpy-psf-fraction", dest="lumpy_psf_fraction", type=float,
                   help="microscopy models: share of training fields whose PSF is irregular "
                   "(uneven lobes, maximum off centre, faint texture; as real averaged bead PSFs "
                   "look), as blur and as kernel label")
    p.add_argument("--train-parts", dest="train_parts", choices=("all", "estimator"),
                   help="'estimator': freeze the Restorer and train the Estimator alone (the "
                        "images restored with a given kernel stay exactly as they were)")
    p.add_argument("--data-workers", dest="data_workers", type=int, metavar="N",
                   help="microscopy models: processes drawing the training fields (default 0: "
                   "the training process, as before; N >= 1: each field from its own seed, the "
                   "same fields for any N); on a GPU or many cores, about the number of cores")
    p.add_argument("--photons-range", dest="photons_range", type=float, nargs=2,
                   metavar=("LO", "HI"),
                   help="microscopy models: photons per unit brightness, log-uniform in this range")
    p.add_argument("--clean-fraction", dest="clean_fraction", type=float,
                   help="microscopy models: share of noise-free training fields")
    p.add_argument("--stage2", choices=("released", "matched"),
                   help="the loop stage: 'released' restores with round n-1's code and supervises "
                   "round n's kernel; 'matched' restores with round n's code (as the engine runs "
                   "our models) and supervises every round's kernel")
    p.add_argument("--width-weight", dest="width_weight", type=float,
                   help="weight of a loss on the kernel's width (|log| of the ratio of its second "
                   "moment to the true kernel's; 0: none)")
    p.add_argument("--restorer-frac", dest="restorer_frac", type=_fraction,
                   help="fraction of steps in stage 1 (Restorer on true kernel codes)")
    st = p.add_mutually_exclusive_group()
    st.add_argument("--no-stage1-estimator", dest="stage1_estimator", action="store_false",
                    default=None, help="stage 1 trains the Restorer alone (e.g. when the "
                    "Estimator is transferred with --init-from)")
    st.add_argument("--stage1-estimator", dest="stage1_estimator", action="store_true",
                    default=None, help="stage 1 also trains the Estimator (the default, unless "
                    "the recipe says otherwise)")
    p.add_argument("--setting", type=int, choices=(1, 2),
                   help="1: isotropic Gaussian kernels, 2: anisotropic (dan-facts.md)")
    p.add_argument("--sigma-range", dest="sigma_range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="Gaussian kernel standard deviation range in HR pixels (setting 1)")
    p.add_argument("--noise", action="store_true", default=None,
                   help="Poisson-Gaussian noise on part of the batch (microscopy)")
    p.add_argument("--init-from", dest="init_from", nargs="+", metavar="CHECKPOINT",
                   help="checkpoint(s) to transfer weights from, in order: a later one "
                   "overwrites the tensors whose shapes it fits")
    p.add_argument("--exclude", nargs="+", metavar="PATTERN",
                   help="leave out training files whose name or path matches these glob patterns "
                   "(recipes leave out the known copies of benchmark images)")
    p.add_argument("--device", help="auto, cpu, cuda, mps")
    p.add_argument("--bf16", choices=("auto", "on", "off"),
                   help="bf16 autocast (auto: on GPUs and on CPUs with native bf16)")
    p.add_argument("--run-dir", type=Path, help="folder for resumable state (default runs/NAME)")
    p.add_argument("--output", type=Path, help="exported checkpoint (default RUN_DIR/NAME.pt)")
    p.add_argument("--max-minutes", type=float,
                   help="stop (resumably) after this long; run the same command again to continue")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from .recipes import recipe
    from .train import TrainConfig, train

    names = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.recipe:
        cfg = recipe(args.recipe, **overrides)
    else:
        if not overrides.get("data"):
            print("error: give --data (folders of training images) or --recipe", file=sys.stderr)
            return 2
        overrides.setdefault("name", "my-dan")
        cfg = TrainConfig(**overrides)
    run_dir = args.run_dir or Path("runs") / cfg.name
    try:
        out = train(cfg, run_dir, export_to=args.output, max_minutes=args.max_minutes,
                    log=lambda m: print(m, flush=True))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C: 130; SIGTERM (the CLI's Terminated): 143
        from ..errors import Terminated

        signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
        how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        print(f"{how}; the state at the last finished step is in {run_dir}; run the same command "
              "again to resume",
              file=sys.stderr)
        return 128 + int(signum)
    if out is not None:
        print(json.dumps({"exported": str(out)}))
    return 0


def register(subparsers) -> None:
    """Add ``train`` and ``evaluate`` to the ``napari-dan`` command."""
    p = subparsers.add_parser("train", help="train a DAN model (resumable)",
                              description="Train a DANv2 model on folders of images. Re-running "
                              "the same command resumes from the last checkpoint.")
    _add_train_arguments(p)
    from .evaluate import add_evaluate_arguments, run_evaluate

    e = subparsers.add_parser("evaluate", help="Gaussian8 benchmark: Y-PSNR/SSIM, kernel error",
                              description="Evaluate models with the Gaussian8 protocol "
                              "(dan-facts.md) against bicubic and the true-kernel result.")
    add_evaluate_arguments(e)
    e.set_defaults(func=run_evaluate)
