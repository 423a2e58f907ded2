"""Kernel estimation: the DAN loop on the most textured patches (global: of up to four
planes; per-plane: of one), their codes combined into one (:mod:`.kernels`)."""

from __future__ import annotations

import time
from collections.abc import Generator

import numpy as np

from ..imaging.camera import signal_to_noise
from .kernel_modes import (
    ESTIMATION_PATCHES,
    ESTIMATION_PLANES,
    KernelEstimate,
    candidate_patches,
    combine,
    select_patches,
)
from .normalize import Layout
from .plan import (
    Plan,
    read_plane_hwc,
    to_batch,
)
from .progress import (
    Progress,
)

__all__ = ["estimate_kernel", "n_estimation", "sample_leads", "estimate_global"]


def estimate_kernel(plan: Plan, planes: dict, prog: Progress) -> Generator:
    """``plan.iterations`` rounds of the DAN loop on the most textured patches of ``planes``
    (lead -> (B, C, H, W) network units); their last kernels and codes combined."""
    patches = select_patches(planes)
    codes, kernels, rounds, snrs = [], [], [], []
    for p in patches:
        prog.check()
        x = planes[p.lead][..., p.y0:p.y1, p.x0:p.x1]
        snrs.append(signal_to_noise(x))
        kernel, code, n = plan.runner.estimate(x, plan.iterations, plan.settle,
                                                  plan.views)
        codes.append(code)
        kernels.append(kernel)
        rounds.append(n)
        prog.done += 1
        yield prog.done, prog.total
    code, kernel = combine(codes, kernels)
    return KernelEstimate(code, kernel, "estimated", patches, rounds=rounds,
                          snr=float(np.median(snrs)))


def n_estimation(layout: Layout, n_planes: int) -> int:
    per = len(candidate_patches(layout.height, layout.width))
    return min(ESTIMATION_PATCHES, per * n_planes)


def sample_leads(plan: Plan, n: int) -> list[tuple[int, ...]]:
    leads = plan.leads
    picks = sorted({int(round(i)) for i in np.linspace(0, len(leads) - 1, min(n, len(leads)))})
    return [leads[i] for i in picks]


def estimate_global(plan: Plan, prog: Progress, cache: dict) -> Generator:
    """Kernel for the whole array from a few planes; stored in ``plan.estimate``.

    ``cache`` receives the last sampled plane in network units (the plane most likely needed
    next); the others are freed.
    """
    t0 = time.perf_counter()
    planes = {}
    for lead in sample_leads(plan, ESTIMATION_PLANES):
        hwc = read_plane_hwc(plan, lead)
        planes[lead] = to_batch(hwc, plan.layout, plan.norm_of(lead, hwc))
    cache.clear()
    last = list(planes)[-1]
    cache[last] = planes[last]
    plan.estimate = yield from estimate_kernel(plan, planes, prog)
    plan.estimate_s += time.perf_counter() - t0
    return plan.estimate
