"""Reduced precision through the model and the estimators: agreement, pickling, refusals."""

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from sklearn_deeploc import DeepLocFeaturizer

CPU_PRECISIONS = ("fp32", "bf16", "int8")


@pytest.mark.parametrize("precision", CPU_PRECISIONS)
def test_model_precisions_agree_with_fp32(source_model, cells, precision):
    X, _ = cells
    model = source_model.model_.to("cpu").calibrate(X)
    proba = model.predict_proba(X, precision=precision)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-3)
    report = model.agreement(X, precision)
    assert report["top1_agreement"] >= 0.97
    if precision == "fp32":
        assert report["fc2_max_relative_error"] == 0


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_featurizer_pickles_to_a_fresh_process(
    source_model, cells, precision, tmp_path
):
    X, _ = cells
    featurizer = DeepLocFeaturizer(source_model, precision=precision).fit(X)
    expected = featurizer.transform(X)
    (tmp_path / "f.pkl").write_bytes(pickle.dumps(featurizer))
    np.save(tmp_path / "X.npy", X)
    script = (
        "import pickle, sys, numpy as np\n"
        "folder = sys.argv[1]\n"
        "f = pickle.load(open(folder + '/f.pkl', 'rb'))\n"
        "np.save(folder + '/out.npy', f.transform(np.load(folder + '/X.npy')))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-5, atol=1e-5)


def test_int8_calibrates_on_the_cells_given_to_fit(source_model, cells):
    X, _ = cells
    featurizer = DeepLocFeaturizer(source_model, precision="int8").fit(X)
    assert featurizer.model_.calibration.shape == X.shape
    assert source_model.model_.calibration is None  # the source is never changed


def test_unknown_precision_is_a_clear_error(source_model, cells):
    X, _ = cells
    with pytest.raises(ValueError, match="'precision' parameter"):
        DeepLocFeaturizer(source_model, precision="fp8").fit(X)
    with pytest.raises(ValueError, match="precision must be one of"):
        source_model.model_.predict_proba(X, precision="half")
    with pytest.raises(ValueError, match="fp16' needs a GPU"):
        DeepLocFeaturizer(source_model, precision="fp16", device="cpu").fit(X)


def test_int8_without_calibration_says_how(tmp_path, source_model, cells):
    from sklearn_deeploc import DeepLocModel

    X, _ = cells
    loaded = DeepLocModel.load(source_model.save_pretrained(tmp_path / "m"))
    with pytest.raises(ValueError, match=r"needs calibration cells: call model.calibrate"):
        loaded.predict_proba(X, precision="int8")


def test_int8_classifier_calibrates_on_its_training_cells(cells, make_tiny):
    X, y = cells
    clf = make_tiny(precision="int8", max_iter=4, device="cpu").fit(X, y)
    assert clf.model_.calibration is not None and len(clf.model_.calibration) == len(X)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-3)
    assert clf.model_.agreement(X, "int8")["top1_agreement"] >= 0.97


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a GPU cuda:7")
def test_int8_on_a_named_gpu_is_refused_before_training(cells, make_tiny):
    with pytest.raises(ValueError, match="int8' runs on the CPU only; got device='cuda:7'"):
        make_tiny(precision="int8", device="cuda:7", max_iter=10**6).fit(*cells)


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a GPU cuda:7")
def test_bf16_on_a_missing_gpu_is_refused_without_a_fallback_warning(cells, make_tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "running in fp32" before the refusal
        with pytest.raises(ValueError, match="device='cuda:7' is not available"):
            make_tiny(precision="bf16", device="cuda:7", max_iter=10**6).fit(*cells)


def test_agreement_says_when_bf16_ran_as_fp32(source_model, cells, monkeypatch):
    X, _ = cells
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = source_model.model_.to("cpu").agreement(X[:4], "bf16")
    assert report["precision"] == "fp32" and len(caught) == 1
