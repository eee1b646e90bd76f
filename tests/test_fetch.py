"""Fetching the published model and datasets, against a loopback HTTP server.

The server serves zips laid out like the published archives, built from the
committed small TensorFlow fixture and from small HDF5 files; nothing here
reaches outside 127.0.0.1.
"""

import io
import os
import re
import shutil
import stat
import struct
import threading
import types
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

import sklearn_deeploc.datasets._fetch as fetch
from sklearn_deeploc import load_pretrained
from sklearn_deeploc.datasets import (
    fetch_deeploc_datasets,
    fetch_deeploc_model,
    get_data_home,
    load_deeploc_hdf5,
    make_yeast_cells,
    save_deeploc_hdf5,
)

SMALL = Path(__file__).parent / "fixtures" / "tf_deeploc_small"
CHECKPOINT = "model.ckpt-5000"


def _zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_zip():
    """``pretrained_DeepLoc/pretrained_models/model.ckpt-5000.*`` as published."""
    folder = "pretrained_DeepLoc/pretrained_models/"
    members = {
        folder + f"{CHECKPOINT}{suffix}": (SMALL / f"{CHECKPOINT}{suffix}").read_bytes()
        for suffix in (".index", ".data-00000-of-00001")
    }
    members[folder + f"{CHECKPOINT}.meta"] = b"graph definition: not needed to import"
    return _zip(members)


@pytest.fixture(scope="module")
def subsets():
    """Small Chong-like train and test sets."""
    classes = ["ER", "NUCLEI", "VACUOLE"]
    return {
        "Chong_train": make_yeast_cells(2, classes, random_state=0),
        "Chong_test": make_yeast_cells(1, classes, random_state=1),
    }


@pytest.fixture(scope="module")
def datasets_zip(subsets, tmp_path_factory):
    """``datasets/<name>_set.hdf5`` as published, written by save_deeploc_hdf5."""
    folder = tmp_path_factory.mktemp("datasets")
    for name, (X, y) in subsets.items():
        save_deeploc_hdf5(folder / f"{name}_set.hdf5", X, y)
    return _zip({f"datasets/{p.name}": p.read_bytes() for p in folder.iterdir()})


class ZipServer:
    """A loopback HTTP server recording every request; each path answers in turn.

    An answer is (body, declared length): a length above the body's is a
    connection lost mid-download. The last answer of a path repeats.
    """

    def __init__(self):
        self.answers, self.requests = {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                answers = server.answers.get(self.path)
                if not answers:
                    self.send_error(404)
                    return
                body, length = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        serving = threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True)
        serving.start()

    def serve(self, path, body, *, cut=0):
        """Answer ``path`` with ``body``, cut off halfway the first ``cut`` times; its URL."""
        self.answers[path] = [(body[: len(body) // 2], len(body))] * cut + [(body, len(body))]
        return f"http://127.0.0.1:{self.http.server_port}{path}"


@pytest.fixture
def server():
    server = ZipServer()
    yield server
    server.http.shutdown()
    server.http.server_close()


@pytest.fixture
def no_retries(monkeypatch):
    """Failing downloads fail at once (pooch waits seconds between retries)."""
    monkeypatch.setattr(fetch, "DOWNLOAD_RETRIES", 0)


def _closed_port_url():
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_port
    closed.server_close()
    return f"http://127.0.0.1:{port}/pretrained_DeepLoc.zip"


def _logits(folder):
    expected = np.load(SMALL / "expected.npz")
    net = load_pretrained(folder).model_.network.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(expected["inputs_nchw"])).numpy()
    return logits, expected["logits"]


def test_first_call_downloads_and_converts_the_next_makes_no_request(server, model_zip, tmp_path):
    url = server.serve("/pretrained_DeepLoc.zip", model_zip)
    folder = fetch_deeploc_model(data_home=tmp_path, url=url)
    logits, expected = _logits(folder)
    assert np.abs(logits - expected).max() < 1e-4
    files = sorted(p.name for p in folder.iterdir())
    assert files == sorted([fetch.COMPLETE_MARKER, "config.json", "weights.safetensors"])
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # archive and temp folder gone
    assert fetch_deeploc_model(data_home=tmp_path, url=url) == folder
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("damage", "error"),
    [("truncated", "Could not download .*IncompleteRead"), ("corrupt", "not a complete zip")],
)
def test_damaged_download_is_refused_and_leaves_the_cache_clean(
    server, model_zip, tmp_path, no_retries, damage, error
):
    if damage == "truncated":
        url = server.serve("/pretrained_DeepLoc.zip", model_zip, cut=1)
    else:
        middle = slice(len(model_zip) // 2, len(model_zip) // 2 + 64)
        corrupt = bytearray(model_zip)
        corrupt[middle] = bytes(b ^ 0xFF for b in corrupt[middle])
        url = server.serve("/pretrained_DeepLoc.zip", bytes(corrupt))
    with pytest.raises(OSError if damage == "truncated" else ValueError, match=error):
        fetch_deeploc_model(data_home=tmp_path, url=url)
    assert list(tmp_path.iterdir()) == []
    server.serve("/pretrained_DeepLoc.zip", model_zip)
    folder = fetch_deeploc_model(data_home=tmp_path, url=url)
    assert (folder / "weights.safetensors").is_file()
    assert len(server.requests) == 2


def test_cut_connection_is_retried(server, model_zip, tmp_path):
    url = server.serve("/pretrained_DeepLoc.zip", model_zip, cut=1)
    folder = fetch_deeploc_model(data_home=tmp_path, url=url)
    assert len(server.requests) == 2
    assert (folder / "config.json").is_file()


def test_archive_without_checkpoint_is_refused(server, tmp_path, no_retries):
    url = server.serve("/pretrained_DeepLoc.zip", _zip({"readme.txt": b"nothing here"}))
    with pytest.raises(ValueError, match="exactly one TensorFlow checkpoint .*; found none"):
        fetch_deeploc_model(data_home=tmp_path, url=url)
    assert list(tmp_path.iterdir()) == []


def test_archive_downloaded_by_hand_works_offline(model_zip, tmp_path):
    archive = tmp_path / "pretrained_DeepLoc.zip"
    archive.write_bytes(model_zip)
    home = tmp_path / "home"
    folder = fetch_deeploc_model(data_home=home, url=_closed_port_url(), archive=archive)
    logits, expected = _logits(folder)
    assert np.abs(logits - expected).max() < 1e-4
    assert archive.is_file()  # the user's file is left in place


def test_fetched_folders_are_as_readable_as_the_umask_allows(model_zip, tmp_path):
    archive = tmp_path / "pretrained_DeepLoc.zip"
    archive.write_bytes(model_zip)
    previous = os.umask(0o022)
    try:
        folder = fetch_deeploc_model(data_home=tmp_path / "home", archive=archive)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # mkdtemp would give 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in folder.iterdir()} == {0o644}


def test_offline_error_says_where_to_download_and_how_to_pass_it(tmp_path, no_retries):
    url = _closed_port_url()
    with pytest.raises(ConnectionError, match=f"Could not download {url}.*archive="):
        fetch_deeploc_model(data_home=tmp_path, url=url)
    assert list(tmp_path.iterdir()) == []


def test_size_and_hash_are_checked_when_known(model_zip, tmp_path, monkeypatch):
    archive = tmp_path / "pretrained_DeepLoc.zip"
    archive.write_bytes(model_zip)
    published = fetch.MODELS["chong"]
    monkeypatch.setitem(fetch.MODELS, "chong", published._replace(size=len(model_zip) + 1))
    with pytest.raises(ValueError, match="the published archive has"):
        fetch_deeploc_model(data_home=tmp_path / "home", archive=archive)
    monkeypatch.setitem(fetch.MODELS, "chong", published._replace(sha256="0" * 64))
    with pytest.raises(ValueError, match="SHA256 hash"):
        fetch_deeploc_model(data_home=tmp_path / "home", archive=archive)
    assert list((tmp_path / "home").iterdir()) == []


def test_unknown_model_name(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown model 'yeast'; available: \['chong'\]"):
        fetch_deeploc_model("yeast", data_home=tmp_path)


def test_datasets(server, datasets_zip, subsets, tmp_path):
    url = server.serve("/DeepLoc_full_datasets.zip", datasets_zip)
    files = fetch_deeploc_datasets(data_home=tmp_path, url=url)
    assert sorted(files) == ["Chong_test", "Chong_train"]
    X, y = load_deeploc_hdf5(files["Chong_train"])
    assert np.array_equal(X, subsets["Chong_train"][0])
    assert np.array_equal(y, subsets["Chong_train"][1])
    test_only = fetch_deeploc_datasets("Chong_test", data_home=tmp_path, url=url)
    assert test_only == {"Chong_test": files["Chong_test"]}
    with pytest.raises(ValueError, match=r"Unknown subsets \['Chong_valid'\]; available: "):
        fetch_deeploc_datasets(["Chong_valid"], data_home=tmp_path, url=url)
    assert len(server.requests) == 1


def test_datasets_archive_of_other_files_is_refused(tmp_path):
    archive = tmp_path / "DeepLoc_full_datasets.zip"
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle["images"] = np.zeros((2, 3))
    archive.write_bytes(_zip({"datasets/other_set.hdf5": buffer.getvalue()}))
    with pytest.raises(ValueError, match="is not a DeepLoc HDF5 file"):
        fetch_deeploc_datasets(data_home=tmp_path / "home", archive=archive)
    assert list((tmp_path / "home").iterdir()) == []


def test_data_home_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SKLEARN_DEEPLOC_DATA", str(tmp_path / "from-env"))
    assert get_data_home() == tmp_path / "from-env"
    assert get_data_home(tmp_path / "given") == tmp_path / "given"
    assert (tmp_path / "from-env").is_dir()


def test_registered_name_resolves_through_the_cache(server, model_zip, tmp_path, monkeypatch):
    from sklearn_deeploc import DeepLocClassifier, DeepLocFeaturizer
    from sklearn_deeploc.cli import main

    monkeypatch.setenv("SKLEARN_DEEPLOC_DATA", str(tmp_path / "home"))
    url = server.serve("/pretrained_DeepLoc.zip", model_zip)
    assert main(["fetch", "model", "--url", url]) == 0
    requests = len(server.requests)
    X = np.random.default_rng(0).random((3, 2, 64, 64)).astype(np.float32) * 1000
    chong = load_pretrained("deeploc-chong")  # the default URL is never asked: it is cached
    featurizer = DeepLocFeaturizer("deeploc-chong").fit(X)
    assert featurizer.transform(X).shape == (3, chong.model_.feature_width("fc2"))
    y = ["class_0", "class_1", "class_0"]
    tuned = DeepLocClassifier(pretrained="deeploc-chong", max_iter=1, batch_size=4).fit(X, y)
    assert list(tuned.classes_) == ["class_0", "class_1"]
    save_deeploc_hdf5(tmp_path / "cells.h5", X)
    out = tmp_path / "cells.csv"
    predict = ["predict", "deeploc-chong", str(tmp_path / "cells.h5"), "-o", str(out)]
    assert main([*predict, "--device", "cpu"]) == 0
    assert len(server.requests) == requests
    np.testing.assert_allclose(
        pd.read_csv(out).filter(like="p_").to_numpy(), chong.predict_proba(X), atol=1e-6
    )


def test_a_path_that_exists_wins_over_a_name(tmp_path, monkeypatch):
    from sklearn_deeploc import DeepLocModel, DeepLocNet

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKLEARN_DEEPLOC_DATA", str(tmp_path / "empty-home"))
    net = DeepLocNet(n_classes=2, conv_channels=(4,) * 8, fc_units=(8, 8))
    DeepLocModel(net, ["a", "b"]).save(tmp_path / "deeploc-chong")
    assert list(load_pretrained("deeploc-chong").classes_) == ["a", "b"]
    assert not (tmp_path / "empty-home" / "deeploc-chong").exists()


def _broken_folder(home, kind):
    """What an interrupted or foreign write may leave where the model folder belongs."""
    target = home / "deeploc-chong"
    if kind == "file":
        target.write_text("not a folder")
        return
    target.mkdir()
    if kind == "config only":
        (target / "config.json").write_text("{}")


@pytest.mark.parametrize("kind", ["empty", "config only", "file"])
def test_incomplete_folder_in_the_data_home_is_fetched_again(server, model_zip, tmp_path, kind):
    url = server.serve("/pretrained_DeepLoc.zip", model_zip)
    _broken_folder(tmp_path, kind)
    folder = fetch_deeploc_model(data_home=tmp_path, url=url)
    logits, expected = _logits(folder)
    assert np.abs(logits - expected).max() < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # the broken one deleted
    assert fetch_deeploc_model(data_home=tmp_path, url=url) == folder
    assert len(server.requests) == 1


def test_fetched_folder_with_a_file_cut_short_is_fetched_again(server, model_zip, tmp_path):
    url = server.serve("/pretrained_DeepLoc.zip", model_zip)
    folder = fetch_deeploc_model(data_home=tmp_path, url=url)
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert fetch_deeploc_model(data_home=tmp_path, url=url) == folder
    assert len(server.requests) == 2
    logits, expected = _logits(folder)
    assert np.abs(logits - expected).max() < 1e-4


def _corrupt_middle(data):
    middle = slice(len(data) // 2, len(data) // 2 + 64)
    corrupt = bytearray(data)
    corrupt[middle] = bytes(b ^ 0xFF for b in corrupt[middle])
    return bytes(corrupt)


@pytest.mark.parametrize(
    ("leftover", "downloads"), [("truncated", 1), ("corrupt", 1), ("whole", 0)]
)
def test_archive_left_in_the_data_home_is_used_only_if_whole(
    server, model_zip, tmp_path, leftover, downloads
):
    left = {
        "truncated": model_zip[: len(model_zip) // 2],
        "corrupt": _corrupt_middle(model_zip),
        "whole": model_zip,
    }
    (tmp_path / "pretrained_DeepLoc.zip").write_bytes(left[leftover])
    url = server.serve("/pretrained_DeepLoc.zip", model_zip)
    folder = fetch_deeploc_model(data_home=tmp_path, url=url)
    assert len(server.requests) == downloads
    logits, expected = _logits(folder)
    assert np.abs(logits - expected).max() < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_archive_past_the_size_limit_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "MAX_EXTRACTED_BYTES", 10_000)
    archive = tmp_path / "DeepLoc_full_datasets.zip"
    archive.write_bytes(_zip({"a.txt": b"small", "datasets/big_set.hdf5": bytes(20_005)}))
    error = "would unpack to 20010 bytes; the limit is MAX_EXTRACTED_BYTES = 10000 bytes"
    with pytest.raises(ValueError, match=error):
        fetch._unzip(archive, tmp_path / "out")
    assert list((tmp_path / "out").rglob("*")) == []
    with pytest.raises(ValueError, match=error):
        fetch_deeploc_datasets(data_home=tmp_path / "home", archive=archive)
    assert list((tmp_path / "home").iterdir()) == []


def test_member_past_the_compression_ratio_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "RATIO_FREE_BYTES", 1000)
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(_zip({"zeros.bin": bytes(100_000)}))  # deflates about 1000:1
    with pytest.raises(
        ValueError, match=r"zeros.bin inflates .* the limit is MAX_COMPRESSION_RATIO = 100:1"
    ):
        fetch._unzip(archive, tmp_path / "out")
    assert list((tmp_path / "out").rglob("*")) == []


def test_archive_larger_than_the_free_space_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: types.SimpleNamespace(free=1000))
    archive = tmp_path / "big.zip"
    archive.write_bytes(_zip({"noise.bin": np.random.default_rng(0).bytes(20_000)}))
    with pytest.raises(ValueError, match=r"would unpack to 20000 bytes; .*out has 1000 free"):
        fetch._unzip(archive, tmp_path / "out")
    assert list((tmp_path / "out").rglob("*")) == []


def _with_declared_size(data, size):
    """A one-member zip whose headers declare ``size`` bytes, whatever the member inflates to."""
    data = bytearray(data)
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22 : local + 26] = struct.pack("<I", size)
    data[central + 24 : central + 28] = struct.pack("<I", size)
    return bytes(data)


def test_member_inflating_past_its_declared_size_writes_no_more_than_declared(tmp_path):
    # zipfile stops at the declared size too; this guards the bound whatever reads the member
    archive = tmp_path / "lying.zip"
    archive.write_bytes(_with_declared_size(_zip({"zeros.bin": bytes(50_000)}), 1000))
    with pytest.raises(ValueError, match="lying.zip"):
        fetch._unzip(archive, tmp_path / "out")
    assert (tmp_path / "out" / "zeros.bin").stat().st_size <= 1000


def test_member_outside_its_folder_is_refused(tmp_path):
    archive = tmp_path / "DeepLoc_full_datasets.zip"
    archive.write_bytes(_zip({"../escaped_set.hdf5": b"x"}))
    with pytest.raises(ValueError, match=r"member \.\./escaped_set.hdf5 would unpack outside"):
        fetch_deeploc_datasets(data_home=tmp_path / "home", archive=archive)
    assert not (tmp_path / "escaped_set.hdf5").exists()


@pytest.mark.parametrize("below", ["", "sub"])
def test_data_home_that_is_a_file_is_refused(tmp_path, below):
    file = tmp_path / "file"
    file.write_text("not a folder")
    home = file / below
    with pytest.raises(ValueError, match=f"data_home must be a folder; {re.escape(str(home))} "):
        fetch_deeploc_model(data_home=home)


def test_member_clashing_with_a_folder_is_refused(tmp_path):
    archive = tmp_path / "clash.zip"
    archive.write_bytes(_zip({"a": b"a file", "a/b": b"a file in a folder of the same name"}))
    with pytest.raises(ValueError, match="clash.zip holds a file and a folder of the same name"):
        fetch._unzip(archive, tmp_path / "out")
