"""Fine-tune the Restorer of a DAN model with its Estimator frozen, on the kernels that
Estimator gives, then write the result as one checkpoint.

Since sessions 23 and 25 the bundled fluorescence models pair a Restorer trained in DAN's loop
with an Estimator of the LR image alone, trained afterwards without it (:mod:`.lr_estimator`):
the Restorer never saw the kernels that Estimator reports, only those of the Estimator it was
trained beside. Here it learns on them: each step draws the recipe's batch (its specimens,
PSFs, camera, noise and real specimens), estimates every field's kernel with the frozen
Estimator (DAN's own Estimator: the loop's last round, as the engine restores with it), and
trains the Restorer on the L1 loss (or ``--loss l2``, the mean squared error) of its SR image
against the HR target. A share of the fields
(``true_code_fraction``) gets the true PSF's code instead, so that a kernel the user supplies
(``--psf spots``, a measured PSF) still restores as well. One Restorer pass a step: x4, batch 8
of 32 LR px, 0.5 s on this project's two CPU threads.

    python -m napari_dan.training.restorer train --base dan-x4-fluo --recipe dan-x4-fluo \\
        --minutes 75 --run-dir RUN
    python -m napari_dan.training.restorer export --run-dir RUN --name NAME --out NAME.pt

``train`` resumes from ``RUN/state.pt`` (written every 200 steps); the cosine schedule spans
``--minutes`` of training time. Every ``--val-every`` steps the training loss on fixed
held-out batches (their own seed) is logged beside the base model's, so the log says whether it
learns.

Why ``l2``: the L1 loss is minimised by the conditional median, so where a faint spot is more
likely absent than present (sparse beads in noise) the L1-trained Restorer erases it; the squared
error is minimised by the conditional mean, a spot as bright as it is likely, which is also what
PSNR scores (docs/models.md, *Session 28*).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["train", "export", "main"]


def _base(source: str, cfg):
    """The base model, checked against the recipe it will be trained on."""
    from ..model import load_model

    m = load_model(source)
    have = (m.scale, m.network.in_nc, m.network.kernel_size)
    want = (cfg.scale, cfg.in_nc, cfg.kernel_size)
    if have != want:
        raise ValueError(f"{source} is x{have[0]} with {have[1]} channel(s) and {have[2]}-px "
                         f"kernels; the recipe trains x{want[0]} with {want[1]} and {want[2]}")
    return m


@torch.no_grad()
def _codes(net, lr: torch.Tensor, ks: torch.Tensor, true_mask: torch.Tensor) -> torch.Tensor:
    """Per field: the frozen Estimator's code (the loop's last kernel, as the engine uses), or
    the true kernel's where ``true_mask``."""
    from ..model.danv2 import reads_sr

    b = lr.shape[0]
    if reads_sr(net):
        _, kernels, _ = net.forward_all(lr)
        k = kernels[-1]
    else:
        k = net.estimate(None, lr)
    est = net.encode(k.float().reshape(b, -1))
    true = net.encode(ks.reshape(b, -1))
    return torch.where(true_mask[:, None], true, est)


def _held_out(recipe_name: str, batch: int, lr_patch: int, seed: int, overrides, n: int,
              true_code_fraction: float):
    """``n`` fixed batches from the recipe's pipeline with a seed of their own, each with the
    mask of fields restored with their true kernel."""
    import tempfile

    from .lr_estimator import _data

    with tempfile.TemporaryDirectory() as d:
        data = _data(Path(d), recipe_name, batch, lr_patch, seed + 10_000, overrides)
        out = []
        for _ in range(n):
            hr, lr, ks = data._batch()
            mask = torch.from_numpy(data.rng.random(lr.shape[0]) < true_code_fraction)
            out.append((hr, lr, ks, mask))
    return out  # a data pool's processes end with ``data`` (Trainer: weakref.finalize)


LOSSES = ("l1", "l2")
#: the run settings :func:`train` always stores; any other key of a run's ``args`` is a recipe
#: override
_RUN_ARGS = ("base", "recipe", "minutes", "batch", "lr_patch", "lr", "lr_min",
             "true_code_fraction", "seed", "loss")


def _sr_loss(sr: torch.Tensor, hr: torch.Tensor, kind: str) -> torch.Tensor:
    d = sr.float() - hr
    return d.abs().mean() if kind == "l1" else (d * d).mean()


@torch.no_grad()
def _val_loss(net, batches, kind: str = "l1") -> float:
    total = 0.0
    for hr, lr, ks, mask in batches:
        sr = net.restore(lr, _codes(net, lr, ks, mask))
        total += float(_sr_loss(sr, hr, kind))
    return total / len(batches)


def train(run_dir: str | os.PathLike, *, base: str = "dan-x4-fluo", recipe: str = "dan-x4-fluo",
          minutes: float = 75.0, batch: int = 8, lr_patch: int = 32, lr: float = 5e-5,
          lr_min: float = 1e-6, true_code_fraction: float = 0.25, seed: int = 0,
          val_every: int = 1000, val_batches: int = 6, loss: str = "l1", log=print,
          **overrides) -> Path:
    """Fine-tune (or resume) ``base``'s Restorer for ``minutes`` of training time on the
    ``recipe``'s batches; returns the state file. ``overrides``: recipe fields to change
    (tests: ``real_fraction=0``)."""
    from .lr_estimator import _data, _state
    from .train import StopAtStepEnd, check_resume_settings, save_state_file

    if not 0.0 <= true_code_fraction <= 1.0:
        raise ValueError(f"true_code_fraction must be in [0, 1], got {true_code_fraction}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if minutes <= 0:
        raise ValueError(f"--minutes must be more than 0, got {minutes}")
    run = Path(run_dir)
    state = run / "state.pt"
    obj = _state(run, "restorer") if state.exists() else None
    run.mkdir(parents=True, exist_ok=True)
    args = dict(base=base, recipe=recipe, minutes=minutes, batch=batch, lr_patch=lr_patch,
                lr=lr, lr_min=lr_min, true_code_fraction=true_code_fraction, seed=seed,
                loss=loss, **overrides)
    if obj is not None and obj["args"].get("loss", "l1") != loss:
        raise ValueError(f"{run} trains on the {obj['args'].get('loss', 'l1')} loss, not {loss}")
    if obj is not None:  # the base is checked below, by its weights
        from dataclasses import asdict

        from .recipes import recipe as recipe_config

        check_resume_settings(run, obj["args"], args, shape=("recipe",),
                              ignore=("minutes", "base"), log=log,
                              defaults={**asdict(recipe_config(recipe)), "loss": "l1"})
    data = _data(run, recipe, batch, lr_patch, seed, overrides)
    m = _base(base, data.cfg)
    # the base is checked by its weights, not its name: the same weights under another name or
    # path (a copy of a bundled model that has since been replaced) resume; the run then
    # records the new name, which export reads
    if obj is not None and m.fingerprint != obj["base_fingerprint"]:
        if obj["args"]["base"] != base:
            raise ValueError(f"{run} fine-tunes {obj['args']['base']}, not {base}")
        raise ValueError(f"{base} is not the model {run} started from (its weights changed "
                         "since): resume with that model's file as --base")
    net = m.network.to(data.device)
    net.eval()  # no dropout or batch norm in DAN; eval keeps the frozen parts as they run
    for p in net.parameters():
        p.requires_grad_(False)
    params = list(net.Restorer.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99))
    step, elapsed, hist = 0, 0.0, []
    val = _held_out(recipe, batch, lr_patch, seed, overrides, val_batches, true_code_fraction)
    if obj is not None:
        net.Restorer.load_state_dict(obj["restorer"])
        opt.load_state_dict(obj["opt"])
        step, elapsed, hist = obj["step"], obj["elapsed"], obj["hist"]
        data.rng.bit_generator.state = obj["rng"]
        base_val = obj["base_val"]
        log(f"resumed at step {step}, {elapsed / 60:.1f} min")
    else:
        base_val = _val_loss(net, val, loss)
        log(f"fine-tuning the Restorer of {base} ({sum(p.numel() for p in params)} parameters; "
            f"the Estimator is frozen) on the {loss} loss; held-out {base_val:.6g}")
    fingerprint = m.fingerprint
    budget = 60.0 * minutes
    acc = []

    def save():
        out = {"restorer": net.Restorer.state_dict(), "opt": opt.state_dict(), "step": step,
               "elapsed": elapsed, "hist": hist, "rng": data.rng.bit_generator.state,
               "args": args, "base_val": base_val, "base_fingerprint": fingerprint}
        save_state_file(out, state)

    with StopAtStepEnd() as stop:
        while elapsed < budget:
            t0 = time.perf_counter()
            hr, x, ks = data._batch()
            t = min(elapsed / budget, 1.0)
            for g in opt.param_groups:
                g["lr"] = lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t))
            mask = torch.from_numpy(data.rng.random(x.shape[0]) < true_code_fraction).to(x.device)
            code = _codes(net, x, ks, mask)
            sr = net.restore(x, code)
            value = _sr_loss(sr, hr, loss)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            step += 1
            elapsed += time.perf_counter() - t0
            acc.append(value.item())
            if step % 50 == 0:
                entry = {"step": step, "min": elapsed / 60, "loss_sr": float(np.mean(acc))}
                acc = []
                msg = f"step {step} {elapsed / 60:.1f} min loss_sr {entry['loss_sr']:.6g}"
                if val_every and step % val_every == 0:
                    entry["val"] = _val_loss(net, val, loss)
                    msg += f" held-out {entry['val']:.6g} (base {base_val:.6g})"
                hist.append(entry)
                log(msg)
            if step % 200 == 0 or elapsed >= budget:
                save()
            stop.check(save)  # Ctrl-C / SIGTERM: stop here, the state saved
    final = _val_loss(net, val, loss)
    if not hist or hist[-1].get("step") != step or "val" not in hist[-1]:
        hist.append({"step": step, "min": elapsed / 60, "val": final})
        save()
    log(f"done: {step} steps, {elapsed / 60:.1f} min, held-out {loss} {final:.6g} "
        f"(base {base_val:.6g})")
    return state


def export(run_dir: str | os.PathLike, out: str | os.PathLike, name: str,
           description: str = "", base_label: str = "") -> Path:
    """One checkpoint: the run's base model with its fine-tuned Restorer. ``base_label``: how
    the provenance names the base (default: ``--base`` as given; a bundled name is replaced
    when the result is bundled); its fingerprint is recorded either way."""
    from ..model.checkpoint import save_checkpoint
    from .lr_estimator import _state
    from .recipes import recipe as recipe_config

    if Path(out).exists():
        raise FileExistsError(f"{out} exists; choose another --out or remove it first")
    obj = _state(run_dir, "restorer")
    a = obj["args"]
    m = _base(a["base"], recipe_config(a["recipe"]))
    if m.fingerprint != obj["base_fingerprint"]:
        raise ValueError(f"{a['base']} is not the model {run_dir} fine-tuned (its weights "
                         "changed since); export from the same base")
    m.network.Restorer.load_state_dict(obj["restorer"])
    info = {**m.info, "description": description or m.description}
    prov = dict(info.get("provenance", {}))
    loss = a.get("loss", "l1")
    at_end = next((h["val"] for h in reversed(obj["hist"]) if "val" in h), None)
    record = {"trained": "Restorer fine-tuned with the Estimator frozen (training.restorer)",
              "base": base_label or a["base"], "base_fingerprint": obj["base_fingerprint"],
              "recipe_data": a["recipe"], "steps": obj["step"],
              "train_hours": round(obj["elapsed"] / 3600, 3), "batch": a["batch"],
              "lr_patch": a["lr_patch"], "lr": a["lr"],
              "true_code_fraction": a["true_code_fraction"], "loss": loss,
              f"held_out_{loss}": {"base": obj["base_val"], "at_end": at_end}}
    # recipe fields the run changed (``--bright-background``): what it learned from
    overrides = {k: v for k, v in a.items() if k not in _RUN_ARGS}
    if overrides:
        record["recipe_overrides"] = overrides
    if "restorer" in prov:  # a base that was fine-tuned before: keep that record too
        record["earlier"] = prov["restorer"]
    prov["restorer"] = record
    info["provenance"] = prov
    return save_checkpoint(out, m.network, info=info, name=name)


def main(argv=None) -> int:
    from .lr_estimator import _run_cli, _train_export_parser

    p, t, e, _ = _train_export_parser("restorer", __doc__, "fine-tune or resume a model's Restorer",
                                   "a checkpoint: the base model with this Restorer")
    t.add_argument("--base", default="dan-x4-fluo", help="bundled name or checkpoint")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr-patch", type=int, default=32)
    t.add_argument("--lr", type=float, default=5e-5)
    t.add_argument("--lr-min", type=float, default=1e-6)
    t.add_argument("--true-code-fraction", type=float, default=0.25,
                   help="share of fields restored with the true PSF's code")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--val-every", type=int, default=1000)
    t.add_argument("--loss", choices=LOSSES, default="l1",
                   help="l1, or l2 (squared error: faint spots as bright as they are likely)")
    t.add_argument("--bright-background", type=float, nargs=2, metavar=("SHARE", "HIGH"),
                   help="that share of the fields as bright as widefield recordings often are: "
                        "haze on every one, a background up to HIGH of the peak")
    a = p.parse_args(argv)
    return _run_cli("restorer", lambda: _main(a))


def _main(a) -> int:
    if a.cmd == "train":
        train(a.run_dir, base=a.base, recipe=a.recipe, minutes=a.minutes, batch=a.batch,
              lr_patch=a.lr_patch, lr=a.lr, lr_min=a.lr_min,
              true_code_fraction=a.true_code_fraction, seed=a.seed, val_every=a.val_every,
              loss=a.loss, log=lambda m: print(m, flush=True),
              **({} if a.bright_background is None
                 else {"bright_background": tuple(a.bright_background)}),
              **({} if a.data_workers is None else {"data_workers": a.data_workers}))
    else:
        print(export(a.run_dir, a.out, a.name, a.description, a.base_label))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
