"""Train an LR-only Estimator (:class:`~napari_dan.model.danv2.EstimatorLR`) for a DAN model
whose Restorer is kept as it is, then put the two together as one checkpoint.

DAN's own Estimator reads the SR image too, so every training step runs the Restorer (five
passes in the matched loop); on this project's CPUs that leaves a few thousand steps a
session. An Estimator of the LR image alone needs no Restorer to train: a step costs the
recipe's data and the Estimator (x4: 0.05 s a field against 0.12 in DAN's loop with the
Restorer frozen, docs/models.md *Session 23*), on the very batches the recipe
draws (its specimens, PSFs, camera and noise, real specimens included) and with DAN's kernel
losses (L1 on the kernel, :func:`.train.width_error` on its second moment).

    python -m napari_dan.training.lr_estimator train --recipe dan-x4-fluo --minutes 75 \\
        --run-dir RUN
    python -m napari_dan.training.lr_estimator export --run-dir RUN \\
        --base src/napari_dan/model/weights/dan-x4-fluo.pt --name NAME --out NAME.pt

``train`` resumes from ``RUN/state.pt`` (written every 200 steps); the cosine schedule spans
``--minutes`` of training time. A resume with other settings names them and uses the new ones;
another recipe or network size is refused. A new run can start from the Estimator of a checkpoint that has
one of the same size (``--init-from``, e.g. a bundled model), since run states do not ship.
docs/models.md (Session 23) has what it cost and measured.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["train", "export", "combine", "main"]


def _data(run_dir: Path, recipe_name: str, batch: int, lr_patch: int, seed: int, overrides):
    """The recipe's data pipeline (``Trainer._batch``); its DAN network is not trained."""
    from .recipes import recipe
    from .train import Trainer

    cfg = recipe(recipe_name, **{"batch": batch, "lr_patch": lr_patch, "seed": seed,
                                 "threads": 0, "init_from": None, "pca_samples": 2000,
                                 **overrides})
    return Trainer(cfg, run_dir / "data", log=lambda m: None)


def train(run_dir: str | os.PathLike, *, recipe: str = "dan-x4-fluo", minutes: float = 75.0,
          batch: int = 16, lr_patch: int = 40, nf: int = 64, nb: int = 6, lr: float = 5e-4,
          width_weight: float = 1.0, shape_weight: float = 0.0, seed: int = 0,
          init_from: str | None = None, log=print, **overrides) -> Path:
    """Train (or resume) an :class:`EstimatorLR` for ``minutes`` of training time; returns the
    state file. ``overrides``: recipe fields to change (tests: ``real_fraction=0``).
    ``init_from``: a checkpoint (bundled name or path) whose LR-only Estimator, of this
    ``nf``/``nb`` and the recipe's scale and kernel size, starts a new run (ignored on resume).
    ``shape_weight``: weight of :func:`.train.shape_error` (the kernel's elongation and
    orientation against the true PSF's); 0, the default, trains as before."""
    from ..model.danv2 import EstimatorLR
    from .train import StopAtStepEnd, save_state_file, shape_error, width_error

    if minutes <= 0:
        raise ValueError(f"--minutes must be more than 0, got {minutes}")
    run = Path(run_dir)
    state = run / "state.pt"
    obj = _state(run, "lr_estimator") if state.exists() else None
    from dataclasses import asdict

    from .recipes import recipe as recipe_config
    from .train import check_resume_settings

    channels = recipe_config(recipe).in_nc
    if channels != 1:
        raise ValueError(f"the LR Estimator is for 1-channel models; recipe {recipe} has "
                         f"{channels} channels (use a grey or fluorescence recipe)")
    args = dict(recipe=recipe, minutes=minutes, batch=batch, lr_patch=lr_patch, nf=nf, nb=nb,
                lr=lr, width_weight=width_weight, seed=seed, init_from=init_from, **overrides)
    if shape_weight:
        args["shape_weight"] = shape_weight
    if obj is not None:  # before the data pipeline is built: a refused resume costs nothing
        check_resume_settings(run, obj.get("args", {}), args, shape=("recipe", "nf", "nb"),
                              ignore=("minutes", "init_from"), log=log,
                              defaults={**asdict(recipe_config(recipe)), "shape_weight": 0.0})
    run.mkdir(parents=True, exist_ok=True)
    data = _data(run, recipe, batch, lr_patch, seed, overrides)
    net = EstimatorLR(1, nf, nb, data.cfg.kernel_size).to(data.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.99))
    step, elapsed, hist = 0, 0.0, []
    if not state.exists() and init_from:
        _load_estimator(net, init_from, data.cfg)
        log(f"Estimator initialised from {init_from}")
    if obj is not None:
        net.load_state_dict(obj["net"])
        opt.load_state_dict(obj["opt"])
        step, elapsed, hist = obj["step"], obj["elapsed"], obj["hist"]
        data.rng.bit_generator.state = obj["rng"]
        log(f"resumed at step {step}, {elapsed / 60:.1f} min")
    budget = 60.0 * minutes
    acc = []

    def save():
        obj = {"net": net.state_dict(), "opt": opt.state_dict(), "step": step,
               "elapsed": elapsed, "hist": hist, "rng": data.rng.bit_generator.state,
               "args": args}
        save_state_file(obj, state)

    with StopAtStepEnd() as stop:
        while elapsed < budget:
            t0 = time.perf_counter()
            _, x, ks = data._batch()
            b = x.shape[0]
            t = min(elapsed / budget, 1.0)
            for g in opt.param_groups:
                g["lr"] = 1e-5 + 0.5 * (lr - 1e-5) * (1 + math.cos(math.pi * t))
            k = net(None, x)
            kt = ks.reshape(b, -1)
            loss_k = (k - kt).abs().sum(1).mean()
            loss_w = width_error(k, kt).mean()
            loss = loss_k + width_weight * loss_w
            loss_s = shape_error(k, kt).mean() if shape_weight else None
            if loss_s is not None:
                loss = loss + shape_weight * loss_s
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            elapsed += time.perf_counter() - t0
            acc.append((loss_k.item(), loss_w.item(), 0.0 if loss_s is None else loss_s.item()))
            if step % 50 == 0:
                lk, lw, ls = np.mean(acc, 0)
                acc = []
                hist.append({"step": step, "min": elapsed / 60, "loss_k": lk, "loss_w": lw,
                             **({"loss_shape": ls} if shape_weight else {})})
                log(f"step {step} {elapsed / 60:.1f} min loss_k {lk:.4f} width |log m2| {lw:.4f}"
                    + (f" shape |de| {ls:.4f}" if shape_weight else ""))
            if step % 200 == 0 or elapsed >= budget:
                save()
            stop.check(save)  # Ctrl-C / SIGTERM: stop here, the state saved
    log(f"done: {step} steps, {elapsed / 60:.1f} min")
    return state


def _state(run_dir, kind: str) -> dict:
    """``run_dir``'s state.pt, which must be a run of this ``kind`` ("lr_estimator" or
    "restorer"); otherwise a one-line error that says what the run dir is."""
    from ..errors import InputError
    from .train import _run_kind

    path = Path(run_dir) / "state.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; --run-dir must be a run of `python -m "
                                f"napari_dan.training.{kind} train`")
    try:
        obj = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any failure to read it means: damaged
        raise InputError(f"{path}: cannot be read ({type(e).__name__}): damaged or truncated") from None
    have = _run_kind(obj)
    want = {"lr_estimator": "an LR-only Estimator run", "restorer": "a Restorer fine-tuning run"}[kind]
    if not have.startswith(want):
        raise InputError(f"{run_dir} is " + ("a `napari-dan train` run" if have == "train" else have)
                         + f", not {want} (python -m napari_dan.training.{kind})")
    return obj


def _run_cli(module: str, run) -> int:
    """Run a command of this module or :mod:`.restorer`: errors a person can act on as one line
    (exit 2); Ctrl-C (130) and SIGTERM (143) after the state of the step under way is saved."""
    import signal
    import sys
    import threading

    from ..errors import DanError, Terminated, clean_message

    def terminated(signum, frame):
        raise Terminated(signum)

    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, terminated) if main_thread else None
    try:
        return int(run() or 0)
    except KeyboardInterrupt as e:
        signum = int(getattr(e, "signum", signal.SIGINT))
        print(f"{module}: stopped by {signal.Signals(signum).name}; the state at the last finished "
              "step is saved; run the same command again to resume", file=sys.stderr)
        return 128 + signum
    except (DanError, ValueError, KeyError, OSError) as e:
        text = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{module}: error: {clean_message(text)}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old)


def _load_estimator(net, source: str, cfg) -> None:
    """Copy ``source``'s LR-only Estimator into ``net``; refuses one of another kind or size."""
    from ..model import load_model
    from ..model.danv2 import reads_sr

    m = load_model(source)
    if reads_sr(m.network):
        raise ValueError(f"{source} has DAN's own Estimator (it reads the SR image); "
                         "--init-from needs a checkpoint with an LR-only Estimator")
    if (m.scale, m.network.kernel_size) != (cfg.scale, cfg.kernel_size):
        raise ValueError(f"{source} is x{m.scale} with {m.network.kernel_size}-px kernels; the "
                         f"recipe trains x{cfg.scale} with {cfg.kernel_size}-px kernels")
    sd = {k[len("Estimator."):]: v for k, v in m.network.state_dict().items()
          if k.startswith("Estimator.")}
    if "fine.mlp.0.weight" in sd:  # two samplings: the one read at this scale
        sd = {k[len("fine."):]: v for k, v in sd.items() if k.startswith("fine.")}
    mine = net.state_dict()
    if set(sd) != set(mine) or any(sd[k].shape != mine[k].shape for k in mine):
        raise ValueError(f"{source}'s Estimator has another size than --nf/--nb ask for")
    net.load_state_dict(sd)


def export(run_dir: str | os.PathLike, base: str, out: str | os.PathLike, name: str,
           description: str = "", base_label: str = "") -> Path:
    """One checkpoint: ``base``'s Restorer, PCA basis and loop with the trained
    :class:`EstimatorLR` in place of its Estimator. ``base_label``: how the provenance names
    the base (default: ``base`` as given); its fingerprint is recorded either way."""
    from ..model import load_model
    from ..model.checkpoint import build_network, infer_hyperparameters, save_checkpoint
    from .recipes import recipe as recipe_config

    if Path(out).exists():
        raise FileExistsError(f"{out} exists; choose another --out or remove it first")
    src = load_model(base)
    obj = _state(run_dir, "lr_estimator")
    a = obj["args"]
    arch, hp = infer_hyperparameters(src.network.state_dict())
    if arch != "DANv2":
        raise ValueError(f"{base} is {arch}; an LR-only Estimator goes with DANv2")
    # the Estimator's kernels are on the HR grid of the recipe it was trained on, grey
    trained = recipe_config(a.get("recipe", "dan-x4-fluo"))
    want = {"scale": trained.scale, "in_nc": 1, "kernel_size": trained.kernel_size}
    have = {k: hp[k] for k in want}
    if have != want:
        raise ValueError(f"the Estimator in {run_dir} was trained for {want} "
                         f"(recipe {a.get('recipe', 'dan-x4-fluo')}), but {base} has {have}")
    # and on the same degradation: an Estimator of camera-binned fields beside a Restorer of
    # bicubic ones (or the reverse) reads kernels the Restorer was never given
    sampling = "bin" if trained.data_kind == "microscopy" else "bicubic"
    if src.sampling != sampling:
        raise ValueError(f"the Estimator in {run_dir} was trained on {sampling} sampling (recipe "
                         f"{a.get('recipe', 'dan-x4-fluo')}), but {base} restores "
                         f"{src.sampling}-sampled images; choose a base of the same kind")
    hp.pop("est_attention", None)
    # a base that reads at two samplings keeps its coarse Estimator; this one is its fine one
    two = hp.get("est_input") == 2
    if two and (int(a["nf"]), int(a["nb"])) != (hp["est_nf"], hp["est_nb"]):
        raise ValueError(f"{base}'s coarse Estimator is {hp['est_nf']} wide with "
                         f"{hp['est_nb']} blocks; the one in {run_dir} is {a['nf']} / {a['nb']}")
    hp.update(est_input=2 if two else 1, est_nf=int(a["nf"]), est_nb=int(a["nb"]),
              loop=src.network.loop)
    net = build_network(arch, hp)
    prefix = "Estimator.fine." if two else "Estimator."
    sd = {k: v for k, v in src.network.state_dict().items()
          if not k.startswith(prefix) and (two or not k.startswith("Estimator."))}
    sd.update({prefix + k: v for k, v in obj["net"].items()})
    net.load_state_dict(sd)
    net.kernel_mean.copy_(src.network.kernel_mean)
    info = {**src.info, "description": description or src.description}
    prov = dict(info.get("provenance", {}))
    prov["estimator"] = {"trained": "LR-only Estimator (training.lr_estimator)",
                         "recipe_data": a.get("recipe", "dan-x4-fluo"), "steps": obj["step"],
                         "train_hours": round(obj["elapsed"] / 3600, 3),
                         "batch": a["batch"], "lr_patch": a["lr_patch"],
                         "restorer_from": base_label or str(base), "restorer_fingerprint": src.fingerprint,
                         "est_nf": int(a["nf"]), "est_nb": int(a["nb"]),
                         # a continuation: its steps count from this checkpoint's Estimator
                         "init_from": a.get("init_from")}
    if "estimator" in info.get("provenance", {}):  # the base's own LR-only Estimator's record
        prov["estimator"]["earlier"] = info["provenance"]["estimator"]
    info["provenance"] = prov
    return save_checkpoint(out, net, info=info, name=name)


def combine(base: str, coarse: str, out: str | os.PathLike, name: str, share: float = 0.5,
            description: str = "", base_label: str = "", coarse_label: str = "") -> Path:
    """One checkpoint that reads the kernel at two samplings (:class:`EstimatorTwoScale`):
    ``base`` (Restorer, PCA basis, loop, and its LR-only Estimator as the fine one) and the
    LR-only Estimator of ``coarse``, a model at twice the scale, applied to the LR image binned
    2 x 2; the kernel is ``share`` of the coarse reading and the rest of the fine one."""
    from ..model import load_model
    from ..model.checkpoint import build_network, infer_hyperparameters, save_checkpoint
    from ..model.danv2 import EstimatorLR

    if Path(out).exists():
        raise FileExistsError(f"{out} exists; choose another --out or remove it first")
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share}")
    b, c = load_model(base), load_model(coarse)
    for m, what in ((b, base), (c, coarse)):
        if not isinstance(m.network.Estimator, EstimatorLR):
            raise ValueError(f"{what} has no LR-only Estimator (training.lr_estimator) of its own")
    if c.scale != 2 * b.scale:
        raise ValueError(f"{coarse} is x{c.scale}; the coarse reading of an x{b.scale} model "
                         f"needs an x{2 * b.scale} one (its kernels are on the same grid)")
    if (c.network.in_nc, c.network.kernel_size) != (b.network.in_nc, b.network.kernel_size):
        raise ValueError(f"{coarse} has {c.network.in_nc} channel(s) and "
                         f"{c.network.kernel_size}-px kernels, {base} {b.network.in_nc} and "
                         f"{b.network.kernel_size}")
    arch, hp = infer_hyperparameters(b.network.state_dict())
    _, hc = infer_hyperparameters(c.network.state_dict())
    if (hc["est_nf"], hc["est_nb"]) != (hp["est_nf"], hp["est_nb"]):
        raise ValueError(f"the two Estimators differ in size ({hp['est_nf']}/{hp['est_nb']} "
                         f"against {hc['est_nf']}/{hc['est_nb']})")
    hp.update(est_input=2, loop=b.network.loop)
    net = build_network(arch, hp)
    sd = {}
    for k, v in b.network.state_dict().items():
        sd[k.replace("Estimator.", "Estimator.fine.", 1) if k.startswith("Estimator.") else k] = v
    sd.update({k.replace("Estimator.", "Estimator.coarse.", 1): v
               for k, v in c.network.state_dict().items() if k.startswith("Estimator.")})
    sd["Estimator.coarse_share"] = torch.tensor(float(share))
    net.load_state_dict(sd)
    net.kernel_mean.copy_(b.network.kernel_mean)
    info = {**b.info, "description": description or b.description}
    prov = dict(info.get("provenance", {}))
    prov["estimator"] = {
        "trained": "two samplings (training.lr_estimator combine): the fine Estimator reads "
                   "the LR image, the coarse one the LR image binned 2 x 2",
        "coarse_share": float(share),
        "fine": b.info.get("provenance", {}).get("estimator"),
        "coarse": {"from": coarse_label or str(coarse), "fingerprint": c.fingerprint,
                   "estimator": c.info.get("provenance", {}).get("estimator")},
        "restorer_from": base_label or str(base), "restorer_fingerprint": b.fingerprint}
    info["provenance"] = prov
    return save_checkpoint(out, net, info=info, name=name)


def _train_export_parser(module: str, doc: str, train_help: str, export_help: str):
    """The ``train`` / ``export`` command line that this module and :mod:`.restorer` share:
    (parser, train subparser, export subparser, the subparsers) with their common options."""
    p = argparse.ArgumentParser(prog=f"python -m napari_dan.training.{module}",
                                description=" ".join(doc.split("\n\n")[0].split()))
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help=train_help)
    t.add_argument("--run-dir", required=True)
    from .recipes import RECIPES

    t.add_argument("--recipe", default="dan-x4-fluo", choices=sorted(RECIPES),
                   help="whose data pipeline to draw from")
    t.add_argument("--minutes", type=float, default=75.0, help="training-time budget")
    t.add_argument("--data-workers", type=int, default=None, metavar="N",
                   help="processes drawing the training fields (default 0: this one, as "
                        "before); on a GPU or many cores, about the number of cores")
    e = sub.add_parser("export", help=export_help)
    for flag in ("--run-dir", "--name", "--out"):
        e.add_argument(flag, required=True)
    e.add_argument("--description", default="")
    e.add_argument("--base-label", default="", help="how the provenance names the base")
    return p, t, e, sub


def main(argv=None) -> int:
    p, t, e, sub = _train_export_parser("lr_estimator", __doc__, "train or resume an LR-only Estimator",
                                   "a checkpoint: base model's Restorer + this Estimator")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr-patch", type=int, default=40)
    t.add_argument("--nf", type=int, default=64)
    t.add_argument("--nb", type=int, default=6)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--width-weight", type=float, default=1.0)
    t.add_argument("--shape-weight", type=float, default=0.0,
                   help="weight of the kernel-elongation loss (0: none, as before)")
    t.add_argument("--astigmatism", type=float, nargs=2, default=None, metavar=("SHARE", "MAX"),
                   help="share of astigmatic training PSFs and their largest stretch "
                        "(default 0.25 1.3)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init-from", default=None,
                   help="start a new run from this checkpoint's LR-only Estimator")
    t.add_argument("--nuclei-edge", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="the synthetic nuclei's edge softness in HR px (default 0.5 1.5): wider "
                        "teaches that a blob's soft edge is not the PSF")
    t.add_argument("--real-lr-patch", type=int, default=None,
                   help="LR patch of the real specimens (the recipe's field; 0: --lr-patch)")
    e.add_argument("--base", required=True, help="bundled name or checkpoint (DANv2)")
    c = sub.add_parser(
        "combine", help="a checkpoint that reads the kernel at two samplings: --base's "
        "Estimator on the LR image, --coarse's (a model at twice the scale) on it binned 2 x 2")
    for flag in ("--base", "--coarse", "--name", "--out"):
        c.add_argument(flag, required=True)
    c.add_argument("--share", type=float, default=0.5, help="the coarse reading's share (0-1]")
    c.add_argument("--description", default="")
    c.add_argument("--base-label", default="", help="how the provenance names the base")
    c.add_argument("--coarse-label", default="", help="how the provenance names --coarse")
    a = p.parse_args(argv)
    return _run_cli("lr_estimator", lambda: _main(a))


def _main(a) -> int:
    if a.cmd == "combine":
        print(combine(a.base, a.coarse, a.out, a.name, a.share, a.description, a.base_label,
                      a.coarse_label))
        return 0
    if a.cmd == "train":
        train(a.run_dir, recipe=a.recipe, minutes=a.minutes, batch=a.batch,
              lr_patch=a.lr_patch, nf=a.nf, nb=a.nb, lr=a.lr, width_weight=a.width_weight,
              shape_weight=a.shape_weight, seed=a.seed, init_from=a.init_from, log=lambda m: print(m, flush=True),
              **({} if a.real_lr_patch is None else {"real_lr_patch": a.real_lr_patch}),
              **({} if a.nuclei_edge is None else {"nuclei_edge": tuple(a.nuclei_edge)}),
              **({} if a.astigmatism is None else {"astigmatism": tuple(a.astigmatism)}),
              **({} if a.data_workers is None else {"data_workers": a.data_workers}))
    else:
        print(export(a.run_dir, a.base, a.out, a.name, a.description, a.base_label))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
