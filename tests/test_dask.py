"""Out-of-core inputs and Dask: equal results to in-process, resumable block output."""

import h5py
import joblib
import numpy as np
import pandas as pd
import pytest

from sklearn_deeploc import DeepLocFeaturizer
from sklearn_deeploc.blocks import parts_folder, run_blocks
from sklearn_deeploc.cli import main
from sklearn_deeploc.datasets import DeepLocHDF5Dataset, load_deeploc_hdf5, save_deeploc_hdf5
from sklearn_deeploc.jobs import block_table
from sklearn_deeploc.model_selection import FEATURE_HEADS, compare_heads
from sklearn_deeploc.streaming import apply_blockwise

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        yield dask_client


@pytest.fixture(scope="module")
def hdf5_file(cells, tmp_path_factory):
    X, y = cells
    path = tmp_path_factory.mktemp("dask") / "cells.h5"
    save_deeploc_hdf5(path, X, y, chunk_size=10)
    return path


def test_dask_arrays_equal_in_process_results(client, source_model, cells):
    X, _ = cells
    featurizer = DeepLocFeaturizer(source_model).fit(X)
    lazy = da.from_array(X, chunks=(7, 2, 64, 64))
    features = featurizer.transform(lazy)
    assert isinstance(features, da.Array) and features.chunks[0] == (7, 7, 7, 3)
    # Blocks are smaller batches than in-process: equal up to float32 rounding.
    np.testing.assert_allclose(features.compute(), featurizer.transform(X), rtol=1e-5, atol=1e-6)
    flat = da.from_array(X.reshape(len(X), -1), chunks=(5, -1))
    np.testing.assert_allclose(
        source_model.predict_proba(flat).compute(),
        source_model.predict_proba(X),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_array_equal(source_model.predict(lazy).compute(), source_model.predict(X))


def test_errors_of_a_block_name_its_place_in_the_whole_input(source_model, cells, tmp_path):
    X, _ = cells
    featurizer = DeepLocFeaturizer(source_model).fit(X)
    broken = X.copy()
    broken[17, 1, 3, 3] = np.inf
    lazy = da.from_array(broken, chunks=(5, 2, 64, 64))
    with pytest.raises(ValueError, match="block of cells 15 to 19 of the input.*cell 2"):
        featurizer.transform(lazy).compute(scheduler="synchronous")
    with h5py.File(tmp_path / "crops.h5", "w") as f:
        f["crops"] = broken
        with pytest.raises(ValueError, match="block of cells 15 to 19 of the input.*cell 2"):
            apply_blockwise(
                featurizer.transform, f["crops"], featurizer.n_features_out_, block_size=5
            )
    with pytest.raises(ValueError, match="got a dask array of shape \\(8192,\\)"):
        featurizer.transform(da.zeros(8192, chunks=1000))
    three = da.zeros((40, 3, 64, 64), chunks=(10, 3, 64, 64))  # its metadata says enough
    with pytest.raises(ValueError, match=r"Expected 2 channel\(s\); got 3"):
        featurizer.transform(three)  # refused before any graph is built
    with pytest.raises(ValueError, match=r"Expected crops of 64x64 pixels.*got 96x96"):
        source_model.predict_proba(da.zeros((40, 2, 96, 96), chunks=(10, 2, 96, 96)))


def test_lazy_hdf5_is_read_in_blocks(source_model, hdf5_file):
    X, _ = load_deeploc_hdf5(hdf5_file)
    featurizer = DeepLocFeaturizer(source_model).fit(X[:1])
    lazy = DeepLocHDF5Dataset(hdf5_file)
    np.testing.assert_allclose(
        featurizer.transform(lazy), featurizer.transform(X), rtol=1e-5, atol=1e-6
    )
    with h5py.File(hdf5_file) as f:
        np.testing.assert_allclose(
            source_model.predict_proba(f["data2"]),
            source_model.predict_proba(X[10:20]),
            rtol=1e-5,
            atol=1e-6,
        )


def test_zarr_arrays_are_read_in_blocks(source_model, cells, tmp_path):
    zarr = pytest.importorskip("zarr")
    X, _ = cells
    stored = zarr.open(
        str(tmp_path / "cells.zarr"),
        mode="w",
        shape=X.shape,
        chunks=(5, 2, 64, 64),
        dtype="float32",
    )
    stored[:] = X
    featurizer = DeepLocFeaturizer(source_model).fit(X)
    np.testing.assert_allclose(
        featurizer.transform(stored), featurizer.transform(X), rtol=1e-5, atol=1e-6
    )
    lazy = da.from_zarr(stored)
    np.testing.assert_allclose(
        source_model.predict_proba(lazy).compute(),
        source_model.predict_proba(X),
        rtol=1e-5,
        atol=1e-6,
    )


def test_head_search_under_the_dask_backend(client, source_model, cells):
    X, y = cells
    local, local_table = compare_heads(X, y, source_model, heads=FEATURE_HEADS, cv=2)
    with joblib.parallel_backend("dask"):
        remote, remote_table = compare_heads(
            X, y, source_model, heads=FEATURE_HEADS, cv=2, n_jobs=-1
        )
    assert remote.best_params_["head"].__class__ is local.best_params_["head"].__class__
    pd.testing.assert_frame_equal(
        remote_table.drop(columns="mean_fit_time"), local_table.drop(columns="mean_fit_time")
    )


def test_cli_featurize_on_a_running_cluster(client, source_folder, hdf5_file, tmp_path):
    local, remote = tmp_path / "local.parquet", tmp_path / "remote.parquet"
    common = ["featurize", str(source_folder), str(hdf5_file), "--block-size", "5"]
    assert main([*common, "-o", str(local)]) == 0
    assert main([*common, "-o", str(remote), "--scheduler", client.scheduler.address]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(remote), pd.read_parquet(local))


def test_interrupted_run_resumes_with_only_the_missing_blocks(source_model, hdf5_file, tmp_path):
    complete, resumed = tmp_path / "complete.csv", tmp_path / "resumed.csv"
    run_blocks(complete, 24, 5, block_table, source_model, hdf5_file, verbose=0)
    calls = []

    def interrupted_after_two_blocks(estimator, data, start, stop):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        calls.append((start, stop))
        return block_table(estimator, data, start, stop)

    with pytest.raises(KeyboardInterrupt):
        run_blocks(resumed, 24, 5, interrupted_after_two_blocks, source_model, hdf5_file, verbose=0)
    assert not resumed.exists() and len(list(parts_folder(resumed).glob("block-*"))) == 2
    rerun = []

    def recording(estimator, data, start, stop):
        rerun.append((start, stop))
        return block_table(estimator, data, start, stop)

    assert run_blocks(resumed, 24, 5, recording, source_model, hdf5_file, verbose=0) == 3
    assert rerun == [(10, 15), (15, 20), (20, 24)]
    pd.testing.assert_frame_equal(pd.read_csv(resumed), pd.read_csv(complete))
