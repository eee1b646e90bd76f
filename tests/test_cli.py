import numpy as np
import pandas as pd
import pytest

from sklearn_deeploc.blocks import parts_folder
from sklearn_deeploc.cli import main
from sklearn_deeploc.datasets import make_yeast_cells, save_deeploc_hdf5

CLASSES = ["NUCLEI", "VACUOLE", "ER"]
TINY = ["--conv-channels", *"4 4 8 8 8 8 8 8".split(), "--fc-units", "16", "12"]


@pytest.fixture(scope="module")
def screen_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    X, y = make_yeast_cells(4, CLASSES, random_state=0)
    save_deeploc_hdf5(folder / "cells.h5", X, y)
    assert (
        main(
            [
                "train",
                str(folder / "cells.h5"),
                "-o",
                str(folder / "model"),
                *TINY,
                "--max-iter",
                "4",
                "--batch-size",
                "8",
            ]
        )
        == 0
    )
    return folder


def test_train_writes_a_model_folder(screen_files):
    assert sorted(p.name for p in (screen_files / "model").iterdir()) == [
        "config.json",
        "weights.safetensors",
    ]


def test_predict_columns_rows_and_resume(screen_files, capsys):
    out = screen_files / "pred.csv"
    args = [
        "predict",
        str(screen_files / "model"),
        str(screen_files / "cells.h5"),
        "-o",
        str(out),
        "--block-size",
        "5",
    ]
    assert main(args) == 0
    table = pd.read_csv(out)
    assert len(table) == 12
    assert list(table.columns) == ["cell", "p_ER", "p_NUCLEI", "p_VACUOLE", "label"]
    np.testing.assert_allclose(table.filter(like="p_").sum(axis=1), 1, atol=1e-5)
    blocks = sorted(parts_folder(out).glob("block-*"))
    assert len(blocks) == 3
    blocks[1].unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert "2 of 3 blocks already done; computing 1" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(out), table)


def test_featurize_to_parquet(screen_files):
    out = screen_files / "features.parquet"
    assert (
        main(
            [
                "featurize",
                str(screen_files / "model"),
                str(screen_files / "cells.h5"),
                "-o",
                str(out),
                "--layer",
                "fc1",
                "--block-size",
                "8",
            ]
        )
        == 0
    )
    table = pd.read_parquet(out)
    assert table.shape == (12, 1 + 16)
    assert list(table.columns[:3]) == ["cell", "fc1_0", "fc1_1"]


def test_clear_errors_exit_2(screen_files, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope"), str(screen_files / "cells.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                str(screen_files / "model"),
                str(screen_files / "cells.h5"),
                "-o",
                str(tmp_path / "out.txt"),
            ]
        )
        == 2
    )
    assert "must end in one of" in capsys.readouterr().err


def test_screen_on_the_real_field(screen_files, shared_data, tmp_path, capsys):
    pytest.importorskip("skimage")
    field = shared_data / "field_r01c01f01"
    out = tmp_path / "screen"
    args = [
        "screen",
        str(screen_files / "model"),
        "--images",
        str(field),
        "--coords",
        str(field / "cells.csv"),
        "-o",
        str(out),
        "--channels",
        "ch1",
        "ch3",
    ]
    assert main([*args, "--csv"]) == 0
    cells = pd.read_parquet(out / "cells.parquet")
    listed = pd.read_csv(field / "cells.csv")
    assert len(cells) == len(listed)
    assert cells["Metadata_ObjectNumber"].tolist() == list(range(1, len(listed) + 1))
    np.testing.assert_array_equal(cells["Metadata_Location_Center_X"], listed["Center_X"])
    assert {"Metadata_Image", "Metadata_Padded", "Cells_DeepLoc_Prob_ER"} <= set(cells.columns)
    pd.testing.assert_frame_equal(pd.read_csv(out / "cells.csv"), cells, check_dtype=False)
    wells = pd.read_parquet(out / "wells.parquet")
    assert wells["Metadata_Well"].tolist() == ["A01"]  # r01c01 in the names
    assert wells["Metadata_Object_Count"].item() == len(listed)
    capsys.readouterr()
    assert main([*args, "--csv"]) == 0
    assert "1 fields already done" in capsys.readouterr().out
    for part in parts_folder(out / "cells.parquet").glob("*.parquet"):
        part.unlink()
    assert main([*args, "--csv"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "cells.parquet"), cells)


def test_ctrl_c_says_whether_the_command_resumes(monkeypatch, capsys, tmp_path):
    import sklearn_deeploc.jobs as jobs_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs_module, "crop", interrupted)
    args = ["crop", "--images", str(tmp_path), "-o", str(tmp_path / "x.h5")]
    assert main(args) == 130
    assert "run the command again to start over" in capsys.readouterr().err
