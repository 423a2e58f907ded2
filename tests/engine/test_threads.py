"""CPU threads: "auto" uses the cores other processes leave idle, an integer fixes the count,
None leaves PyTorch alone; the previous count is always restored."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_dan import super_resolve
from napari_dan.engine import threads as th
from napari_dan.errors import InputError


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs /proc/stat")
def test_a_busy_process_is_seen():
    cpus = th.available_cpus()
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        th.others_busy_cores()  # start a window
        time.sleep(0.5)
        busy = th.others_busy_cores()
    finally:
        spin.kill()
        spin.wait()
    assert busy is not None and 0.6 <= busy <= len(cpus) + 0.1
    # our own work is not counted as "others": a window in which this process spins reads no
    # more than one in which it sleeps (compared, not against zero, so that other work on the
    # machine, a training run beside the tests, does not fail it)
    th.others_busy_cores()
    time.sleep(0.4)
    idle = th.others_busy_cores()
    end = time.process_time() + 0.4
    while time.process_time() < end:
        pass
    assert th.others_busy_cores() < idle + 0.5


def test_auto_follows_idle_cores_and_restores(monkeypatch, tiny_gray):
    monkeypatch.setattr(th, "available_cpus", lambda: [0, 1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(th, "others_busy_cores", lambda: 1.0)
        img = np.random.default_rng(0).integers(0, 255, (3, 24, 24), dtype=np.uint8)
        r = super_resolve(img, tiny_gray, threads="auto")
        assert r.metadata["threads"] == {"requested": "auto", "used": {1: 4}}  # estimate + 3
        assert torch.get_num_threads() == 2  # restored
        monkeypatch.setattr(th, "others_busy_cores", lambda: 0.1)
        assert super_resolve(img, tiny_gray, threads="auto").metadata["threads"]["used"] == {2: 4}
        monkeypatch.setattr(th, "others_busy_cores", lambda: None)  # no /proc/stat: the cap
        assert super_resolve(img, tiny_gray, threads="auto").metadata["threads"]["used"] == {2: 4}
        torch.set_num_threads(1)  # the caller's count caps "auto"
        monkeypatch.setattr(th, "others_busy_cores", lambda: 0.0)
        assert super_resolve(img, tiny_gray, threads="auto").metadata["threads"]["used"] == {1: 4}
        r = super_resolve(img, tiny_gray, threads=2)
        assert r.metadata["threads"]["used"] == {2: 4} and torch.get_num_threads() == 1
        r = super_resolve(img, tiny_gray)  # None: left alone
        assert r.metadata["threads"]["requested"] == "unchanged"
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5, True])
def test_bad_thread_counts(bad, tiny_gray):
    with pytest.raises(InputError, match="threads must be"):
        super_resolve(np.zeros((16, 16), np.uint8), tiny_gray, threads=bad)


def test_thread_count_does_not_change_the_result_much(tiny_gray):
    img = np.random.default_rng(1).integers(0, 255, (40, 40), dtype=np.uint8)
    a = super_resolve(img, tiny_gray, threads=1, precision="fp32").image.astype(int)
    b = super_resolve(img, tiny_gray, threads=2, precision="fp32").image.astype(int)
    assert np.abs(a - b).max() <= 1


def test_an_error_in_the_progress_callback_restores_the_thread_count(tiny_gray):
    # the engine's generator is closed when the caller's callback raises: the count it set is
    # restored at once, not when the traceback happens to be collected
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    img = np.random.default_rng(0).integers(0, 255, (3, 24, 24), dtype=np.uint8)

    def boom(done, total):
        raise RuntimeError("callback failed")

    try:
        with pytest.raises(RuntimeError, match="callback failed") as info:
            super_resolve(img, tiny_gray, threads=2, progress=boom)
        assert torch.get_num_threads() == 1
        del info
    finally:
        torch.set_num_threads(before)
