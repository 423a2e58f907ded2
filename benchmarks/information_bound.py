"""How well can *any* estimator read the PSF's width from the microscopy benchmark's fields?

The Cramer-Rao bound: for an unbiased estimate of a parameter from data with independent
noise, the standard deviation is at least 1 / sqrt(Fisher information). The benchmark's fields
(``benchmarks/microscopy.py``: specimen -> widefield PSF of in-focus FWHM ``f`` HR px -> block
mean over ``scale`` x ``scale`` camera pixels -> Poisson photons at ``P`` per unit intensity, read
noise 1.5 e-) give, per LR pixel ``i``, a mean ``mu_i(f) = P * bin(specimen * psf_f)_i`` and a
variance ``mu_i + 1.5**2`` (the Gaussian approximation of Poisson plus read noise), so

    I(f) = sum_i (d mu_i / d f)**2 / (mu_i + 1.5**2),   relative bound = 1 / (f sqrt(I(f)))

Two bounds per field:

* **specimen known** (every field): only the width is unknown, the specimen (and its
  background) are given exactly. No estimator of the width from this field can do better
  on average: a floor far below what a blind estimator, which must also find the specimen, can
  reach.
* **beads unknown** (bead fields only): the beads' positions and brightnesses and the
  background level are unknown too (3 parameters per bead + 1), as for a spot-fitting
  measurement that knows only that the specimen is point-like beads. Computed on a bead field
  drawn like the benchmark's (same density, sizes and brightnesses, own seed, positions kept),
  with the full Fisher matrix (neighbouring beads' overlaps included); its specimen-known bound
  is printed beside it to show the field is like the benchmark's.

Both are bounds on the *standard deviation* of an unbiased estimate; a biased one (a network
that answers the middle of its range when a field says nothing) can be closer on some fields
and further on others, but cannot follow the width where the bound is large. Printed beside each
field: the blind FWHM error of the models in the benchmark JSON (``--json``, default
docs/quality-fluorescence.json: the bundled fluorescence models' rows).

    env OMP_NUM_THREADS=2 python benchmarks/information_bound.py --out docs/information-bound.json

(about 2 minutes on a 2-core VM.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import microscopy as mb  # noqa: E402  (the benchmark's own fields and forward model)

READ = 1.5   # e- rms, as in microscopy.observe
EPS = 0.02   # relative step of the width's central difference


def field_mean(spec: np.ndarray, fwhm: float, scale: int, photons: float) -> np.ndarray:
    """Expected photo-electrons per LR pixel (no offset): the benchmark's forward model."""
    from napari_dan.imaging.camera import bin_pixels
    from napari_dan.imaging.degradations import blur

    return bin_pixels(blur(spec, mb.psf_for(fwhm)), scale) * photons


def width_derivative(spec, fwhm, scale, photons):
    """(mu at fwhm, d mu / d fwhm) by a central difference of the PSF's width."""
    mu = field_mean(spec, fwhm, scale, photons)
    hi = field_mean(spec, fwhm * (1 + EPS), scale, photons)
    lo = field_mean(spec, fwhm * (1 - EPS), scale, photons)
    return mu, (hi - lo) / (2 * EPS * fwhm)


def known_specimen_bound(spec, fwhm, scale, photons) -> float:
    """Relative Cramer-Rao bound on the width with the specimen known."""
    mu, d = width_derivative(spec, fwhm, scale, photons)
    info = float(np.sum(d * d / (mu + READ**2)))
    return 1.0 / (fwhm * math.sqrt(info)) if info > 0 else math.inf


def bead_field(rng, size: int = mb.SIZE, density: float = 1 / 800):
    """A bead field drawn like the benchmark's (specimens.beads' sizes and brightnesses, peak
    scaled to 1, background 0.02), with its beads' (y, x, brightness, sigma) kept."""
    from napari_dan.imaging.specimens import _splat

    n = max(1, int(rng.poisson(density * size * size)))
    ys, xs = rng.uniform(-2, size + 2, n), rng.uniform(-2, size + 2, n)
    amp, sig = rng.uniform(0.4, 1.0, n), rng.uniform(0.3, 0.45, n)
    img = np.zeros((size, size))
    _splat(img, ys, xs, amp, sig)
    peak = img.max()
    return img / peak + 0.02, (ys, xs, amp / peak, sig)


def beads_unknown_bound(beads, fwhm, scale, photons, size: int = mb.SIZE) -> tuple[float, float]:
    """(relative bound with beads' positions, brightnesses and the background unknown, the
    same field's specimen-known bound)."""
    from napari_dan.imaging.specimens import _splat

    ys, xs, amp, sig = beads
    spec = np.zeros((size, size))
    _splat(spec, ys, xs, amp, sig)
    spec += 0.02
    mu, dw = width_derivative(spec, fwhm, scale, photons)
    cols = [dw.ravel(), np.full(mu.size, 0.0)]
    # background: a flat level under the specimen, d mu / d level = photons (block mean of 1)
    cols[1][:] = photons
    h = 0.1  # HR px, the positions' central difference

    def one(y, x, a, s):
        img = np.zeros((size, size))
        _splat(img, [y], [x], [a], [s])
        return field_mean(img, fwhm, scale, photons).ravel()

    for y, x, a, s in zip(ys, xs, amp, sig, strict=True):
        base = one(y, x, a, s)
        if not base.any():
            continue
        cols.append(base / a)
        cols.append((one(y + h, x, a, s) - one(y - h, x, a, s)) / (2 * h))
        cols.append((one(y, x + h, a, s) - one(y, x - h, a, s)) / (2 * h))
    jac = np.stack(cols, 1)
    w = 1.0 / (mu.ravel() + READ**2)
    fisher = jac.T @ (jac * w[:, None])
    # the width's variance: the (0, 0) entry of the inverse, by the Schur complement
    rest = fisher[1:, 1:]
    cross = fisher[1:, 0]
    eff = fisher[0, 0] - cross @ np.linalg.solve(rest, cross)
    known = 1.0 / (fwhm * math.sqrt(fisher[0, 0]))
    bound = 1.0 / (fwhm * math.sqrt(eff)) if eff > 0 else math.inf
    return bound, known


def filament_field(rng, size: int = mb.SIZE, density: float = 1 / 300 / 40):
    """Filaments drawn like specimens.filaments (the benchmark's density), each kept as
    (ys, xs, brightness, width) so it can be re-rendered with another width."""
    from napari_dan.imaging.specimens import _count, _curve

    out = []
    for _ in range(_count(density, (size, size), rng)):
        start = (rng.uniform(0, size), rng.uniform(0, size))
        ys, xs = _curve(rng, start, rng.uniform(30, 250), 0.35, rng.uniform(0.0, 0.06))
        out.append((ys, xs, rng.uniform(0.3, 1.0), rng.uniform(0.3, 0.9)))
    return out


def _render_filament(ys, xs, b, w, size: int = mb.SIZE):
    from napari_dan.imaging.specimens import _splat

    img = np.zeros((size, size))
    _splat(img, ys, xs, b * 0.35 / (math.sqrt(2 * math.pi) * w), w)
    return img


def filament_widths_unknown_bound(fils, fwhm, scale, photons, size: int = mb.SIZE):
    """(relative bound with each filament's own width and brightness unknown, positions and
    background known; the same field's specimen-known bound)."""
    parts = [_render_filament(*f, size=size) for f in fils]
    peak = max(float(sum(parts).max()), 1e-9)
    spec = sum(parts) / peak + 0.02
    mu, dw = width_derivative(spec, fwhm, scale, photons)
    cols = [dw.ravel()]
    h = 0.02
    for ys, xs, b, w in fils:
        base = field_mean(_render_filament(ys, xs, b, w, size) / peak, fwhm, scale, photons).ravel()
        cols.append(base / b)
        hi = field_mean(_render_filament(ys, xs, b, w + h, size) / peak, fwhm, scale, photons)
        lo = field_mean(_render_filament(ys, xs, b, w - h, size) / peak, fwhm, scale, photons)
        cols.append(((hi - lo) / (2 * h)).ravel())
    jac = np.stack(cols, 1)
    fisher = jac.T @ (jac / (mu.ravel() + READ**2)[:, None])
    cross = fisher[1:, 0]
    eff = fisher[0, 0] - cross @ np.linalg.solve(fisher[1:, 1:], cross)
    known = 1.0 / (fwhm * math.sqrt(fisher[0, 0]))
    return (1.0 / (fwhm * math.sqrt(eff)) if eff > 0 else math.inf), known


def monte_carlo_check(spec, fwhm, scale, photons, draws: int, rng) -> tuple[float, float]:
    """(std / fwhm of the maximum-likelihood width over ``draws`` noise draws with the
    specimen known, the bound): the bound's check. The likelihood is the same Gaussian
    approximation (variance mu + read**2); the width is searched on a grid of +-40% and refined
    by a parabola through the best three points."""
    grid = fwhm * np.linspace(0.6, 1.4, 81)
    means = np.stack([field_mean(spec, g, scale, photons) for g in grid])
    mu = field_mean(spec, fwhm, scale, photons)
    est = []
    for _ in range(draws):
        data = rng.poisson(mu) + rng.normal(0, READ, mu.shape)
        var = means + READ**2
        nll = (((data - means) ** 2) / var + np.log(var)).sum((1, 2))
        i = int(np.clip(np.argmin(nll), 1, len(grid) - 2))
        a, b, c = nll[i - 1:i + 2]
        step = grid[1] - grid[0]
        den = a - 2 * b + c
        est.append(grid[i] + (0.5 * step * (a - c) / den if den > 0 else 0.0))
    return float(np.std(est) / fwhm), known_specimen_bound(spec, fwhm, scale, photons)


def blind_errors(path: Path) -> dict:
    """(model scale, image, fwhm, noise) -> (model name, blind FWHM error) from a benchmark JSON."""
    out = {}
    if not path.exists():
        return out
    for res in json.loads(path.read_text())["results"]:
        for r in res["rows"]:
            out.setdefault((res["scale"], r["image"], r["fwhm"], r["noise"]), []).append(
                (res["model"], r.get("fwhm_error")))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--json", type=Path, default=HERE.parent / "docs" / "quality-fluorescence.json",
                    help="benchmark results whose blind FWHM errors are printed beside the bounds")
    ap.add_argument("--models", nargs="+", default=["dan-x2-fluo", "dan-x4-fluo"],
                    help="which models' rows of --json to print")
    ap.add_argument("--out", type=Path, help="write the rows as JSON")
    ap.add_argument("--check", type=int, default=0, metavar="DRAWS",
                    help="first check the bound against the spread of maximum-likelihood "
                         "widths over DRAWS noise draws on three fields")
    args = ap.parse_args(argv)
    t0 = time.time()
    specs = mb.specimens(False)  # the benchmark's seeded specimens (its real images unused)
    checks = []
    if args.check:
        rng = np.random.default_rng(3)
        for name, fw, scale, photons in (("beads", 5.0, 4, 200.0), ("filaments", 2.5, 4, 50.0),
                                         ("nuclei", 8.5, 2, 50.0)):
            sd, bound = monte_carlo_check(specs[name], fw, scale, photons, args.check, rng)
            checks.append({"image": name, "fwhm": fw, "scale": scale, "photons": photons,
                           "draws": args.check, "ml_std": sd, "bound": bound})
            print(f"check x{scale} {name} {fw} px {photons:g} ph: maximum-likelihood std "
                  f"{100 * sd:.2f}% over {args.check} draws, bound {100 * bound:.2f}%", flush=True)
    errors = blind_errors(args.json)
    rows = []
    _, beads = bead_field(np.random.default_rng(11))
    fils = filament_field(np.random.default_rng(12))
    print(f"{'scale':>5} {'specimen':>10} {'FWHM':>5} {'photons':>8} {'known':>8} {'unknown':>10}"
          f" {'(its known)':>11}  blind FWHM error")
    for scale in args.scales:
        for name in ("beads", "filaments", "nuclei"):
            for fw in mb.FWHMS:
                for noise, photons in mb.NOISE.items():
                    if photons is None:
                        continue
                    row = {"scale": scale, "image": name, "fwhm": fw, "noise": noise,
                           "known": known_specimen_bound(specs[name], fw, scale, photons)}
                    if name == "beads":
                        row["unknown"], row["known_own_field"] = beads_unknown_bound(
                            beads, fw, scale, photons)
                    elif name == "filaments":
                        row["unknown"], row["known_own_field"] = filament_widths_unknown_bound(
                            fils, fw, scale, photons)
                    row["blind_error"] = {m: e for m, e in errors.get((scale, name, fw, noise), [])
                                          if m in args.models}
                    rows.append(row)
                    bu = (f"{100 * row['unknown']:9.1f}% {100 * row['known_own_field']:10.1f}%"
                          if "unknown" in row else f"{'':>10} {'':>11}")
                    be = " ".join(f"{m} {100 * e:.1f}%" for m, e in row["blind_error"].items()
                                  if e is not None)
                    print(f"{scale:>5} {name:>10} {fw:>5} {noise:>8} {100 * row['known']:7.2f}% {bu}  {be}",
                          flush=True)
    # what an estimate at the bound would score on the benchmark's median-error target: errors
    # drawn from each field's bound (beads and filaments: specimen unknown; nuclei: known, a
    # floor), zero on the noise-free fields, the median over all fields, 4,000 draws
    draw = np.random.default_rng(0)
    for scale in args.scales:
        sd = np.array([r.get("unknown", r["known"]) for r in rows if r["scale"] == scale])
        n_clean = 3 * len(mb.FWHMS)
        med = [np.median(np.abs(np.concatenate([draw.normal(0, sd), np.zeros(n_clean)])))
               for _ in range(4000)]
        print(f"x{scale}: {int((sd > 0.10).sum())} of {len(sd)} noisy fields have a bound above 10%; "
              f"an estimate at the bound: median error over {len(sd) + n_clean} fields "
              f"{100 * np.median(med):.1f}% (5-95%: {100 * np.percentile(med, 5):.1f}-"
              f"{100 * np.percentile(med, 95):.1f}%)")
    print(f"({time.time() - t0:.0f} s)")
    if args.out:
        args.out.write_text(json.dumps({"command": "python benchmarks/information_bound.py "
                                        + " ".join(argv if argv is not None else sys.argv[1:]),
                                        "checks": checks, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
