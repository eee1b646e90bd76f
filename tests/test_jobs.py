"""The jobs (Python and command line) under reruns, tampering and interruption."""

import numpy as np
import pandas as pd
import pytest
import torch

from sklearn_deeploc import DeepLocClassifier, DeepLocModel, DeepLocNet, jobs
from sklearn_deeploc.blocks import OutputMismatchError, parts_folder
from sklearn_deeploc.cli import main
from sklearn_deeploc.datasets import load_deeploc_hdf5, make_yeast_cells, save_deeploc_hdf5
from sklearn_deeploc.fields import read_cell_table

CLASSES = ["NUCLEI", "VACUOLE", "ER"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, source_model):
    folder = tmp_path_factory.mktemp("jobs")
    X, y = make_yeast_cells(4, CLASSES, random_state=0)
    save_deeploc_hdf5(folder / "cells.h5", X, y)
    save_deeploc_hdf5(folder / "other.h5", X[::-1].copy(), y[::-1].copy())
    other = DeepLocModel.load(source_model.save_pretrained(folder / "model"))
    with torch.no_grad():  # another model: same classes, other weights
        other.network.head.bias += torch.arange(len(other.classes), dtype=torch.float32)
    other.save(folder / "other-model")
    return folder


def _predict(files, output, *, model="model", data="cells.h5", **options):
    return jobs.predict(files / model, files / data, output, block_size=5, verbose=0, **options)


def test_rerun_with_another_model_refuses(files, tmp_path):
    out = tmp_path / "cells.csv"
    first = _predict(files, out)
    with pytest.raises(OutputMismatchError, match="model"):
        _predict(files, out, model="other-model")
    pd.testing.assert_frame_equal(pd.read_csv(out), first)
    other = _predict(files, out, model="other-model", overwrite=True)
    assert not np.allclose(other.filter(like="p_"), first.filter(like="p_"))


@pytest.mark.parametrize(
    "change, key",
    [({"data": "other.h5"}, "input"), ({"tta": False}, "tta")],
)
def test_rerun_with_other_input_or_options_refuses(files, tmp_path, change, key):
    out = tmp_path / "cells.csv"
    _predict(files, out)
    with pytest.raises(OutputMismatchError, match=key):
        _predict(files, out, **change)


def test_featurize_rerun_with_another_layer_refuses(files, tmp_path):
    out = tmp_path / "features.parquet"
    jobs.featurize(files / "model", files / "cells.h5", out, block_size=5, verbose=0)
    with pytest.raises(OutputMismatchError, match="layer"):
        jobs.featurize(
            files / "model", files / "cells.h5", out, layer="conv8", block_size=5, verbose=0
        )


def test_rerun_with_the_same_inputs_resumes_and_recomputes_a_damaged_block(files, tmp_path):
    out = tmp_path / "cells.csv"
    complete = _predict(files, out)
    block = sorted(parts_folder(out).glob("block-*.csv"))[1]
    text = block.read_text()
    block.write_text(text[: len(text) // 2])  # cut mid-row
    again = _predict(files, out)
    pd.testing.assert_frame_equal(again, complete)
    assert len(again) == 12


def test_cli_rerun_with_another_model_is_one_line_and_exit_2(files, tmp_path, capsys):
    out = str(tmp_path / "cells.csv")
    args = [str(files / "cells.h5"), "-o", out, "--block-size", "5"]
    assert main(["predict", str(files / "model"), *args]) == 0
    capsys.readouterr()
    assert main(["predict", str(files / "other-model"), *args]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "--overwrite" in error and "model" in error
    assert main(["predict", str(files / "other-model"), *args, "--overwrite"]) == 0


def test_train_refuses_an_existing_file_before_training(files, tmp_path, capsys, monkeypatch):
    target = tmp_path / "model"
    target.write_text("not a folder")
    monkeypatch.setattr(jobs, "load_deeploc_hdf5", pytest.fail)  # must not get that far
    assert main(["train", str(files / "cells.h5"), "-o", str(target)]) == 2
    assert "a file is there" in capsys.readouterr().err


def test_train_refuses_a_batch_of_one_before_reading_the_data(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(jobs, "load_deeploc_hdf5", pytest.fail)  # must not get that far
    command = ["train", str(files / "cells.h5"), "-o", str(tmp_path / "model"), "--batch-size", "1"]
    assert main(command) == 2
    assert "batch_size must be at least 2 to train; got 1" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--block-size", "--batch-size"])
def test_non_positive_sizes_are_refused_by_the_parser(files, option, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(files / "model"), str(files / "cells.h5"), option, "0"])
    assert stop.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


def test_ctrl_c_during_train_writes_no_model_and_exits_non_zero(
    files, tmp_path, capsys, monkeypatch
):
    from sklearn_deeploc.training import CellBatches

    calls = {"n": 0}
    real = CellBatches.__getitem__

    def interrupted(self, indices):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, indices)

    monkeypatch.setattr(CellBatches, "__getitem__", interrupted)
    tiny = ["--conv-channels", *"4 4 4 4 4 4 4 4".split(), "--fc-units", "8", "8"]
    args = ["train", str(files / "cells.h5"), "-o", str(tmp_path / "model"), *tiny]
    code = main([*args, "--max-iter", "6", "--batch-size", "4"])
    assert code == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def test_user_fixable_errors_are_one_line(files, tmp_path, capsys):
    empty = tmp_path / "empty.h5"
    import h5py

    h5py.File(empty, "w").close()
    broken = tmp_path / "broken"
    (broken).mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "weights.safetensors").write_bytes(b"")
    for args in (
        ["predict", str(files / "model"), str(empty), "-o", str(tmp_path / "a.csv")],
        ["predict", str(broken), str(files / "cells.h5"), "-o", str(tmp_path / "b.csv")],
    ):
        assert main(args) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "Traceback" not in error


def test_rerun_with_another_precision_refuses(files, tmp_path):
    out = tmp_path / "cells.csv"
    fp32 = _predict(files, out)
    with pytest.raises(OutputMismatchError, match="precision"):
        _predict(files, out, precision="int8")
    int8 = _predict(files, out, precision="int8", overwrite=True)
    assert (int8["label"] == fp32["label"]).mean() >= 0.9


def test_int8_features_with_auto_device_stay_on_the_cpu(files, tmp_path, monkeypatch):
    # A machine that reports a GPU (absent here, so any copy to it fails): int8 runs on the CPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    out = tmp_path / "features.parquet"
    table = jobs.featurize(
        files / "model", files / "cells.h5", out, precision="int8", block_size=5, verbose=0
    )
    assert len(table) == 12 and table.filter(like="fc2_").notna().all().all()


def test_train_refuses_a_folder_with_a_model_unless_overwrite(files, tmp_path, capsys):
    target = tmp_path / "model"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    tiny = ["--conv-channels", *"4 4 4 4 4 4 4 4".split(), "--fc-units", "8", "8"]
    args = ["train", str(files / "cells.h5"), "-o", str(target), *tiny, "--max-iter", "2"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert main([*args, "--overwrite", "--batch-size", "4"]) == 0
    assert (target / "weights.safetensors").is_file()


def test_a_second_training_into_the_same_folder_refuses(files, tmp_path):
    from sklearn_deeploc.blocks import OutputLockedError, held_lock
    from sklearn_deeploc.checkpoints import LOCK_FILE

    target = tmp_path / "model"
    lock = jobs.checkpoint_folder(target) / LOCK_FILE
    lock.parent.mkdir()
    with held_lock(lock, "another run"), pytest.raises(OutputLockedError, match="checkpoint"):
        jobs.train(files / "cells.h5", target, verbose=0, max_iter=2)


def test_a_refused_precision_leaves_no_output_behind(files, tmp_path):
    out = tmp_path / "cells.csv"
    with pytest.raises(ValueError, match="fp16' needs a GPU"):
        _predict(files, out, precision="fp16", device="cpu")
    assert not out.exists() and not parts_folder(out).exists()
    _predict(files, out)


def test_screen_rerun_after_an_image_changed_refuses(files, shared_data, tmp_path):
    import shutil

    field = tmp_path / "field"
    shutil.copytree(shared_data / "field_r01c01f01", field)
    cells = read_cell_table(field / "cells.csv", channels=["ch1", "ch3"])
    jobs.run_screen(files / "model", tmp_path / "out", cells=cells, verbose=0)
    image = field / "r01c01f01p01-ch1sk1fk1fl1.tiff"
    image.chmod(0o644)
    shutil.copy(field / "r01c01f01p01-ch3sk1fk1fl1.tiff", image)
    with pytest.raises(OutputMismatchError, match="images"):
        jobs.run_screen(files / "model", tmp_path / "out", cells=cells, verbose=0)


@pytest.mark.parametrize("device", ["nonsense", "cuda:7"])
def test_a_device_that_is_not_there_is_one_line_and_exit_2(files, tmp_path, capsys, device):
    if device == "cuda:7" and torch.cuda.device_count() > 7:  # pragma: no cover
        pytest.skip("this machine has a GPU cuda:7")
    out = str(tmp_path / "a.csv")
    assert main(["predict", str(files / "model"), str(files / "cells.h5"), "-o", out,
                 "--device", device]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert f"{device!r}" in error and error.count("\n") == 1


def test_a_failed_training_leaves_no_lock_and_a_huge_batch_is_refused(files, tmp_path):
    target = tmp_path / "model"
    with pytest.raises(ValueError, match="batch_size=100000000000 needs .* GB"):
        jobs.train(files / "cells.h5", target, verbose=0, max_iter=2, batch_size=10**11)
    assert not jobs.checkpoint_folder(target).exists()


def test_predict_from_the_command_line_keeps_the_models_tta(files, tmp_path, source_model):
    model = DeepLocModel.load(files / "model")
    model.preprocessing["tta"] = False
    model.save(tmp_path / "centre-only")
    out = tmp_path / "cells.csv"
    assert main(["predict", str(tmp_path / "centre-only"), str(files / "cells.h5"),
                 "-o", str(out)]) == 0  # fmt: skip
    expected = jobs.predict(tmp_path / "centre-only", files / "cells.h5", tmp_path / "b.csv",
                            tta=False, verbose=0)  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_csv(out), expected)


def test_an_input_replaced_during_predict_is_refused_not_mixed(files, tmp_path, monkeypatch):
    import shutil

    data = shutil.copy(files / "cells.h5", tmp_path / "cells.h5")
    computed = jobs.block_table

    def replaced_after_the_first_block(*args):
        frame = computed(*args)
        shutil.copy(files / "other.h5", tmp_path / "next.h5")
        (tmp_path / "next.h5").replace(data)  # as an atomic writer replaces it
        return frame

    monkeypatch.setattr(jobs, "block_table", replaced_after_the_first_block)
    out = tmp_path / "cells.csv"
    with pytest.raises(ValueError, match=r"cells.h5 changed during this run.*output was removed"):
        jobs.predict(files / "model", data, out, block_size=5, verbose=0)
    assert not out.exists()


def test_cells_of_other_channels_are_refused_before_any_block_is_read(files, tmp_path):
    X, _ = make_yeast_cells(1, CLASSES, random_state=0)
    save_deeploc_hdf5(tmp_path / "three.h5", np.concatenate([X, X[:, :1]], axis=1))
    with pytest.raises(
        ValueError, match=r"three.h5 holds cells of 3 channel\(s\); the model takes 2"
    ):
        _predict(files, tmp_path / "out.csv", data=tmp_path / "three.h5")
    assert not (tmp_path / "out.csv").exists() and not parts_folder(tmp_path / "out.csv").exists()


def test_class_names_like_numbers_or_missing_values_stay_text_in_a_csv(files, tmp_path):
    classes = ["None", "NA", "007", "1.0"]
    X, _ = load_deeploc_hdf5(files / "cells.h5")
    for k, name in enumerate(classes):
        net = DeepLocNet(n_classes=4, conv_channels=(4,) * 8, fc_units=(8, 8))
        with torch.no_grad():  # the class most probable for every cell
            net.head.bias.copy_(10.0 * (torch.arange(4) == k))
        model = DeepLocModel(net, classes).save(tmp_path / name)
        assert (DeepLocClassifier.from_model(DeepLocModel.load(model)).predict(X) == name).all()
        out = tmp_path / f"{k}.csv"
        table = jobs.predict(model, files / "cells.h5", out, block_size=5, verbose=0)
        assert set(table["label"]) == {name}
        assert set(pd.read_csv(out, dtype=str, keep_default_na=False)["label"]) == {name}
    cells = tmp_path / "cells.csv"  # a crop table's labels too
    pd.DataFrame({"Image Path": ["f-ch1.tif"] * 3, "Center_X": 9, "Center_Y": 9}).assign(
        label=["007", "NA", "010"]
    ).to_csv(cells, index=False)
    assert read_cell_table(cells, label_column="label")["label"].tolist() == ["007", "NA", "010"]
    pd.read_csv(cells).assign(label=[0, 11, 2]).to_csv(cells, index=False)  # numbers stay so
    assert read_cell_table(cells, label_column="label")["label"].tolist() == [0, 11, 2]


def test_blocks_name_their_input_absolutely_for_workers_elsewhere(files, monkeypatch, tmp_path):
    seen = set()

    def block_table(estimator, data, start, stop):
        seen.add(data)  # what a Dask worker, started in another folder, would open
        return table(estimator, data, start, stop)

    table = jobs.block_table
    monkeypatch.setattr(jobs, "block_table", block_table)
    monkeypatch.chdir(files)
    jobs.predict("model", "cells.h5", tmp_path / "p.csv", block_size=5, verbose=0)
    assert seen == {str(files / "cells.h5")}
