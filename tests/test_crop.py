"""From a real micrograph to a training set: deeploc crop, then train and predict on it."""

import numpy as np
import pandas as pd
import pytest

from sklearn_deeploc.cli import main
from sklearn_deeploc.datasets import load_deeploc_hdf5

TINY = ["--conv-channels", *"4 4 4 4 4 4 4 4".split(), "--fc-units", "8", "8"]


@pytest.fixture
def field(shared_data):
    return shared_data / "field_r01c01f01"


def _train_and_predict(data, tmp_path):
    model = tmp_path / "model"
    train = ["train", str(data), "-o", str(model), *TINY, "--max-iter", "2", "--batch-size", "8"]
    assert main(train) == 0
    out = tmp_path / "cells.csv"
    assert main(["predict", str(model), str(data), "-o", str(out), "--block-size", "100"]) == 0
    return pd.read_csv(out)


def test_crop_token_layout_then_train_and_predict(field, tmp_path):
    listed = pd.read_csv(field / "cells.csv")
    data = tmp_path / "field.h5"
    args = ["crop", "--coords", str(field / "cells.csv"), "-o", str(data)]
    assert main([*args, "--channels", "ch1", "ch3", "--label-column", "Saved Label"]) == 0
    X, y = load_deeploc_hdf5(data)
    inside = (
        listed["Center_X"].between(32, 1080 - 32) & listed["Center_Y"].between(32, 1080 - 32)
    ).to_numpy()
    assert X.shape == (inside.sum(), 2, 64, 64)  # one row per cell kept (border: drop)
    assert list(y) == listed.loc[inside, "Saved Label"].tolist()
    cells = pd.read_csv(tmp_path / "field.cells.csv")  # the cell of each crop, in file order
    assert cells["center_x"].tolist() == listed.loc[inside, "Center_X"].tolist()
    predictions = _train_and_predict(data, tmp_path)
    assert len(predictions) == len(X)
    assert set(predictions["label"]) <= set(y)


def test_crop_cellprofiler_layout_gives_the_same_crops(field, tmp_path):
    listed = pd.read_csv(field / "cells.csv")
    image = listed["Image Path"]
    table = pd.DataFrame(
        {
            "Image_FileName_GFP": image,
            "Image_FileName_RFP": image.str.replace("-ch1", "-ch3", regex=False),
            "cells_Location_Center_X": listed["Center_X"],
            "cells_Location_Center_Y": listed["Center_Y"],
        }
    )
    table.to_csv(tmp_path / "SQL_data.csv", index=False)
    common = ["--images", str(field), "--border", "pad"]
    token, profiler = tmp_path / "token.h5", tmp_path / "profiler.h5"
    tokens = ["--coords", str(field / "cells.csv"), "--channels", "ch1", "ch3"]
    assert main(["crop", *tokens, "-o", str(token), *common]) == 0
    assert (
        main(["crop", "--coords", str(tmp_path / "SQL_data.csv"), "-o", str(profiler), *common])
        == 0
    )
    X_token, _ = load_deeploc_hdf5(token)
    X_profiler, y = load_deeploc_hdf5(profiler)
    assert y is None and len(X_profiler) == len(listed)
    np.testing.assert_array_equal(X_profiler, X_token)
    out = tmp_path / "screen"
    screen = ["screen", "--coords", str(tmp_path / "SQL_data.csv"), "--images", str(field)]
    model = tmp_path / "model"
    assert main(["train", str(token), "-o", str(model), *TINY, "--max-iter", "1"]) == 2  # no labels
    labelled = tmp_path / "labelled.h5"
    assert (
        main(["crop", *tokens, "-o", str(labelled), "--label-column", "Saved Label", *common]) == 0
    )
    assert main(["train", str(labelled), "-o", str(model), *TINY, "--max-iter", "2"]) == 0
    assert main([screen[0], str(model), *screen[1:], "-o", str(out)]) == 0
    cells = pd.read_parquet(out / "cells.parquet")
    assert len(cells) == len(listed)


def test_crop_refuses_missing_columns(field, tmp_path, capsys):
    table = tmp_path / "cells.csv"
    pd.DataFrame({"Image Path": ["x.tiff"], "X": [1]}).to_csv(table, index=False)
    assert main(["crop", "--coords", str(table), "-o", str(tmp_path / "x.h5")]) == 2
    assert "Center_X" in capsys.readouterr().err


def test_crop_without_a_table_finds_the_cells(field, tmp_path):
    data = tmp_path / "found.h5"
    args = ["crop", "--images", str(field), "--channels", "ch1", "ch3", "-o", str(data)]
    assert main(args) == 0
    X, y = load_deeploc_hdf5(data)
    assert y is None and len(X) > 300  # about 600 cells are in the field; 390 are listed


def test_crop_never_replaces_a_file_unasked(field, tmp_path, capsys):
    import shutil

    table = tmp_path / "cells.csv"
    shutil.copy(field / "cells.csv", table)
    before = table.read_bytes()
    options = ["--coords", str(table), "--images", str(field)]
    assert main(["crop", *options, "-o", str(tmp_path / "cells.h5")]) == 0
    assert main(["crop", *options, "-o", str(tmp_path / "cells.h5")]) == 2
    assert "exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert main(["crop", *options, "-o", str(tmp_path / "cells.h5"), "--overwrite"]) == 0
    assert main(["crop", *options, "-o", str(table), "--overwrite"]) == 2
    assert "expected a name ending in ['.hdf5', '.h5']" in capsys.readouterr().err
    assert table.read_bytes() == before  # the cell table survives


def test_screen_without_any_croppable_cell_is_one_clear_error(field, tmp_path, capsys):
    cells = pd.read_csv(field / "cells.csv").head(5).assign(Center_X=5000)
    cells["Image Path"] = [str(field / p) for p in cells["Image Path"]]
    cells.to_csv(tmp_path / "outside.csv", index=False)
    model = tmp_path / "model"
    from sklearn_deeploc import DeepLocModel, DeepLocNet

    DeepLocModel(DeepLocNet(n_classes=2, conv_channels=(4,) * 8, fc_units=(8, 8)), ["a", "b"]).save(
        model
    )
    screen = ["screen", str(model), "--coords", str(tmp_path / "outside.csv")]
    assert main([*screen, "-o", str(tmp_path / "out"), "--channels", "ch1", "ch3"]) == 2
    assert "could be cropped" in capsys.readouterr().err
    bad = [*screen, "-o", str(tmp_path / "out2"), "--well-pattern", "(["]
    assert main(bad) == 2
    assert "is not a regular expression" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_table_mistakes_are_named(field, tmp_path, capsys):
    cells = pd.read_csv(field / "cells.csv").head(6)
    cells["Image Path"] = [str(field / p) for p in cells["Image Path"]]
    text = cells.astype({"Center_X": object})
    text.loc[3, "Center_X"] = "abc"
    text.to_csv(tmp_path / "text.csv", index=False)
    out = ["-o", str(tmp_path / "x.h5"), "--channels", "ch1", "ch3"]
    assert main(["crop", "--coords", str(tmp_path / "text.csv"), *out]) == 2
    assert "Column 'Center_X' must hold pixel coordinates; row 3 holds 'abc'" in (
        capsys.readouterr().err
    )
    cells.assign(label=["ER", None, "ER", "ER", "ER", "ER"]).to_csv(tmp_path / "l.csv", index=False)
    assert main(["crop", "--coords", str(tmp_path / "l.csv"), *out, "--label-column", "label"]) == 2
    assert "label column of the cell table contains missing values" in capsys.readouterr().err
    assert main(["crop", "--coords", str(tmp_path / "l.csv"), *out[:2], "--channels", "ch9"]) == 2
    assert "image files not found" in capsys.readouterr().err
