"""Reduced-precision inference (bf16, fp16, int8) against fp32 on a small trained network."""

import numpy as np
import pytest
import torch
from conftest import SOURCE_CLASSES, tiny_classifier

from sklearn_deeploc.datasets import make_yeast_cells
from sklearn_deeploc.inference import (
    check_precision,
    inference_copy,
    precision_agreement,
    predict_batches,
    quantized_copy,
    resolve_device,
)

OUTPUTS = ("proba", "conv8", "fc1", "fc2")
REDUCED = [
    "bf16",
    "int8",
    pytest.param(
        "fp16",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 needs a GPU"),
    ),
]


@pytest.fixture(scope="module")
def trained():
    """A tiny classifier trained well past chance (on the CPU, as in CI), and unseen cells."""
    clf = tiny_classifier(max_iter=60, validation_fraction=0.0, device="cpu")
    clf.fit(*make_yeast_cells(12, SOURCE_CLASSES, random_state=0))
    X_new, y_new = make_yeast_cells(10, SOURCE_CLASSES, random_state=1)
    assert clf.score(X_new, y_new) > 0.4  # a trained network, not near-ties everywhere
    return clf, X_new


def run(module, X, clf, precision, output="proba"):
    return predict_batches(
        module,
        X,
        output=output,
        crop_size=clf.crop_size,
        preprocessing=clf.model_.preprocessing,
        precision=precision,
        batch_size=16,
    )


def network_for(clf, precision, calibration):
    if precision == "int8":
        return quantized_copy(
            clf.net_.module_,
            calibration,
            crop_size=clf.crop_size,
            preprocessing=clf.model_.preprocessing,
        )
    device = "cuda" if precision == "fp16" else "cpu"
    return inference_copy(clf.net_.module_, device)


@pytest.mark.parametrize("precision", REDUCED)
def test_reduced_precision_agrees_with_fp32(trained, precision):
    clf, X = trained
    fp32 = inference_copy(clf.net_.module_)
    reduced = network_for(clf, precision, X)
    reference = {name: run(fp32, X, clf, "fp32", name) for name in OUTPUTS}
    outputs = {name: run(reduced, X, clf, precision, name) for name in OUTPUTS}

    assert outputs["proba"].dtype == np.float32
    np.testing.assert_allclose(outputs["proba"].sum(axis=1), 1, atol=1e-5)
    agreement = precision_agreement(reference, outputs)
    assert agreement["top1_agreement"] >= 0.97
    for layer in ("conv8", "fc1", "fc2"):
        assert agreement[f"{layer}_max_relative_error"] < 0.1


def test_int8_copy_is_deterministic_for_one_calibration(trained):
    clf, X = trained
    first, second = (network_for(clf, "int8", X[:16]) for _ in range(2))
    np.testing.assert_array_equal(run(first, X, clf, "int8"), run(second, X, clf, "int8"))


def test_int8_copy_leaves_the_network_untouched(trained):
    clf, X = trained
    before = {k: v.clone() for k, v in clf.net_.module_.state_dict().items()}
    network_for(clf, "int8", X[:4])
    after = clf.net_.module_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_int8_needs_calibration_crops(trained):
    clf, X = trained
    with pytest.raises(ValueError, match="at least one calibration crop"):
        network_for(clf, "int8", X[:0])


def test_precision_must_match_the_network(trained):
    clf, X = trained
    with pytest.raises(ValueError, match="runs a quantized_copy"):
        run(inference_copy(clf.net_.module_), X, clf, "int8")
    with pytest.raises(ValueError, match="runs a quantized_copy"):
        run(network_for(clf, "int8", X[:4]), X, clf, "fp32")


@pytest.mark.parametrize("check", [check_precision, None])
def test_unknown_precision_is_a_clear_error(trained, check):
    clf, X = trained
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'bf16'.*'fp64'"):
        if check:
            check("fp64", "cpu")
        else:
            run(inference_copy(clf.net_.module_), X, clf, "fp64")


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="fp16' needs a GPU; use 'bf16' on CPU"):
        check_precision("fp16", "cpu")


def test_int8_on_gpu_is_refused():
    with pytest.raises(ValueError, match="int8' runs on the CPU only"):
        check_precision("int8", "cuda")


def test_auto_takes_the_cpu_for_int8_where_there_is_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert check_precision("int8", "auto") == "int8"
    assert resolve_device("auto", "int8") == "cpu"


def test_bf16_without_native_support_falls_back_to_fp32(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        assert check_precision("bf16", "cpu") == "fp32"


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_supported_precisions_pass_the_check(precision):
    assert check_precision(precision, "cpu") == precision


@pytest.mark.parametrize("output", ["proba", "fc2"])
def test_broken_weights_are_refused_rather_than_predicting_the_first_class(trained, output):
    clf, X = trained
    broken = inference_copy(clf.net_.module_)
    with torch.no_grad():
        broken.fc.fc1.linear.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=f"NaN or infinite '{output}' values for 16 of 16 cells"):
        run(broken, X[:26], clf, "fp32", output)
