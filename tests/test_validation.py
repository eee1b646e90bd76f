import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import InvalidParameterError, StrOptions

from sklearn_deeploc.inference import PRECISIONS
from sklearn_deeploc.validation import (
    DeviceName,
    PercentilePair,
    PositiveInt,
    PositiveInts,
    check_batch_fits,
    check_crops,
    check_labels,
)


def test_flat_layout_is_channel_major():
    crops = np.arange(3 * 2 * 64 * 64, dtype=np.uint16).reshape(3, 2, 64, 64)
    flat = crops.reshape(3, -1)
    np.testing.assert_array_equal(check_crops(flat), crops.astype(np.float32))
    np.testing.assert_array_equal(check_crops(flat)[1, 1], flat[1, 4096:].reshape(64, 64))


def test_a_flat_width_of_many_channels_warns_that_it_may_be_larger_crops():
    larger = np.zeros((3, 2 * 128 * 128), np.float32)  # two channels of 128x128, flat
    with pytest.warns(UserWarning, match=r"read as 8 channels of 64x64.*\(2 of 128x128\?\)"):
        assert check_crops(larger).shape == (3, 8, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_crops(larger, n_channels=8).shape == (3, 8, 64, 64)  # known channels
        assert check_crops(np.zeros((3, 3 * 64 * 64))).shape == (3, 3, 64, 64)
    with pytest.warns(UserWarning, match=r"read as 4 channels of 64x64.*\(1 of 128x128\?\)"):
        check_crops(np.zeros((3, 128 * 128)))  # one channel of 128x128


def test_dataframe_and_dtypes():
    flat = np.random.default_rng(0).random((2, 2 * 64 * 64))
    out = check_crops(pd.DataFrame(flat))
    assert out.dtype == np.float32 and out.shape == (2, 2, 64, 64) and out.flags.writeable
    assert check_crops(np.ones((1, 1, 60, 60), dtype=np.int64)).dtype == np.float32


def test_read_only_input_comes_back_writable():
    X = np.zeros((1, 2, 64, 64), dtype=np.float32)
    X.flags.writeable = False
    assert check_crops(X).flags.writeable


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.zeros(10), "got a 1-D array"),
        (np.zeros((1, 1, 2, 64, 64)), "got a 5-D array"),
        (np.zeros((2, 2 * 64 * 64 + 1)), "got 8193 columns"),
        (np.zeros((0, 2, 64, 64)), "at least one cell"),
        (np.zeros((2, 2, 40, 40)), "smaller than the network's crop size 60x60"),
    ],
)
def test_bad_shapes_say_what_came(X, match):
    with pytest.raises(ValueError, match=match):
        check_crops(X, min_size=60)


def test_channel_count_mismatch():
    with pytest.raises(ValueError, match="Expected 2 channel.*got 3"):
        check_crops(np.zeros((1, 3, 64, 64)), n_channels=2)
    with pytest.raises(ValueError, match="8192 columns"):
        check_crops(np.zeros((1, 3 * 4096)), n_channels=2)


def test_non_finite_pixels_are_located():
    X = np.zeros((3, 2, 64, 64))
    X[1, 1, 5, 7] = np.nan
    X[2, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 non-finite.*cell 1, channel 1, row 5, column 7"):
        check_crops(X)


def test_non_numeric_and_sparse_input():
    with pytest.raises(TypeError, match="numeric pixel values"):
        check_crops(np.full((1, 2 * 4096), "a"))
    with pytest.raises(TypeError, match="numeric pixel values.*str values such as 'a'"):
        check_crops(np.array([[1.0, "a"] * 4096], dtype=object))
    with pytest.raises(TypeError, match="Sparse input"):
        check_crops(sp.csr_matrix(np.zeros((1, 2 * 4096))))
    with pytest.raises(ValueError, match="Complex"):
        check_crops(np.zeros((1, 2, 64, 64), dtype=complex))


def test_values_beyond_float32_are_reported_as_overflow_not_nan():
    X = np.zeros((2, 2, 64, 64))
    X[1, 1, 2, 3] = -1e39
    with pytest.raises(ValueError, match=r"overflow float32.*-1e\+39 at cell 1, channel 1, row 2"):
        check_crops(X)
    X[0, 0, 0, 0] = np.nan  # a true NaN is still called one
    with pytest.raises(ValueError, match=r"NaN or infinity: 1 non-finite.*cell 0, channel 0"):
        check_crops(X)


def test_list_of_crops_is_stacked_and_ragged_lists_say_which_crop_differs():
    crops = [np.full((2, 64, 64), k, dtype=np.uint8) for k in range(3)]
    np.testing.assert_array_equal(check_crops(crops), np.stack(crops).astype(np.float32))
    crops[2] = np.zeros((2, 60, 60))
    with pytest.raises(ValueError, match=r"differ in shape: crop 0 is \(2, 64, 64\), crop 2 is"):
        check_crops(crops)
    with pytest.raises(ValueError, match="Crop 1 is ragged"):
        check_crops([[[0.0] * 4] * 2, [[0.0] * 4, [0.0] * 3]])


def test_torch_tensors_are_accepted_even_when_they_require_grad():
    expected = np.random.default_rng(0).random((3, 2, 64, 64)).astype(np.float32)
    tensor = torch.from_numpy(expected.copy()).requires_grad_()
    np.testing.assert_array_equal(check_crops(tensor), expected)
    np.testing.assert_array_equal(check_crops(list(tensor)), expected)


def test_bfloat16_tensor_values_come_back_exactly():
    tensor = torch.arange(2 * 64 * 64, dtype=torch.bfloat16).reshape(1, 2, 64, 64)
    np.testing.assert_array_equal(check_crops(tensor), tensor.float().numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_are_moved_to_the_cpu():
    tensor = torch.ones(2, 2, 64, 64, device="cuda", requires_grad=True)
    assert check_crops(tensor).sum() == 2 * 2 * 64 * 64


def test_object_array_with_none_is_named():
    X = np.zeros((2, 2 * 64 * 64), dtype=object)
    X[1, 5] = None
    with pytest.raises(ValueError, match=r"None \(a missing value\).*index \(1, 5\)"):
        check_crops(X)


def test_labels_are_encoded_in_sorted_order():
    classes, codes = check_labels(pd.Series(["NUCLEI", "ER", "NUCLEI"]))
    assert classes.tolist() == ["ER", "NUCLEI"] and codes.tolist() == [1, 0, 1]
    classes, codes = check_labels([3, 1, 3])
    assert classes.dtype.kind == "i" and codes.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (["ER", None, "ER"], r"missing values.*1 of 3, the first at position 1 \(None\)"),
        (np.array([0.0, np.nan]), "missing values.*position 1"),
        (pd.Series(["ER", pd.NA], dtype="string"), "missing values"),
        (pd.Series(["ER", np.nan]), "missing values"),
        (pd.Series(["ER", None], dtype="category"), "missing values"),
        (pd.to_datetime(["2020-01-01", None]), "missing values"),
        (["ER", 3], r"mixes label types: str \('ER'\), number \(3\)"),
        (np.array(["ER", 3], dtype=object), "mixes label types"),
        ([True, 2], "mixes label types: bool"),
        ([], "empty"),
        (np.zeros((3, 2)), "1d array"),
    ],
)
def test_bad_labels_name_the_problem(y, match):
    with pytest.raises(ValueError, match=match):
        check_labels(y)


def test_label_errors_use_the_given_name():
    with pytest.raises(ValueError, match="groups_a contains missing"):
        check_labels(["w1", None], name="groups_a")


class _Toy(BaseEstimator):
    _parameter_constraints = {
        "stretch": [None, PercentilePair()],
        "conv_channels": [PositiveInts()],
        "device": [DeviceName()],
        "precision": [StrOptions(set(PRECISIONS))],
        "batch_size": [PositiveInt()],
    }

    def __init__(
        self,
        stretch=(0.1, 99.9),
        conv_channels=(8, 8),
        device="auto",
        precision="fp32",
        batch_size=128,
    ):
        self.stretch = stretch
        self.conv_channels = conv_channels
        self.device = device
        self.precision = precision
        self.batch_size = batch_size


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"stretch": None},
        {"stretch": [0, 100]},
        {"conv_channels": [1]},
        {"device": "cuda:1"},
        {"device": "mps"},
        {"device": "mps:0"},  # how torch names the device resolve_device returns
        {"precision": "int8"},
    ],
)
def test_constraints_accept_good_values(params):
    _Toy(**params)._validate_params()


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (
            {"stretch": (50, 10)},
            r"'stretch' parameter of _Toy must be None or two percentiles"
            r" \(low, high\) with 0 <= low < high <= 100. Got \(50, 10\)",
        ),
        ({"stretch": (-1, 50)}, "two percentiles"),
        ({"stretch": (1, 2, 3)}, "two percentiles"),
        ({"stretch": ("a", "b")}, "two percentiles"),
        ({"stretch": 99.9}, "two percentiles"),
        ({"conv_channels": (8, 0)}, "'conv_channels' .* must be a non-empty tuple of positive"),
        ({"conv_channels": ()}, "non-empty tuple"),
        ({"conv_channels": (8, 2.5)}, "non-empty tuple"),
        ({"device": "gpu"}, r"'device' .* 'cuda:N'.*Got 'gpu'"),
        ({"device": "cuda:x"}, "device name"),
        ({"precision": "fp8"}, "'precision' parameter .* among"),
        ({"batch_size": 0}, "'batch_size' parameter .* a positive integer. Got 0"),
        ({"batch_size": True}, "'batch_size' parameter .* a positive integer. Got True"),
    ],
)
def test_constraints_refuse_bad_values_with_a_clear_message(params, match):
    with pytest.raises(InvalidParameterError, match=match):
        _Toy(**params)._validate_params()


def test_batch_too_large_for_memory_is_refused_before_allocating():
    assert check_batch_fits(64, 2 * 64 * 64 * 4) == 64
    with pytest.raises(ValueError, match=r"batch_size=10+ needs .* GB.*one batch of cells"):
        check_batch_fits(10**15, 2 * 64 * 64 * 4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer; got 0"):
        check_batch_fits(0, 4)


def test_batch_check_works_without_psutil(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now fails
    with pytest.raises(ValueError, match="memory is available"):
        check_batch_fits(10**15, 2 * 64 * 64 * 4)


def test_channels_last_crops_are_named():
    with pytest.raises(ValueError, match=r"looks like channels last \(n, H, W, C\).*np.moveaxis"):
        check_crops(np.zeros((3, 64, 64, 2)), n_channels=2)
    assert check_crops(np.zeros((3, 2, 64, 64)), n_channels=2).shape == (3, 2, 64, 64)
