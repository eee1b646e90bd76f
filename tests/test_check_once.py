"""Input is checked once at the public edge; the model and inference below trust it."""

from collections import Counter

import numpy as np
import pytest

import sklearn_deeploc.inference as inference
import sklearn_deeploc.model as model_module
import sklearn_deeploc.validation as validation
from sklearn_deeploc import DeepLocClassifier, DeepLocFeaturizer, DeepLocModel, DeepLocNet

# Each check: the module defining it, then those that bound its name at import.
CHECKS = {
    "check_crops": (validation, model_module),
    "check_precision": (inference, model_module),
    "check_config": (model_module,),
    "check_preprocessing": (model_module,),
}


@pytest.fixture
def calls(monkeypatch):
    """How often each check of ``CHECKS`` ran since the test started."""
    counts = Counter()
    for name, modules in CHECKS.items():
        original = getattr(modules[0], name)

        def counting(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        for module in modules:
            monkeypatch.setattr(module, name, counting)
    return counts


@pytest.fixture
def tiny():
    network = DeepLocNet(n_classes=3, conv_channels=(4,) * 8, fc_units=(8, 8))
    X = np.random.default_rng(0).random((6, 2, 64, 64), dtype=np.float32)
    return DeepLocModel(network, ["a", "b", "c"], preprocessing={"tta": False}), X


def test_counting_wrappers_see_the_checks(calls):
    validation.check_crops(np.zeros((1, 2, 64, 64), np.float32))
    inference.check_precision("fp32")
    assert calls == {"check_crops": 1, "check_precision": 1}


def test_classifier_predict_checks_crops_and_precision_once(tiny, calls):
    deeploc, X = tiny
    clf = DeepLocClassifier.from_model(deeploc).set_params(batch_size=4)
    calls.clear()
    assert clf.predict(X).shape == (6,)
    assert calls == {"check_crops": 1, "check_precision": 1}


def test_featurizer_transform_checks_crops_and_precision_once(tiny, calls):
    deeploc, X = tiny
    featurizer = DeepLocFeaturizer(deeploc, batch_size=4).fit(X)
    calls.clear()
    assert featurizer.transform(X).shape == (6, 8)
    assert calls == {"check_crops": 1, "check_precision": 1}


def test_agreement_checks_crops_and_precision_once(tiny, calls):
    deeploc, X = tiny
    calls.clear()
    assert deeploc.agreement(X, "fp32")["top1_agreement"] == 1  # int8 counts alike, built slowly
    assert calls == {"check_crops": 1, "check_precision": 1}


def test_model_predict_proba_checks_once_and_trusts_with_check_input_false(tiny, calls):
    deeploc, X = tiny
    calls.clear()
    checked = deeploc.predict_proba(X, batch_size=4)
    assert calls == {"check_crops": 1, "check_precision": 1}
    calls.clear()
    options = deeploc.check_inference_options(None, 4, "fp32")
    trusted = deeploc.predict_proba(
        X,
        tta=options[0],
        batch_size=options[1],
        precision=options[2],
        check_input=False,
    )
    assert calls == {"check_precision": 1}  # check_inference_options', not predict_proba's
    np.testing.assert_allclose(trusted, checked, rtol=1e-5, atol=1e-6)


def test_load_checks_config_and_preprocessing_once(tiny, calls, tmp_path):
    deeploc, _ = tiny
    folder = deeploc.save(tmp_path / "model")
    calls.clear()
    DeepLocModel.load(folder)
    assert calls == {"check_config": 1, "check_preprocessing": 1}


@pytest.mark.parametrize("kind", ["classifier", "featurizer"])
def test_the_edge_memory_check_counts_the_cells_given(tiny, kind):
    deeploc, X = tiny
    if kind == "classifier":
        estimator = DeepLocClassifier.from_model(deeploc)
    else:
        estimator = DeepLocFeaturizer(deeploc).fit(X)
    estimator.set_params(batch_size=10**12)  # a batch holds at most the 3 cells
    run = estimator.predict_proba if kind == "classifier" else estimator.transform
    assert len(run(X[:3])) == 3
