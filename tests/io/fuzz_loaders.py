"""Mutation fuzzing of the two loaders that read files from users: the TIFF reader and the
checkpoint loader. Run by tests/test_fuzz.py in a child process (so a memory limit can be set and
a hang cannot stop the test run); also usable by hand:

    python tests/fuzz_loaders.py --seed 1 --seconds 60 --out report.json

Every mutated file must either load or raise one of the project's own errors (DanError). Any
other exception, a case slower than ``--case-seconds`` or an allocation beyond the memory limit
(MemoryError) is reported as a finding. Seeded: the same seed gives the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np


class CaseTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise CaseTimeout()


# ---- seeds: small valid files of every kind the loaders meet --------------------------------


def tiff_seeds(d: Path) -> list[Path]:
    import tifffile

    rng = np.random.default_rng(0)
    out = []

    def add(name, data, **kw):
        p = d / name
        tifffile.imwrite(p, data, **kw)
        out.append(p)

    add("plain.tif", rng.integers(0, 255, (3, 16, 16), dtype=np.uint8), photometric="minisblack")
    add("imagej.tif", rng.integers(0, 4000, (2, 2, 12, 14), dtype=np.uint16), imagej=True,
        resolution=(5.0, 5.0), metadata={"axes": "ZCYX", "spacing": 0.5, "unit": "um"})
    add("ome.ome.tif", rng.random((2, 10, 12)).astype(np.float32), ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1})
    add("rgb.tif", rng.integers(0, 255, (12, 12, 3), dtype=np.uint8), photometric="rgb")
    add("zlib.tif", rng.integers(0, 255, (2, 16, 16), dtype=np.uint8), photometric="minisblack",
        compression="zlib")
    add("tiled.tif", rng.integers(0, 60000, (32, 32), dtype=np.uint16), tile=(16, 16))
    p = d / "multi.tif"
    with tifffile.TiffWriter(p) as w:
        w.write(rng.integers(0, 255, (8, 8), dtype=np.uint8))
        w.write(rng.integers(0, 255, (2, 6, 6), dtype=np.uint16), photometric="minisblack")
    out.append(p)
    return out


def checkpoint_seeds(d: Path) -> list[Path]:
    import torch

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from conftest import tiny_model

    m = tiny_model(in_nc=1, scale=2, kernel_size=11)
    ours = m.save(d / "ours.pt")
    official = d / "official.pth"
    torch.save(m.network.state_dict(), official)
    v1 = tiny_model(in_nc=3, scale=4, architecture="DANv1", kernel_size=11)
    torch.save(v1.network.state_dict(), d / "v1.pth")
    return [ours, official, d / "v1.pth"]


# ---- mutations ---------------------------------------------------------------------------

_INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",
                b"\xff\xff\xff\xff", b"\x00\x00\x01\x00", b"\x10\x27\x00\x00"]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        op = int(rng.integers(0, 6))
        n = len(b)
        if n == 0:
            break
        i = int(rng.integers(0, n))
        if op == 0:  # flip bits
            b[i] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:  # random byte
            b[i] = int(rng.integers(0, 256))
        elif op == 2:  # interesting value
            v = _INTERESTING[int(rng.integers(0, len(_INTERESTING)))]
            b[i:i + len(v)] = v
        elif op == 3:  # truncate
            del b[i:]
        elif op == 4:  # delete a chunk
            del b[i:i + int(rng.integers(1, 64))]
        else:  # duplicate a chunk
            j = int(rng.integers(0, n))
            b[i:i] = b[j:j + int(rng.integers(1, 64))]
    return bytes(b)


# ---- the loaders under test ------------------------------------------------------------------


def load_tiff(p: Path) -> None:
    from napari_dan.io import open_tiff, read_kernels

    with open_tiff(p) as st:
        st.read()
        for s in range(1, st.meta.series_count):
            with open_tiff(p, series=s) as other:
                other.read()
    if p.name.startswith("plain"):
        read_kernels(p)


def load_checkpoint(p: Path) -> None:
    from napari_dan.model import load_model

    load_model(p)


def run(seed: int, seconds: float, case_seconds: int, memory_gib: float) -> dict:
    import torch  # noqa: F401  (imported before the memory limit is set)

    from napari_dan.errors import DanError

    with open("/proc/self/statm") as f:
        vm_pages = int(f.read().split()[0])
    limit = vm_pages * os.sysconf("SC_PAGE_SIZE") + int(memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _on_alarm)
    rng = np.random.default_rng(seed)
    report = {"seed": seed, "cases": 0, "loaded": 0, "refused": 0, "findings": [],
              "errors": {}}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        seeds = [(p, load_tiff) for p in tiff_seeds(d)] + \
                [(p, load_checkpoint) for p in checkpoint_seeds(d)]
        blobs = [(p, fn, p.read_bytes()) for p, fn in seeds]
        end = time.monotonic() + seconds
        case = d / "case"
        while time.monotonic() < end:
            src, fn, data = blobs[report["cases"] % len(blobs)]
            mutated = mutate(data, rng)
            target = case.with_name(src.name)
            target.write_bytes(mutated)
            report["cases"] += 1
            signal.alarm(case_seconds)
            try:
                fn(target)
                report["loaded"] += 1
            except DanError as e:
                report["refused"] += 1
                key = type(e).__name__
                report["errors"][key] = report["errors"].get(key, 0) + 1
            except CaseTimeout:
                report["findings"].append({"seed_file": src.name, "kind": "timeout",
                                           "case": report["cases"]})
            except BaseException as e:  # noqa: BLE001 - every other exception is a finding
                if isinstance(e, KeyboardInterrupt):
                    raise
                report["findings"].append({
                    "seed_file": src.name, "kind": type(e).__name__, "message": str(e)[:300],
                    "case": report["cases"],
                    "where": traceback.format_exc().strip().splitlines()[-3:]})
                keep = os.environ.get("FUZZ_KEEP")
                if keep:
                    Path(keep).mkdir(parents=True, exist_ok=True)
                    (Path(keep) / f"{report['cases']}-{src.name}").write_bytes(mutated)
            finally:
                signal.alarm(0)
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--case-seconds", type=int, default=10)
    ap.add_argument("--memory-gib", type=float, default=2.0,
                    help="address space allowed beyond what the process holds after imports")
    ap.add_argument("--out", help="write the report as JSON here (default: stdout)")
    a = ap.parse_args()
    rep = run(a.seed, a.seconds, a.case_seconds, a.memory_gib)
    text = json.dumps(rep, indent=1)
    if a.out:
        Path(a.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
