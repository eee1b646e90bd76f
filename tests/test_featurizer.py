import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_same_float32
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

from sklearn_deeploc import DeepLocFeaturizer
from sklearn_deeploc.preprocessing import five_crops, percentile_stretch


@pytest.mark.parametrize("layer", ["conv8", "fc1", "fc2"])
@pytest.mark.parametrize("tta", [True, False])
def test_features_equal_the_network_on_preprocessed_crops(source_model, cells, layer, tta):
    X, _ = cells
    featurizer = DeepLocFeaturizer(source_model, layer=layer, tta=tta, device="cpu")
    features = featurizer.fit(X).transform(X)
    net = source_model.model_.to("cpu").network.eval()
    with torch.no_grad():
        crops = five_crops(percentile_stretch(torch.from_numpy(X)), 60)
        views = crops if tta else crops[:1]
        expected = torch.stack([net.forward_features(v, layer) for v in views]).mean(0)
    assert features.dtype == np.float32
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-4, rtol=1e-4)


def test_feature_names_and_pandas_output(source_folder, cells):
    X, _ = cells
    featurizer = DeepLocFeaturizer(source_folder, layer="fc1").set_output(transform="pandas")
    frame = featurizer.fit_transform(X)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == [f"fc1_{i}" for i in range(16)]
    assert (
        list(DeepLocFeaturizer(source_folder, layer="conv8").fit(X).get_feature_names_out())[-1]
        == "conv8_7"
    )


def test_fit_never_trains_and_never_changes_the_source(source_model, cells):
    X, y = cells
    before = {k: v.clone() for k, v in source_model.net_.module_.state_dict().items()}
    a = DeepLocFeaturizer(source_model).fit(X[:3]).transform(X)
    b = DeepLocFeaturizer(source_model).fit(X, y).transform(X)
    np.testing.assert_array_equal(a, b)  # same weights, cells and path: fit changed nothing
    after = source_model.net_.module_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(
        m.weight.is_contiguous()
        for m in source_model.net_.module_.modules()
        if isinstance(m, torch.nn.Conv2d)
    )


@pytest.mark.parametrize(
    "head",
    [SVC(kernel="linear"), KNeighborsClassifier(n_neighbors=3), RandomForestClassifier(10)],
    ids=["svm", "knn", "forest"],
)
def test_pipelines_with_feature_heads(source_model, cells, head):
    X, y = cells
    pipe = make_pipeline(DeepLocFeaturizer(source_model), head).fit(X, y)
    assert set(pipe.predict(X)) <= set(y)


def test_grid_search_over_heads_keeps_the_pretrained_model(source_model, cells):
    X, y = cells
    pipe = make_pipeline(DeepLocFeaturizer(source_model), SVC(kernel="linear"))
    search = GridSearchCV(
        pipe, {"svc": [SVC(kernel="linear"), KNeighborsClassifier(3)]}, cv=2, n_jobs=2
    ).fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert clone(pipe)[0].pretrained is source_model


def test_errors(source_model, source_folder, cells, tmp_path):
    X, _ = cells
    with pytest.raises(NotFittedError):
        DeepLocFeaturizer(source_folder).transform(X)
    with pytest.raises(ValueError, match="layer must be one of .*got 'fc3'"):
        DeepLocFeaturizer(source_folder, layer="fc3").fit(X)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DeepLocFeaturizer(tmp_path / "missing").fit(X)
    with pytest.raises(ValueError, match="Expected 2 channel.*got 1"):
        DeepLocFeaturizer(source_model).fit(X[:, :1])
    fitted = DeepLocFeaturizer(source_model).fit(X)
    with pytest.raises(ValueError, match="Expected 2 channel.*got 1"):
        fitted.transform(X[:, :1])
    bad = X.copy()
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        fitted.transform(bad)


def test_joblib_round_trip_in_a_fresh_process(source_model, cells, tmp_path):
    X, y = cells
    featurizer = DeepLocFeaturizer(source_model).fit(X)
    pipe = make_pipeline(DeepLocFeaturizer(source_model), SVC(kernel="linear")).fit(X, y)
    joblib.dump(
        {"classifier": source_model, "featurizer": featurizer, "pipeline": pipe},
        tmp_path / "models.joblib",
    )
    np.save(tmp_path / "X.npy", X)
    expected = {
        "classifier": source_model.predict_proba(X),
        "featurizer": featurizer.transform(X),
        "pipeline": pipe.predict(X),
    }
    script = textwrap.dedent(
        f"""
        import joblib, numpy as np
        models = joblib.load({str(tmp_path / "models.joblib")!r})
        X = np.load({str(tmp_path / "X.npy")!r})
        np.save({str(tmp_path / "classifier.npy")!r}, models["classifier"].predict_proba(X))
        np.save({str(tmp_path / "featurizer.npy")!r}, models["featurizer"].transform(X))
        np.save({str(tmp_path / "pipeline.npy")!r}, models["pipeline"].predict(X))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    # Another process: floats up to float32 rounding, labels exact.
    assert_same_float32(np.load(tmp_path / "classifier.npy"), expected["classifier"])
    assert_same_float32(np.load(tmp_path / "featurizer.npy"), expected["featurizer"])
    np.testing.assert_array_equal(
        np.load(tmp_path / "pipeline.npy", allow_pickle=True), expected["pipeline"]
    )


def test_a_layer_set_after_fit_sets_the_width_everywhere(source_model, cells):
    X, _ = cells
    featurizer = DeepLocFeaturizer(source_model).fit(X).set_params(layer="conv8")
    assert featurizer.n_features_out_ == 8 == featurizer.transform(X).shape[1]
    frame = featurizer.set_output(transform="pandas").transform(X)
    assert list(frame.columns) == [f"conv8_{i}" for i in range(8)]


def test_int8_with_a_cache_but_no_calibration_gets_the_calibration_message(source_model, cells):
    from sklearn_deeploc.featurizer import FeatureCache

    X, _ = cells
    featurizer = DeepLocFeaturizer(source_model, cache=FeatureCache(), device="cpu").fit(X)
    with pytest.raises(ValueError, match="precision='int8' needs calibration cells"):
        featurizer.set_params(precision="int8").transform(X)


def test_a_pickle_from_before_the_precision_parameter_still_loads(source_model, cells):
    X, _ = cells
    featurizer = DeepLocFeaturizer(source_model, device="cpu").fit(X)
    state = featurizer.__getstate__()
    del state["precision"]
    old = DeepLocFeaturizer.__new__(DeepLocFeaturizer)
    old.__setstate__(state)
    assert old.model_.device.type == "cpu"


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a GPU cuda:7")
def test_a_pickle_for_a_missing_gpu_loads_on_the_cpu_with_a_warning(source_model, cells):
    import pickle

    X, _ = cells
    featurizer = DeepLocFeaturizer(source_model, device="cpu").fit(X)
    expected = featurizer.transform(X)
    saved = pickle.dumps(featurizer.set_params(device="cuda:7"))
    with pytest.warns(UserWarning, match="'cuda:7' is not available.*stays on the CPU"):
        loaded = pickle.loads(saved)
    np.testing.assert_allclose(loaded.transform(X), expected, atol=1e-6)


def test_outputs_follow_their_cells_in_any_order(source_model, cells, rng):
    """scikit-learn's order check, with float32's tolerance (its own is finer than float32)."""
    X, _ = cells
    order = rng.permutation(len(X))
    featurizer = DeepLocFeaturizer(source_model).fit(X)
    assert_same_float32(featurizer.transform(X[order]), featurizer.transform(X)[order])
    assert_same_float32(source_model.predict_proba(X[order]), source_model.predict_proba(X)[order])
