import copy

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_same_float32, tiny_classifier
from safetensors.torch import load_file
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from sklearn_deeploc import DeepLocFeaturizer, DeepLocModel, load_pretrained
from sklearn_deeploc.datasets import DeepLocHDF5Dataset, make_yeast_cells, save_deeploc_hdf5


def test_string_labels_round_trip(source_model, cells):
    X, y = cells
    assert list(source_model.classes_) == sorted(set(y))
    assert set(source_model.predict(X)) <= set(y)
    assert source_model.predict(X).dtype == y.dtype


def test_integer_labels_round_trip(cells, make_tiny):
    X, y = cells
    codes = np.unique(y, return_inverse=True)[1] * 10 + 3
    clf = make_tiny(max_iter=4).fit(X, codes)
    np.testing.assert_array_equal(clf.classes_, [3, 13, 23, 33])
    assert set(clf.predict(X)) <= {3, 13, 23, 33}
    assert clf.predict(X).dtype.kind == "i"


def test_predict_proba_rows_sum_to_one_and_follow_classes(source_model, cells):
    X, _ = cells
    proba = source_model.predict_proba(X)
    assert proba.shape == (len(X), 4) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(
        source_model.predict(X), source_model.classes_[proba.argmax(axis=1)]
    )


def test_flat_layout_and_dataframe_give_the_same_predictions(source_model, cells):
    X, _ = cells
    flat = X.reshape(len(X), -1)
    expected = source_model.predict_proba(X)
    # Converted inputs land in other buffers: equal up to float32 rounding.
    assert_same_float32(source_model.predict_proba(flat), expected)
    assert_same_float32(source_model.predict_proba(pd.DataFrame(flat)), expected)


def test_training_counts_optimizer_steps_and_learns(cells, make_tiny):
    X, y = cells
    clf = make_tiny(max_iter=30, validation_interval=10, validation_fraction=0.0).fit(X, y)
    assert clf.n_iter_ == 30 and len(clf.history_) == 3
    assert clf.validation_ == "none"
    assert clf.history_[-1, "train_loss"] < clf.history_[0, "train_loss"]


def test_validation_split_falls_back_on_tiny_sets(make_tiny):
    X, y = make_yeast_cells(1, ["NUCLEI", "VACUOLE", "ER"], random_state=0)
    assert make_tiny(max_iter=2).fit(X, y).validation_ == "none"
    X, y = make_yeast_cells(3, ["NUCLEI", "VACUOLE", "ER"], random_state=0)
    clf = make_tiny(max_iter=2, validation_fraction=0.2).fit(X, y)
    assert clf.validation_ == "random"


def test_same_random_state_gives_identical_predictions(cells, make_tiny):
    X, y = cells
    first = make_tiny(max_iter=6).fit(X, y).predict_proba(X)
    again = make_tiny(max_iter=6).fit(X, y).predict_proba(X)
    other = make_tiny(max_iter=6, random_state=1).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, again)  # one path run twice: exact
    assert not np.array_equal(first, other)


def test_pretrained_copies_all_but_the_last_layer(source_model, source_folder, make_tiny):
    X, y = make_yeast_cells(4, ["ER", "MITOCHONDRIA", "GOLGI"], random_state=1)
    for pretrained in (source_model, source_folder):
        # One step with lr=0 leaves the copied weights as they came (batch-norm
        # statistics do move with one training batch, so only parameters compare).
        clf = make_tiny(pretrained=pretrained, max_iter=1, lr=0.0).fit(X, y)
        source = dict(source_model.net_.module_.named_parameters())
        target = dict(clf.net_.module_.named_parameters())
        for name, tensor in source.items():
            if name.startswith("head"):
                continue
            assert torch.equal(tensor, target[name]), name
        assert clf.net_.module_.head.out_features == 3
        assert list(clf.classes_) == ["ER", "GOLGI", "MITOCHONDRIA"]
        assert clf.net_.module_.dropout.p == 0.5


def test_freeze_conv_leaves_conv_layers_unchanged(source_model, make_tiny):
    X, y = make_yeast_cells(4, ["ER", "MITOCHONDRIA"], random_state=1)
    clf = make_tiny(pretrained=source_model, freeze="conv", max_iter=5, lr=0.01).fit(X, y)
    source = source_model.net_.module_.state_dict()
    tuned = clf.net_.module_.state_dict()
    for name, tensor in tuned.items():
        if name.startswith("features"):
            assert torch.equal(tensor, source[name]), name  # weights and BN statistics
    assert not torch.equal(tuned["fc.fc1.linear.weight"], source["fc.fc1.linear.weight"])


def test_fine_tuning_does_not_change_the_pretrained_estimator(source_model, make_tiny):
    before = {k: v.clone() for k, v in source_model.net_.module_.state_dict().items()}
    X, y = make_yeast_cells(4, ["ER", "MITOCHONDRIA"], random_state=1)
    make_tiny(pretrained=source_model, max_iter=3, lr=0.01).fit(X, y)
    after = source_model.net_.module_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_clone_of_fitted_estimator_shares_no_weights(source_model):
    copy = clone(source_model)
    assert not hasattr(copy, "net_") and not hasattr(copy, "classes_")
    assert copy.get_params() == source_model.get_params()


def test_clone_keeps_a_fitted_pretrained_estimator(source_model, make_tiny):
    clf = make_tiny(pretrained=source_model)
    assert clone(clf).pretrained is source_model
    assert hasattr(clone(clf).pretrained, "net_")


def test_grid_search_with_two_jobs(cells, source_model, make_tiny):
    X, y = cells
    search = GridSearchCV(
        make_tiny(pretrained=source_model, max_iter=3),
        {"freeze": [None, "conv"]},
        cv=2,
        n_jobs=2,
    ).fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.predict(X).shape == (len(X),)


def test_save_and_load_give_identical_outputs(source_model, source_folder, cells):
    X, _ = cells
    loaded = load_pretrained(source_folder)  # on the CPU, where the source is compared
    assert_same_float32(loaded.predict_proba(X), source_model.model_.to("cpu").predict_proba(X))
    np.testing.assert_array_equal(loaded.classes_, source_model.classes_)
    assert loaded.model_.channel_names == ["protein", "marker"]
    assert loaded.model_.preprocessing == source_model.model_.preprocessing
    assert sorted(p.name for p in source_folder.iterdir()) == ["config.json", "weights.safetensors"]


def test_integer_classes_survive_the_model_folder(cells, make_tiny, tmp_path):
    X, y = cells
    # On the CPU, where load_pretrained puts the model: a 2-step network has near-ties.
    clf = make_tiny(max_iter=2, device="cpu").fit(X, np.unique(y, return_inverse=True)[1])
    loaded = load_pretrained(clf.save_pretrained(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    assert loaded.classes_.dtype.kind == "i"


# -- bad input -----------------------------------------------------------------


def test_predict_before_fit(make_tiny, cells):
    with pytest.raises(NotFittedError):
        make_tiny().predict(cells[0])
    with pytest.raises(NotFittedError):
        make_tiny().save_pretrained("never-written")


def test_pretrained_path_missing_or_not_a_model(tmp_path, cells, make_tiny):
    X, y = cells
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_tiny(pretrained=tmp_path / "nothing").fit(X, y)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a model folder.*config.json"):
        make_tiny(pretrained=tmp_path / "empty").fit(X, y)


def test_corrupt_weights_get_a_clear_error(source_folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(source_folder, broken)
    (broken / "weights.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_pretrained(broken)


def test_channel_count_must_match_the_pretrained_model(source_model, cells, make_tiny):
    X, y = cells
    three = np.concatenate([X, X[:, :1]], axis=1)
    with pytest.raises(ValueError, match="Expected 2 channel.*got 3"):
        make_tiny(pretrained=source_model).fit(three, y)
    with pytest.raises(ValueError, match="Expected 2 channel.*got 3"):
        source_model.predict(three)


def test_y_problems(cells, make_tiny):
    X, y = cells
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        make_tiny().fit(X, y[:-1])
    with pytest.raises(ValueError, match="at least 2 classes; got 1 class"):
        make_tiny().fit(X, np.full(len(X), "NUCLEI"))


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (lambda y: [1 if i % 2 else "a" for i in range(len(y))], "mixes label types"),
        (lambda y: [np.nan if i == 1 else v for i, v in enumerate(y)], "missing values"),
        (lambda y: [v == "NUCLEI" for v in y], "y holds booleans"),
    ],
    ids=["mixed-list", "nan-in-list", "booleans"],
)
def test_labels_given_as_a_list_are_checked_before_training(cells, make_tiny, labels, match):
    X, y = cells
    with pytest.raises(ValueError, match=match):  # max_iter: training would not end in time
        make_tiny(max_iter=10**6).fit(X, labels(y))


def test_settings_that_cannot_make_a_model_are_refused_before_training(cells, make_tiny):
    X, y = cells
    slow = {"max_iter": 10**6}
    with pytest.raises(ValueError, match="channel_names must name each of the 2 channels"):
        make_tiny(**slow, channel_names=["GFP"]).fit(X, y)
    with pytest.raises(ValueError, match="crops of 50x50 pixels \\(image_size=50\\); got 64x64"):
        make_tiny(**slow, image_size=50).fit(X, y)


@pytest.mark.parametrize(
    ("params", "labels", "match"),
    [
        ({"fc_units": (70000,)}, None, r"DeepLocClassifier.architecture.fc_units: expected"),
        ({"conv_channels": (4,) * 65}, None, r"architecture.conv_channels: expected a list of 1"),
        (
            {},
            lambda y: np.where(y == "NUCLEI", 2**64 - 1, 1).astype(np.uint64),
            r"DeepLocClassifier\.classes: expected .* \(integers within int64\)",
        ),
        ({"batch_size": 1}, None, "batch_size must be at least 2 to train; got 1"),
        ({"crop_size": True}, None, "'crop_size' parameter .* a positive integer. Got True"),
    ],
    ids=["fc-too-wide", "too-many-layers", "labels-beyond-int64", "batch-of-one", "bool-size"],
)
def test_a_model_that_could_not_be_kept_is_refused_before_training(
    cells, make_tiny, monkeypatch, params, labels, match
):
    def train_network(*args, **kwargs):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr("sklearn_deeploc.classifier.train_network", train_network)
    X, y = cells
    with pytest.raises(ValueError, match=match):
        make_tiny(**params).fit(X, y if labels is None else labels(y))


def test_a_network_whose_training_would_not_fit_in_memory_is_refused(cells, monkeypatch):
    monkeypatch.setattr("sklearn_deeploc.validation.available_memory", lambda: 10**9)
    X, y = cells  # 71 million weights: 1.1 GB with their gradients and Adam's moments
    with pytest.raises(
        ValueError, match=r"network of 71,[\d,]+ weights needs 1.1\d GB, but only 1"
    ):
        tiny_classifier(fc_units=(8192, 8192)).fit(X, y)


@pytest.mark.parametrize("checkpoint_interval", [None, 1], ids=["at-epoch-ends", "every-step"])
def test_a_diverging_run_is_refused_not_kept(cells, make_tiny, tmp_path, checkpoint_interval):
    X, y = cells
    run = {"validation_fraction": 0, "checkpoint_interval": checkpoint_interval}
    with pytest.raises(ValueError, match=r"Training diverged by step \d+: .* lower lr"):
        make_tiny(lr=1e308, checkpoint_dir=tmp_path / "run", **run).fit(X, y)
    for step in (tmp_path / "run").glob("step-*"):  # no checkpoint of NaN weights
        weights = load_file(step / "weights.safetensors")
        assert all(torch.isfinite(tensor).all() for tensor in weights.values()), step.name


def test_a_pretrained_model_holding_nan_is_refused(source_model, cells, make_tiny):
    broken = DeepLocModel(copy.deepcopy(source_model.model_.network), source_model.classes_)
    with torch.no_grad():
        broken.network.features.conv1.conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"pretrained's tensor features.conv1.conv.weight holds"):
        make_tiny(pretrained=broken).fit(*cells)
    with pytest.raises(ValueError, match=r"pretrained's tensor features.conv1.conv.weight holds"):
        DeepLocFeaturizer(broken).fit(cells[0])


def test_parameters_of_a_shared_pretrained_estimator_cannot_be_set(source_model, cells):
    tta = source_model.tta
    featurizer = clone(DeepLocFeaturizer(source_model))
    with pytest.raises(ValueError, match="pretrained__tta would change the pretrained estimator"):
        featurizer.set_params(pretrained__tta=not tta)
    search = GridSearchCV(
        make_pipeline(DeepLocFeaturizer(source_model), LogisticRegression()),
        {"deeplocfeaturizer__pretrained__batch_size": [4, 7]},
        cv=2,
        error_score="raise",
    )
    with pytest.raises(ValueError, match="pretrained__batch_size would change"):
        search.fit(*cells)
    assert source_model.tta == tta and source_model.batch_size == 16
    featurizer.set_params(**featurizer.get_params())  # unchanged values are not a change


def test_fit_asks_for_crops_in_memory(make_tiny, tmp_path, cells):
    X, y = cells
    save_deeploc_hdf5(tmp_path / "cells.h5", X, y)
    with pytest.raises(TypeError, match="fit needs the crops in memory; got a DeepLocHDF5Dataset"):
        make_tiny().fit(DeepLocHDF5Dataset(tmp_path / "cells.h5"), y)


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a GPU cuda:7")
def test_a_device_the_machine_lacks_is_refused_before_training(cells, make_tiny, source_model):
    X, y = cells
    with pytest.raises(ValueError, match="device='cuda:7' is not available on this machine"):
        make_tiny(max_iter=10**6, device="cuda:7").fit(X, y)
    with pytest.raises(ValueError, match="device='cuda:7' is not available on this machine"):
        DeepLocFeaturizer(source_model, device="cuda:7").fit(X)


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a GPU cuda:7")
def test_an_unpickled_classifier_goes_back_to_its_device_where_there_is_one(
    source_model, cells, monkeypatch
):
    import pickle

    X, _ = cells
    clf = pickle.loads(pickle.dumps(source_model)).set_params(device="cuda:7")
    with pytest.warns(UserWarning, match="'cuda:7' is not available.*The model stays on the CPU"):
        loaded = pickle.loads(pickle.dumps(clf))
    assert loaded.model_.device.type == "cpu"
    assert_same_float32(loaded.predict_proba(X), source_model.model_.to("cpu").predict_proba(X))
    # A GPU that exists, as resolve_device would report it.
    monkeypatch.setattr("sklearn_deeploc.classifier.resolve_device", lambda device, _: device)
    moved = []
    monkeypatch.setattr(DeepLocModel, "to", lambda model, device: moved.append(device) or model)
    pickle.loads(pickle.dumps(clf.set_params(device="cuda:3")))
    assert moved == ["cuda:3"]


def test_crops_of_another_size_are_described_as_crops(source_model, cells, make_tiny):
    X, y = cells
    with pytest.raises(ValueError, match="crops of 64x64 pixels.*got 63x63: crop the cells at 64"):
        source_model.predict(X[:, :, :63, :63])
    large = np.tile(X, (1, 1, 2, 2))
    with pytest.raises(ValueError, match="got 128x128: crop the cells at 64 pixels, or set image"):
        make_tiny().fit(large, y)
    fitted = make_tiny(max_iter=2, image_size=128).fit(large, y)
    assert fitted.model_.image_size == 128 and fitted.predict(large).shape == (len(y),)


def test_nan_pixels(cells, make_tiny):
    X, y = cells
    X = X.copy()
    X[2, 1, 10, 20] = np.nan
    with pytest.raises(ValueError, match="cell 2, channel 1, row 10, column 20"):
        make_tiny().fit(X, y)


def test_bad_parameters(cells, make_tiny):
    X, y = cells
    with pytest.raises(ValueError, match="'freeze' parameter .* must be None or a str among"):
        make_tiny(freeze="all").fit(X, y)
    with pytest.raises(ValueError, match=r"'max_iter' parameter .* a positive integer. Got 0"):
        make_tiny(max_iter=0).fit(X, y)
    with pytest.raises(TypeError, match="pretrained must be a model folder path"):
        make_tiny(pretrained=42).fit(X, y)
    with pytest.raises(ValueError, match="pretrained is an unfitted DeepLocClassifier"):
        make_tiny(pretrained=make_tiny()).fit(X, y)
    fitted = make_tiny(max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="pretrained would be this estimator itself"):
        fitted.set_params(pretrained=fitted)
    with pytest.raises(ValueError, match="or one that holds it"):
        fitted.set_params(pretrained=make_tiny(pretrained=fitted))
    assert "pretrained" in repr(fitted.set_params(pretrained=make_tiny(pretrained=make_tiny())))
    search = GridSearchCV(make_tiny(max_iter=2), {"lr": [1e-3]}, cv=2).fit(X, y)
    with pytest.raises(ValueError, match=r"fitted GridSearchCV, .*: search.best_estimator_"):
        make_tiny(pretrained=search).fit(X, y)
    other = LogisticRegression().fit(X.reshape(len(X), -1)[:, :50], y)
    with pytest.raises(ValueError, match=r"fitted LogisticRegression, not a DeepLoc model.*er\.$"):
        make_tiny(pretrained=other).fit(X, y)
