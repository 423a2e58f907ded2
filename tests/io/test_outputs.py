"""Outputs shared between runs: unique partial names, one writer per output, records of what made
an output (resume), SIGTERM and failed files leave nothing behind. The concurrency and signal
cases run the real command in real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

from conftest import tiny_model
from napari_dan.batch import run_batch
from napari_dan.errors import OutputBusy
from napari_dan.io import OutputLock, file_fingerprint, partial_glob, partial_path, read_kernels


def _env():
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _cmd(*args):
    return [sys.executable, "-m", "napari_dan.cli", "super-resolve", *map(str, args)]


@pytest.fixture
def ckpts(tmp_path):
    a, b = tmp_path / "model_a.pt", tmp_path / "model_b.pt"
    tiny_model(in_nc=1, scale=2, seed=0).save(a)
    tiny_model(in_nc=1, scale=2, seed=1).save(b)
    return a, b


def _stack(path, planes, side=48, seed=0):
    data = np.random.default_rng(seed).integers(0, 255, (planes, side, side), dtype=np.uint8)
    tifffile.imwrite(path, data, photometric="minisblack")
    return data


def _wait_for(pred, timeout=120.0):
    end = time.time() + timeout
    while not pred() and time.time() < end:
        time.sleep(0.05)
    return pred()


# ---- building blocks ------------------------------------------------------------------------


def test_partial_names_are_unique_and_hidden(tmp_path):
    names = {partial_path(tmp_path / "a_x2.tif").name for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith(".a_x2.tif.") and n.endswith(".partial") for n in names)


@pytest.mark.slow
def test_lock_is_exclusive_across_processes_and_dies_with_its_holder(tmp_path):
    final = tmp_path / "out.tif"
    code = ("import sys, time; from napari_dan.io import OutputLock; "
            f"l = OutputLock({str(final)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusy, match=rf"out.tif is being written by another napari-dan "
                                             rf"run \(pid {holder.pid} "):
            OutputLock(final).acquire()
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs, the kernel drops the lock
        holder.wait()
    with OutputLock(final) as lock:  # a dead holder never blocks the next run
        assert lock.path.exists()
    assert not lock.path.exists()  # released and removed


def test_stale_partials_of_dead_runs_are_removed_by_the_next_holder(tmp_path):
    final = tmp_path / "out.tif"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".out.tif.{dead}-deadbeef.partial"
    stale.write_bytes(b"half")
    alive = tmp_path / f".out.tif.{os.getppid()}-cafe0000.partial"  # a live process's: kept
    alive.write_bytes(b"busy")
    with OutputLock(final) as lock:
        assert lock.clean_stale_partials() == [stale]
    assert not stale.exists() and alive.exists()


def test_fingerprint_follows_content_not_name(tmp_path):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    _stack(tmp_path / "d1" / "a.tif", 2, seed=0)
    _stack(tmp_path / "d2" / "a.tif", 2, seed=1)
    (tmp_path / "copy.tif").write_bytes((tmp_path / "d1" / "a.tif").read_bytes())
    f1, f2 = file_fingerprint(tmp_path / "d1" / "a.tif"), file_fingerprint(tmp_path / "d2" / "a.tif")
    assert f1 != f2 and file_fingerprint(tmp_path / "copy.tif") == f1


# ---- resume: skip only what this run would produce ------------------------------------------


def _two_folders(tmp_path, name, planes):
    """d1/<name> and d2/<name>: two different stacks under one file name."""
    for d, seed in (("d1", 0), ("d2", 1)):
        (tmp_path / d).mkdir()
        _stack(tmp_path / d / name, planes, side=20, seed=seed)


def test_resume_checks_what_produced_the_output(tmp_path, ckpts):
    a, b = ckpts
    _two_folders(tmp_path, "img.tif", 2)
    out = tmp_path / "out"
    s = run_batch([tmp_path / "d1" / "img.tif"], out, a, quiet=True)
    assert s.count("done") == 1
    _, info = read_kernels(out / "img_x2_kernel.tif")
    rec = info["produced_by"]
    assert rec["input"]["path"] == str((tmp_path / "d1" / "img.tif").resolve())
    assert rec["model"]["name"] == "model_a" and rec["options"]["kernel_mode"] == "global"
    before = (out / "img_x2.tif").read_bytes()

    # same input, model and options: skipped
    s = run_batch([tmp_path / "d1" / "img.tif"], out, a, quiet=True)
    assert s.count("skipped") == 1
    # another file of the same name: refused, with the reason, output untouched
    s = run_batch([tmp_path / "d2" / "img.tif"], out, a, quiet=True)
    assert s.count("failed") == 1 and "another input" in s.failed[0].message
    assert str(tmp_path / "d1" / "img.tif") in s.failed[0].message
    # another model, another kernel mode: refused
    s = run_batch([tmp_path / "d1" / "img.tif"], out, b, quiet=True)
    assert "another model (model_a)" in s.failed[0].message
    s = run_batch([tmp_path / "d1" / "img.tif"], out, a, kernel_mode="per-plane", quiet=True)
    assert "other options (kernel_mode 'global' -> 'per-plane')" in s.failed[0].message
    assert (out / "img_x2.tif").read_bytes() == before
    # a copy of the same data elsewhere: what it would produce exists, so skipped
    (tmp_path / "d3").mkdir()
    (tmp_path / "d3" / "img.tif").write_bytes((tmp_path / "d1" / "img.tif").read_bytes())
    assert run_batch([tmp_path / "d3" / "img.tif"], out, a, quiet=True).count("skipped") == 1
    # an output without a record (kernel file gone): refused, not trusted
    (out / "img_x2_kernel.tif").unlink()
    s = run_batch([tmp_path / "d1" / "img.tif"], out, a, quiet=True)
    assert "no record of what produced it" in s.failed[0].message
    # --overwrite replaces it
    s = run_batch([tmp_path / "d2" / "img.tif"], out, a, overwrite=True, quiet=True)
    assert s.count("done") == 1
    _, info = read_kernels(out / "img_x2_kernel.tif")
    assert info["produced_by"]["input"]["path"] == str((tmp_path / "d2" / "img.tif").resolve())


@pytest.mark.slow
def test_cli_resume_from_another_folder_is_refused_with_exit_1(tmp_path, ckpts):
    a, _ = ckpts
    _two_folders(tmp_path, "a.tif", 1)
    out = tmp_path / "out"
    r1 = subprocess.run(_cmd(tmp_path / "d1" / "a.tif", "-o", out, "-m", a, "-q"), env=_env(),
                        capture_output=True, text=True, timeout=120)
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run(_cmd(tmp_path / "d2" / "a.tif", "-o", out, "-m", a), env=_env(),
                        capture_output=True, text=True, timeout=120)
    assert r2.returncode == 1
    assert "made from another input" in r2.stderr and "skipped" not in r2.stdout
    assert "Traceback" not in r2.stderr


# ---- two real processes on one output --------------------------------------------------------


@pytest.mark.slow
def test_two_runs_on_one_output_never_mix(tmp_path, ckpts):
    a, b = ckpts
    (tmp_path / "in").mkdir()
    _stack(tmp_path / "in" / "z.tif", 300)
    out = tmp_path / "out"
    ref = tmp_path / "ref"
    # the reference: run A alone
    r = subprocess.run(_cmd(tmp_path / "in" / "z.tif", "-o", ref, "-m", a, "-q", "--tile-size",
                            "16", "--device", "cpu"), env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    proc_a = subprocess.Popen(_cmd(tmp_path / "in" / "z.tif", "-o", out, "-m", a, "-q",
                                   "--tile-size", "16", "--device", "cpu"),
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    assert _wait_for(lambda: partial_glob(out / "z_x2.tif")), proc_a.communicate()
    # while A writes, B (another model, --overwrite) and C (A's options) start
    others = [subprocess.Popen(_cmd(tmp_path / "in" / "z.tif", "-o", out, "-m", m, "-q",
                                    *extra, "--tile-size", "16", "--device", "cpu"),
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for m, extra in ((b, ["--overwrite"]), (a, []))]
    results = [(p.communicate(timeout=300), p.returncode) for p in others]
    a_still_running = proc_a.poll() is None
    _, err_a = proc_a.communicate(timeout=300)
    assert proc_a.returncode == 0, err_a
    assert a_still_running, "A finished before B and C tried: make its stack larger"
    for (_, err), rc in results:
        assert rc == 1 and "is being written by another napari-dan run" in err, err
        assert "Traceback" not in err
    # the output is A's alone, byte for byte what A writes when it runs alone
    got, want = tifffile.imread(out / "z_x2.tif"), tifffile.imread(ref / "z_x2.tif")
    np.testing.assert_array_equal(got, want)
    _, info = read_kernels(out / "z_x2_kernel.tif")
    assert info["model"] == "model_a"
    assert sorted(p.name for p in out.iterdir()) == ["z_x2.tif", "z_x2_kernel.tif"]
    # once A is done, a re-run with A's options skips, B's is refused without --overwrite
    r = subprocess.run(_cmd(tmp_path / "in" / "z.tif", "-o", out, "-m", a), env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "skipped" in r.stdout


# ---- signals and failed files leave nothing --------------------------------------------------


def _default_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
@pytest.mark.slow
def test_sigterm_removes_partials_and_exits_128_plus_signal(tmp_path, ckpts, sig):
    a, _ = ckpts
    (tmp_path / "in").mkdir()
    _stack(tmp_path / "in" / "a.tif", 1, side=20)
    _stack(tmp_path / "in" / "b.tif", 2000)  # long enough to be running when signalled
    out = tmp_path / "out"
    # the command leaves a signal alone when it was started ignoring it (nohup ignores SIGHUP,
    # and a test runner started under nohup passes that on): start it with the default actions
    proc = subprocess.Popen(_cmd(tmp_path / "in", "-o", out, "-m", a, "-q", "--tile-size", "16",
                                 "--device", "cpu"), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    assert _wait_for(lambda: partial_glob(out / "b_x2.tif")), proc.communicate()
    time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be signalled"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert f"stopped by {signal.Signals(sig).name}" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.tif", "a_x2_kernel.tif"]


@pytest.mark.slow
def test_a_refused_file_leaves_no_partial(tmp_path, ckpts):
    a, _ = ckpts
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "mask.tif", np.zeros((20, 20), bool))
    out = tmp_path / "out"
    r = subprocess.run(_cmd(tmp_path / "in" / "mask.tif", "-o", out, "-m", a, "-q"), env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "boolean" in r.stderr
    assert not out.exists()  # nothing in it, so the folder the run made is gone too
    out.mkdir()
    r = subprocess.run(_cmd(tmp_path / "in" / "mask.tif", "-o", out, "-m", a, "-q"), env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and list(out.iterdir()) == []  # a folder given stays, empty


def test_writer_that_cannot_start_leaves_no_partial(tmp_path):
    from napari_dan.io import BlockLayout, StackWriter, TiffMeta

    meta = TiffMeta(shape=(8, 8), dtype=np.dtype(bool), axes="YX")
    with pytest.raises(Exception):  # noqa: B017 - whatever tifffile says about bool, no file stays
        StackWriter(tmp_path / "o.tif", meta, BlockLayout((8, 8), "YX", 2))
    assert list(tmp_path.iterdir()) == []


# ---- multi-series files ----------------------------------------------------------------------


@pytest.mark.slow
def test_multi_series_warns_and_series_picks(tmp_path, ckpts):
    a, _ = ckpts
    p = tmp_path / "multi.tif"
    rng = np.random.default_rng(0)
    with tifffile.TiffWriter(p) as w:
        w.write(rng.integers(0, 255, (20, 20), dtype=np.uint8))
        w.write(rng.integers(0, 255, (3, 16, 18), dtype=np.uint8), photometric="minisblack")
    r = subprocess.run(_cmd(p, "-o", tmp_path / "o0", "-m", a), env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "multi.tif holds 2 image series (20x20, 3x16x18); only series 0" in r.stderr
    assert tifffile.imread(tmp_path / "o0" / "multi_x2.tif").shape == (40, 40)
    r = subprocess.run(_cmd(p, "-o", tmp_path / "o1", "-m", a, "--series", "1"), env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "image series" not in r.stderr, r.stderr
    assert tifffile.imread(tmp_path / "o1" / "multi_x2.tif").shape == (3, 32, 36)
    _, info = read_kernels(tmp_path / "o1" / "multi_x2_kernel.tif")
    assert info["produced_by"]["input"]["series"] == 1
    r = subprocess.run(_cmd(p, "-o", tmp_path / "o2", "-m", a, "--series", "5"), env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "has 2 image series (0 to 1); series 5 does not exist" in r.stderr
