"""Planes on a dask.distributed cluster give exactly the bytes of a local run."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from conftest import tiny_model
from napari_dan.batch import run_batch
from napari_dan.io import read_kernels

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as c:
        yield c


@pytest.fixture
def stack(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.integers(0, 3000, (5, 2, 40, 36), dtype=np.uint16)
    path = tmp_path / "in" / "stack.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZCYX", "spacing": 0.3})
    ckpt = tmp_path / "tiny.pt"
    tiny_model(in_nc=1, scale=2, seed=7).save(ckpt)
    return path, ckpt


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["global", "per-plane", "per-tile"])
def test_cluster_equals_local(tmp_path, stack, cluster, mode):
    src, ckpt = stack
    # the workers run torch on one thread (threads_per_worker=1); this process does too (it runs
    # the local reference and, in global mode, the estimation), since CPU kernels may sum in
    # another order with more threads (seen on an AMD CPU without AVX-512)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_batch([src], tmp_path / "local", ckpt, kernel_mode=mode, tile_size=16,
                          device="cpu", quiet=True)
        remote = run_batch([src], tmp_path / "remote", ckpt, kernel_mode=mode, tile_size=16,
                           device="cpu", scheduler=cluster.scheduler_address, quiet=True)
    finally:
        torch.set_num_threads(threads)
    assert not local.failed and not remote.failed, (local.text(), remote.text())
    a = (tmp_path / "local" / "stack_x2.tif").read_bytes()
    b = (tmp_path / "remote" / "stack_x2.tif").read_bytes()
    assert len(a) > 40 * 36 * 4 * 10 and a == b  # identical files, metadata included
    ka, ia = read_kernels(tmp_path / "local" / "stack_x2_kernel.tif")
    kb, ib = read_kernels(tmp_path / "remote" / "stack_x2_kernel.tif")
    np.testing.assert_array_equal(ka, kb)
    assert ia["kernels"] == ib["kernels"]


@pytest.mark.slow
def test_each_worker_loads_the_model_once(stack, cluster):
    from distributed import Client

    from napari_dan import distributed as dd
    from napari_dan.io import open_tiff

    src, ckpt = stack
    with Client(cluster) as client:
        runner = dd.ClusterRunner(client, ckpt, max_in_flight=3)
        assert runner.n_workers == 2 and runner.max_in_flight == 3
        assert len(set(runner.worker_pids)) == 2
        with open_tiff(src) as st:
            out = np.zeros((5, 2, 80, 72), np.uint16)
            runner.super_resolve(st.array(), channel_axis=1, tile_size=16, device="cpu",
                                 out=out)
        assert out.any()

        def loaded():
            return sorted(k[1] for k in dd._CACHE if k[0] == "model")

        per_worker = client.run(loaded)
        assert all(v == [runner.model_key] for v in per_worker.values()), per_worker


def test_cluster_needs_a_file_or_name():
    from napari_dan import distributed as dd
    from napari_dan.errors import InputError

    class FakeClient:
        def scheduler_info(self):
            return {"workers": {}}

    with pytest.raises(InputError, match="model.save"):
        dd.ClusterRunner(FakeClient(), tiny_model())


def test_a_loaded_bundled_model_goes_to_the_cluster_by_name():
    from napari_dan import distributed as dd
    from napari_dan.model import list_models, load_model

    names = [m["name"] for m in list_models()]
    if not names:
        pytest.skip("no bundled model")

    class FakeClient:
        def scheduler_info(self):
            return {"workers": {}}

        def gather(self, futures):
            return list(futures)

    runner = dd.ClusterRunner(FakeClient(), load_model(names[0]))
    assert runner.model_key == names[0] and runner._payload is None


def test_scheduler_unreachable_is_an_input_error():
    from napari_dan.distributed import start_cluster
    from napari_dan.errors import InputError

    with pytest.raises(InputError, match="cannot reach the dask scheduler"):
        start_cluster("tcp://127.0.0.1:9", timeout="1s")
