"""The ``napari-dan`` command: ``super-resolve``, ``models``, ``demo`` (and ``train``/``evaluate``
where :mod:`napari_dan.training.cli` provides them). Documentation: docs/cli.md.

Exit codes: 0 success (skipped files count as success), 1 some file or step failed,
2 bad usage (a bad option or argument: nothing was processed), 130 interrupted with Ctrl-C,
143 stopped by SIGTERM (129 SIGHUP); completed files are kept, nothing half-written remains.
Errors are one line on stderr (``napari-dan: error: ...``); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from . import __version__
from .errors import DanError, Terminated, UsageError, clean_message

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _err(msg: object) -> None:
    print(f"napari-dan: error: {clean_message(msg, 2000)}", file=sys.stderr)


def _whole(minimum: int, what: str, auto: bool = False):
    """An argparse type: a whole number >= ``minimum`` (or "auto" where ``auto``)."""
    def parse(v: str) -> int | str:
        if auto and v == "auto":
            return v
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be {'auto or ' if auto else ''}a whole number ({what}), got {v!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum} ({what}), got {n}")
        return n
    return parse


_tile_size = _whole(16, "LR pixels", auto=True)
_tile_overlap = _whole(0, "LR pixels", auto=True)
_threads = _whole(1, "CPU threads", auto=True)
_rounds = _whole(1, "estimation rounds", auto=True)


def _iterations(v: str) -> int | str:
    """--iterations: auto, settled or a whole number of rounds."""
    if v in ("auto", "settled"):
        return v
    try:
        int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be auto, settled or a whole number of estimation rounds (>= 1), "
            f"got {v!r}") from None
    return _rounds(v)  # a whole number: checked against the minimum there
_series = _whole(0, "a series number")


def _kernel_views(v: str) -> int | str:
    """--kernel-views: auto or a number (argparse then checks it is 1, 4 or 8)."""
    if v == "auto":
        return v
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be auto, 1, 4 or 8, got {v!r}") from None
_positive = _whole(1, "a count")


def _parse_channel_axis(v: str) -> int | str:
    try:
        return int(v)
    except ValueError:
        if len(v) == 1 and v.isalpha():
            return v.upper()
        raise argparse.ArgumentTypeError(f"must be an axis index (e.g. 2 or -1) or an axis "
                                         f"letter (e.g. C), got {v!r}") from None


# --------------------------------------------------------------------------------------------
# super-resolve


_OPTICS_FLAGS = (("na", "--na"), ("emission", "--emission"), ("excitation", "--excitation"),
                 ("immersion", "--immersion"), ("pixel_size", "--pixel-size"))


def _psf_choice(args: argparse.Namespace):
    """--psf as run_batch takes it: a file, "spots", or (``--psf optics``) an Optics built from
    --na, --emission (nm), --excitation (nm), --immersion and --pixel-size (µm)."""
    given = [flag for name, flag in _OPTICS_FLAGS if getattr(args, name) is not None]
    if args.psf != "optics":
        if given:
            raise UsageError(f"{', '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} "
                             "with --psf optics")
        return args.psf
    what = {"--na": "the objective's numerical aperture", "--emission": "the emission "
            "wavelength in nm"}
    missing = [flag for name, flag in _OPTICS_FLAGS[:2] if getattr(args, name) is None]
    if missing:  # ask for what is missing, and only that
        raise UsageError(f"--psf optics needs {' and '.join(missing)} ("
                         + " and ".join(what[f] for f in missing) + ")")
    for name in ("emission", "excitation"):
        nm = getattr(args, name)
        if nm is not None and not 200 <= nm <= 2000:
            raise UsageError(f"--{name} is a wavelength in nm (e.g. 520), got {nm:g}")
    from .imaging.psf import Optics

    try:
        return Optics(na=args.na, wavelength=args.emission / 1000, pixel_size=args.pixel_size,
                      ni=1.515 if args.immersion is None else args.immersion,
                      excitation=None if args.excitation is None else args.excitation / 1000)
    except DanError as e:
        raise UsageError(f"--psf optics: {e}") from None


def _cmd_super_resolve(args: argparse.Namespace) -> int:
    from .batch import run_batch
    from .engine.options import SROptions
    from .model import DEFAULT_MODEL

    model = args.model or DEFAULT_MODEL
    options = SROptions(kernel_mode=args.kernel_mode, tile_size=args.tile_size,
                        tile_overlap=args.tile_overlap, device=args.device,
                        precision=args.precision, threads=args.threads, runtime=args.runtime,
                        compiled=args.compile, iterations=args.iterations,
                        kernel_views=args.kernel_views)
    summary = run_batch(args.inputs, args.output_dir, model, options, psf=_psf_choice(args),
                        channel_axis=args.channel_axis, series=args.series,
                        overwrite=args.overwrite, scheduler=args.scheduler,
                        workers=args.workers, quiet=args.quiet)
    if not args.quiet or summary.failed:
        print(summary.text(), file=sys.stderr if summary.failed else sys.stdout)
    return EXIT_FAILED if summary.failed else EXIT_OK


# --------------------------------------------------------------------------------------------
# models


def _cmd_models(args: argparse.Namespace) -> int:
    from .model import DEFAULT_MODEL, list_models

    models = list_models()
    if not models:
        print("no bundled models are installed; pass a checkpoint file with --model PATH")
        return EXIT_OK
    rows = [("name", "scale", "channels", "arch", "description")]
    for m in models:
        star = " (default)" if m["name"] == DEFAULT_MODEL else ""
        rows.append((m["name"] + star, f"x{m['scale']}", str(m["in_channels"]),
                     m["architecture"], m["description"] or ""))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r[:4])) + "  " + r[4])
    if args.verbose:
        for m in models:
            if m.get("metrics"):
                print(f"{m['name']} metrics: {m['metrics']}")
            print(f"{m['name']} file: {m['path']}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# parser and entry point


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands register ``func=callable(args) -> int``)."""
    p = argparse.ArgumentParser(
        prog="napari-dan",
        description="Blind super-resolution with DAN: batch-process TIFF stacks, list models, "
                    "run the demo. Documentation: docs/cli.md.")
    p.add_argument("--version", action="version", version=f"napari-dan {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="show tracebacks and the TIFF library's log messages")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sr = sub.add_parser(
        "super-resolve", help="super-resolve TIFF files or stacks",
        description="Super-resolve TIFF images and stacks plane by plane. For each INPUT writes "
                    "OUTPUT_DIR/<stem>_x<s>.tif (same dtype, axes and metadata; pixel size / s) "
                    "and <stem>_x<s>_kernel.tif (float32 kernels, statistics as JSON in the "
                    "description). An existing output made from the same input, model and "
                    "options is skipped, any other is refused (see --overwrite); inputs are "
                    "never overwritten.")
    sr.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="TIFF files, directories (every .tif/.tiff inside) or glob patterns")
    sr.add_argument("-o", "--output-dir", required=True, metavar="DIR",
                    help="where the outputs go (created if needed)")
    sr.add_argument("-m", "--model", metavar="NAME|PATH",
                    help="bundled model name (see 'napari-dan models') or checkpoint file; "
                         "default: the bundled default model")
    sr.add_argument("--kernel-mode", choices=("global", "per-plane", "per-tile"),
                    default="global",
                    help="one kernel per file (default), one per plane, or one per tile")
    sr.add_argument("--psf", metavar="FILE|spots|optics",
                    help="measured PSF (TIFF 2D/3D or .npy), 'spots' to measure it from "
                         "isolated spots (beads, puncta) of each input, or 'optics' for the "
                         "theoretical PSF of --na and --emission: non-blind, no kernel "
                         "estimation")
    op = sr.add_argument_group("--psf optics", "the theoretical in-focus PSF (Gibson-Lanni "
                               "with psfmodels installed, else a Gaussian of its FWHM)")
    op.add_argument("--na", type=float, metavar="NA", help="numerical aperture of the objective")
    op.add_argument("--emission", type=float, metavar="NM", help="emission wavelength in nm")
    op.add_argument("--excitation", type=float, metavar="NM",
                    help="excitation wavelength in nm: a confocal PSF (pinhole closed); "
                         "default: widefield")
    op.add_argument("--immersion", type=float, metavar="N",
                    help="refractive index of the immersion medium (default 1.515, oil)")
    op.add_argument("--pixel-size", type=float, metavar="UM",
                    help="input pixel size in µm at the sample (default: what each file "
                         "states)")
    sr.add_argument("--tile-size", type=_tile_size, default="auto", metavar="N",
                    help="tile side in input pixels (default: auto, from device memory)")
    sr.add_argument("--tile-overlap", type=_tile_overlap, default="auto", metavar="N",
                    help="overlap of neighbouring tiles in input pixels (default: auto, the "
                         "network's receptive field)")
    sr.add_argument("--device", default="auto",
                    help="auto (default), cpu, cuda, cuda:N or mps")
    sr.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                    help="network precision (default: auto)")
    sr.add_argument("--iterations", type=_iterations, default="auto", metavar="N",
                    help="rounds of DAN's estimation loop before restoring with the last "
                         "kernel: auto (default: up to 4, stopping once the kernel stops moving, "
                         "for napari-dan's models; 3 for the authors' checkpoints, as released), "
                         "settled, or a number (docs/benchmarks.md)")
    sr.add_argument("--kernel-views", dest="kernel_views", default="auto",
                    type=_kernel_views, choices=("auto", 1, 4, 8),
                    help="estimate the kernel on this many mirror images of each estimation "
                         "patch and average them: auto (default: 4 for napari-dan's microscopy "
                         "models in global and per-plane mode; 1 in per-tile mode, for the photo "
                         "models and for the authors' checkpoints), 1, 4 (flips) or 8 (flips "
                         "and transposes)")
    sr.add_argument("--threads", type=_threads, default="auto", metavar="N",
                    help="CPU threads: a number, or auto (default): the cores other processes "
                         "leave idle, measured before every plane, at most OMP_NUM_THREADS")
    sr.add_argument("--runtime", default="torch", choices=("torch", "openvino"),
                    help="what runs the network: torch (default) or openvino (CPU, fp32/bf16, "
                         "needs the openvino package; no faster than torch on this project's "
                         "CPU, docs/engine.md)")
    sr.add_argument("--compile", action="store_true",
                    help="restore through torch.compile: faster per tile on large stacks, but "
                         "a compilation per tile shape first, and a C compiler (docs/engine.md)")
    sr.add_argument("--channel-axis", type=_parse_channel_axis, metavar="N",
                    help="axis of the file that holds channels (index or letter such as C); "
                         "default: RGB samples (S), else C")
    sr.add_argument("--series", type=_series, metavar="N",
                    help="image series of multi-series TIFFs to process (default: the first, "
                         "with a warning when a file has more)")
    sr.add_argument("--overwrite", action="store_true",
                    help="replace existing outputs; without it an output made from the same "
                         "input, model and options is skipped and any other is refused")
    cl = sr.add_mutually_exclusive_group()
    cl.add_argument("--scheduler", metavar="ADDRESS",
                    help="process planes on a running dask.distributed cluster "
                         "(e.g. tcp://host:8786)")
    cl.add_argument("--workers", type=_positive, metavar="N",
                    help="start a local dask cluster of N single-threaded worker processes")
    sr.add_argument("-q", "--quiet", action="store_true",
                    help="no progress bars or per-file lines (errors are still printed)")
    sr.set_defaults(func=_cmd_super_resolve)

    mo = sub.add_parser("models", help="list the bundled models",
                        description="List the bundled models: name, scale, channels, "
                                    "architecture and description.")
    mo.add_argument("-v", "--verbose", action="store_true", help="also metrics and file paths")
    mo.set_defaults(func=_cmd_models)

    de = sub.add_parser(
        "demo", help="run the bundled default model on a bundled sample",
        description="Run a model (default: the bundled default) on a bundled sample image "
                    "degraded with a known kernel; write the super-resolved TIFF, the kernel "
                    "TIFF and a side-by-side PNG (input, bicubic, DAN, truth, kernels).")
    de.add_argument("-o", "--output-dir", default="napari-dan-demo", metavar="DIR",
                    help="where to write (default: ./napari-dan-demo)")
    de.add_argument("-m", "--model", metavar="NAME|PATH", help="model to run instead")
    de.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    de.set_defaults(func=_cmd_demo)

    from .training import cli as training_cli  # train and evaluate live with the training code

    training_cli.register(sub)
    for sp in sub.choices.values():  # also accepted after the subcommand
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and the TIFF library's log messages")
    return p


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


def _install_signal_handlers() -> dict:
    """SIGTERM (and SIGHUP) unwind like Ctrl-C, so partial files are removed on the way out;
    returns the previous handlers. Only in the main thread (signal's rule)."""
    old = {}
    if _in_main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
                old[sig] = signal.signal(sig, _raise_terminated)
    return old


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-dan`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    tiff_log = logging.getLogger("tifffile")
    quiet_tiff = not args.debug and not tiff_log.handlers
    if quiet_tiff:  # tifffile logs every oddity of a file; our own message says what matters
        tiff_log.addHandler(logging.NullHandler())
        tiff_log.propagate = False
    old_handlers = _install_signal_handlers()
    try:
        return int(args.func(args) or 0)
    except Terminated as e:
        print(f"\nnapari-dan: stopped by {signal.Signals(e.signum).name}; completed outputs are "
              "kept and no partial file remains. Run the same command again to continue.",
              file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("\nnapari-dan: interrupted; completed outputs are kept and no partial file "
              "remains. Run the same command again to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as e:
        if args.debug:
            raise
        _err(e)
        return EXIT_USAGE
    except DanError as e:
        if args.debug:
            raise
        _err(e)
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001  (a bug or an unforeseen failure: one line, not a dump)
        if args.debug:
            raise
        _err(f"unexpected {type(e).__name__}: {e} (run again with --debug for the traceback, "
             "and please report it)")
        return EXIT_FAILED
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if quiet_tiff:
            tiff_log.propagate = True
            for h in [h for h in tiff_log.handlers if isinstance(h, logging.NullHandler)]:
                tiff_log.removeHandler(h)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
