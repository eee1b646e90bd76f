import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sklearn_deeploc.validation import check_crops


def test_flat_layout_is_channel_major():
    crops = np.arange(3 * 2 * 64 * 64, dtype=np.uint16).reshape(3, 2, 64, 64)
    flat = crops.reshape(3, -1)
    np.testing.assert_array_equal(check_crops(flat), crops.astype(np.float32))
    np.testing.assert_array_equal(check_crops(flat)[1, 1], flat[1, 4096:].reshape(64, 64))


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
    with pytest.raises(TypeError, match="Sparse input"):
        check_crops(sp.csr_matrix(np.zeros((1, 2 * 4096))))
    with pytest.raises(ValueError, match="Complex"):
        check_crops(np.zeros((1, 2, 64, 64), dtype=complex))
