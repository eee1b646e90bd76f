"""Cells from label images: centroids and areas, label image files, refusals."""

import numpy as np
import pytest
from skimage.measure import regionprops_table

from sklearn_deeploc.labels import cells_from_labels, check_label_image, read_label_image


def _random_labels(seed=0, shape=(64, 96), n_cells=12):
    from skimage.segmentation import expand_labels

    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    rows, cols = rng.integers(0, shape[0], n_cells), rng.integers(0, shape[1], n_cells)
    labels[rows, cols] = rng.permutation(np.arange(1, 3 * n_cells))[:n_cells]
    return expand_labels(labels, 4)


def test_cells_match_regionprops():
    labels = _random_labels()
    cells = cells_from_labels(labels)
    expected = regionprops_table(labels, properties=("label", "centroid", "area"))
    np.testing.assert_array_equal(cells["ObjectNumber"], expected["label"])
    np.testing.assert_allclose(cells["center_y"], expected["centroid-0"], rtol=1e-12)
    np.testing.assert_allclose(cells["center_x"], expected["centroid-1"], rtol=1e-12)
    np.testing.assert_array_equal(cells["area"], expected["area"])


def test_mean_intensities_match_regionprops_in_every_channel():
    labels = _random_labels()
    image = np.random.default_rng(0).integers(0, 4096, (2, *labels.shape)).astype(np.uint16)
    cells = cells_from_labels(labels, image)
    for k in range(2):
        expected = regionprops_table(labels, image[k], properties=("intensity_mean",))
        np.testing.assert_allclose(cells[f"mean_intensity_{k}"], expected["intensity_mean"])
    sparse = cells_from_labels(labels.astype(np.int64) * 1_000_003, image)
    np.testing.assert_allclose(sparse["mean_intensity_1"], cells["mean_intensity_1"])
    with pytest.raises(ValueError, match=r"image has shape \(2, 5, 5\); expected \(channels, "):
        cells_from_labels(labels, image[:, :5, :5])


def test_sparse_label_values_give_the_same_cells():
    labels = _random_labels(seed=1)
    sparse = labels.astype(np.int64) * 1_000_003  # too sparse for one bin per value
    cells, sparse_cells = cells_from_labels(labels), cells_from_labels(sparse)
    np.testing.assert_array_equal(sparse_cells["ObjectNumber"], cells["ObjectNumber"] * 1_000_003)
    np.testing.assert_allclose(
        sparse_cells[["center_x", "center_y"]], cells[["center_x", "center_y"]]
    )


def test_empty_label_image_has_no_cells():
    cells = cells_from_labels(np.zeros((5, 7), dtype=np.uint16))
    assert list(cells.columns) == ["ObjectNumber", "center_x", "center_y", "area"]
    assert len(cells) == 0


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.zeros((4, 5), dtype=np.float32), "float32 values; expected integer"),
        (np.zeros((4, 5), dtype=bool), "boolean mask"),
        (np.full((4, 5), -1, dtype=np.int16), "negative labels"),
        (np.zeros((2, 4, 5), dtype=np.uint8), r"shape \(2, 4, 5\); expected one 2-D"),
        (np.zeros((3, 4, 5), dtype=np.uint8), r"2-D label image \(H, W\) \(a colour or palette"),
        (np.zeros(5, dtype=np.uint8), r"shape \(5,\)"),
    ],
)
def test_refuses_what_is_not_a_label_image(labels, match):
    with pytest.raises(ValueError, match=match):
        cells_from_labels(labels)


@pytest.mark.parametrize("suffix", [".tif", ".png", ".npy"])
def test_read_label_image_files(tmp_path, suffix):
    labels = _random_labels(seed=2).astype(np.uint16)
    path = tmp_path / f"field{suffix}"
    if suffix == ".npy":
        np.save(path, labels[None])  # a singleton axis is dropped
    elif suffix == ".tif":
        import tifffile

        tifffile.imwrite(path, labels)
    else:
        from skimage.io import imsave

        imsave(path, labels, check_contrast=False)
    read = read_label_image(path)
    assert read.dtype == np.uint16
    np.testing.assert_array_equal(read, labels)


def test_read_label_image_refuses_floats_and_names_the_file(tmp_path):
    path = tmp_path / "probabilities.npy"
    np.save(path, np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"probabilities\.npy holds float64"):
        read_label_image(path)


@pytest.mark.parametrize("value", [1, 255])
def test_binary_masks_are_refused_naming_the_file(tmp_path, value):
    from skimage.io import imsave

    mask = (_random_labels(seed=3) > 0).astype(np.uint8) * value  # a thresholded field
    path = tmp_path / "threshold.png"
    imsave(path, mask, check_contrast=False)
    with pytest.raises(ValueError, match=rf"threshold\.png holds one label value \({value}\) over"):
        read_label_image(path)


def test_one_cell_is_a_label_image_not_a_binary_mask():
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[2:5, 2:5] = 255
    labels[5, 5] = 255  # touching diagonally: one region
    assert cells_from_labels(labels)["ObjectNumber"].tolist() == [255]
    labels[labels > 0] = 7
    labels[7, 7] = 7  # a detached fragment of cell 7: not a mask's value
    assert cells_from_labels(labels)["ObjectNumber"].tolist() == [7]


def test_read_label_image_missing_or_unreadable(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.tif not found"):
        read_label_image(tmp_path / "absent.tif")
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="Cannot read .*broken.tif"):
        read_label_image(broken)


def test_check_label_image_keeps_the_type():
    labels = np.arange(6, dtype=np.uint32).reshape(1, 2, 3)
    assert check_label_image(labels).dtype == np.uint32


def test_uint64_labels_beyond_int64_keep_their_numbers():
    labels = np.zeros((20, 20), np.uint64)
    labels[1:3, 1:3], labels[5:8, 5:8], labels[10, 10] = 2**63 + 5, 2**40, 2**64 - 1
    cells = cells_from_labels(labels)
    assert cells["ObjectNumber"].tolist() == [2**40, 2**63 + 5, 2**64 - 1]
    assert cells["area"].tolist() == [9, 4, 1]


def test_small_files_claiming_huge_label_images_are_refused_unread(tmp_path):
    from numpy.lib import format as npy

    claims = tmp_path / "claims.npy"
    with open(claims, "wb") as file:
        header = {"descr": "<u2", "fortran_order": False, "shape": (200_000, 200_000)}
        npy.write_array_header_1_0(file, header)
        file.write(b"0" * 1000)
    with pytest.raises(ValueError, match=r"Cannot read label image .*claims\.npy"):
        read_label_image(claims)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ValueError, match=r"Cannot read image file .*broken\.png"):
        read_label_image(broken)


def test_a_palette_png_is_read_as_its_indices(tmp_path):
    from PIL import Image

    labels = np.zeros((20, 30), np.uint8)
    labels[2:6, 3:9], labels[10:15, 20:25] = 1, 7
    image = Image.fromarray(labels, mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0] + [0, 255, 0] * 254)  # colours no cell is named by
    image.save(tmp_path / "f01_masks.png")
    read = read_label_image(tmp_path / "f01_masks.png")
    np.testing.assert_array_equal(read, labels)
    assert cells_from_labels(read)["ObjectNumber"].tolist() == [1, 7]
