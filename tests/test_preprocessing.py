import numpy as np
import pytest
import torch

from sklearn_deeploc.preprocessing import (
    center_crop,
    five_crop_offsets,
    five_crops,
    percentile_stretch,
    random_augment,
)


def test_stretch_maps_percentiles_to_zero_and_one(rng):
    x = torch.from_numpy(rng.normal(33000, 500, (4, 2, 64, 64)).astype(np.float32))
    out = percentile_stretch(x, (0.1, 99.9)).numpy()
    for cell in range(4):
        for channel in range(2):
            raw = x[cell, channel].numpy().astype(np.float64)
            low, high = np.percentile(raw, [0.1, 99.9])
            expected = np.clip((raw - low) / (high - low), 0, 1)
            np.testing.assert_allclose(out[cell, channel], expected, atol=1e-5)
            assert out[cell, channel].min() == 0.0 and out[cell, channel].max() == 1.0


def test_reference_variant_divides_only_large_ranges():
    small = torch.full((1, 1, 8, 8), 5.0)
    small[0, 0, 0, 0] = 5.5
    out = percentile_stretch(small, (0.0, 100.0), variant="reference")
    assert float(out.max()) == pytest.approx(0.5)
    big = torch.arange(64.0).reshape(1, 1, 8, 8)
    assert float(percentile_stretch(big, (0.0, 100.0), variant="reference").max()) == 1.0


def test_numpy_crops_are_stretched_as_tensors_are(rng):
    x = rng.normal(1000, 50, (3, 2, 16, 16))
    read_only = x.astype(np.float32)
    read_only.flags.writeable = False  # as np.load(mmap_mode="r") gives them
    arrays = [x, x.astype(np.uint16), x[..., ::-1], x.astype(">f4"), read_only]
    for crops in arrays:
        stretched = percentile_stretch(crops)
        assert isinstance(stretched, np.ndarray) and stretched.dtype == np.float32
        expected = percentile_stretch(torch.tensor(crops.astype(np.float32)))
        np.testing.assert_allclose(stretched, expected.numpy(), rtol=1e-6)
    with pytest.raises(TypeError, match="torch.Tensor or numpy array; got list"):
        percentile_stretch(x.tolist())


def test_constant_crop_gives_zeros_not_nan():
    for variant in ("clip", "reference"):
        out = percentile_stretch(torch.full((2, 2, 64, 64), 700.0), variant=variant)
        assert not torch.isnan(out).any() and float(out.abs().max()) == 0.0


def test_unknown_variant():
    with pytest.raises(ValueError, match="variant must be one of"):
        percentile_stretch(torch.zeros(1, 1, 4, 4), variant="minmax")


def _symmetries(window):
    out = []
    for k in range(4):
        rotated = torch.rot90(window, k, dims=(-2, -1))
        out += [rotated, rotated.flip(-1)]
    return out


def test_augmentation_is_a_crop_then_a_symmetry():
    x = torch.rand(6, 2, 64, 64)
    out = random_augment(x, 60, np.random.default_rng(1))
    assert out.shape == (6, 2, 60, 60)
    for cell in range(6):
        # Label-preserving: the output holds exactly the pixels of one 60x60 window.
        matches = [
            torch.equal(out[cell], s)
            for top in range(5)
            for left in range(5)
            for s in _symmetries(x[cell, :, top : top + 60, left : left + 60])
        ]
        assert sum(matches) >= 1
        assert any(
            np.array_equal(
                np.sort(out[cell].flatten().numpy()),
                np.sort(x[cell, :, t : t + 60, lft : lft + 60].flatten().numpy()),
            )
            for t in range(5)
            for lft in range(5)
        )


def test_augmentation_is_reproducible_and_varied():
    x = torch.rand(32, 2, 64, 64)
    first = random_augment(x, 60, np.random.default_rng(7))
    again = random_augment(x, 60, np.random.default_rng(7))
    other = random_augment(x, 60, np.random.default_rng(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_full_size_augmentation_reaches_all_eight_symmetries():
    x = torch.rand(1, 1, 8, 8).expand(400, 1, 8, 8).contiguous()
    out = random_augment(x, 8, np.random.default_rng(0))
    seen = {next(i for i, s in enumerate(_symmetries(x[0])) if torch.equal(o, s)) for o in out}
    assert seen == set(range(8))


def test_five_crop_order_and_offsets():
    assert five_crop_offsets(64, 64, 60) == ((2, 2), (0, 0), (0, 4), (4, 0), (4, 4))
    x = torch.arange(64.0 * 64).reshape(1, 1, 64, 64)
    crops = five_crops(x, 60)
    for crop, (top, left) in zip(crops, five_crop_offsets(64, 64, 60)):
        assert crop.shape == (1, 1, 60, 60)
        assert float(crop[0, 0, 0, 0]) == top * 64 + left
    assert torch.equal(crops[0], center_crop(x, 60))
