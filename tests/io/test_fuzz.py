"""Fuzz the loaders (TIFF reader, checkpoint loader) with mutated valid files: seeded, bounded in
time and memory, in a child process (tests/fuzz_loaders.py). Every case must load or raise one of
the project's own errors; a crash of another kind, a hang or an allocation beyond 2 GiB more than
the process holds fails the test and names the case."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11])
def test_loaders_survive_mutated_files(tmp_path, seed):
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, str(HERE / "fuzz_loaders.py"), "--seed", str(seed),
                        "--seconds", "15", "--case-seconds", "10", "--memory-gib", "2",
                        "--out", str(report)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(report.read_text())
    # the mutations must really exercise both loaders and both outcomes
    assert rep["cases"] > 300, rep
    assert rep["errors"].get("InputError", 0) > 20 and rep["errors"].get("CheckpointError", 0) > 20
    assert rep["loaded"] > 20
    assert rep["findings"] == [], json.dumps(rep["findings"][:5], indent=1)
