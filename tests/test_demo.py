import pandas as pd

from sklearn_deeploc import load_pretrained
from sklearn_deeploc.cli import main
from sklearn_deeploc.model_selection import HEADS


def test_quick_demo_writes_a_sane_report(tmp_path, capsys):
    assert main(["demo", "--quick", "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "Reduced-width DeepLoc" in printed and "report written" in printed
    for name in (
        "report.md",
        "heads.png",
        "transfer_curve.png",
        "confusion.png",
        "target_cells.png",
        "heads.csv",
        "transfer_curve.csv",
        "per_class.png",
        "per_class_average_precision.csv",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    heads = pd.read_csv(tmp_path / "heads.csv")
    assert sorted(heads["head"]) == sorted(HEADS)
    assert heads["mean_accuracy"].between(0, 1).all()
    # Chance on 6 classes is 1/6: the best head must beat it clearly.
    assert heads["mean_accuracy"].max() > 0.3
    curve = pd.read_csv(tmp_path / "transfer_curve.csv")
    assert set(curve["head"]) == {"finetune_all", "scratch", "svm"}
    assert curve["accuracy"].between(0, 1).all()
    report = (tmp_path / "report.md").read_text()
    assert "## Head comparison" in report and "## Transfer-learning curve" in report
    assert "## DeepLoc against the classical pipeline" in report
    per_class = pd.read_csv(tmp_path / "per_class_average_precision.csv", index_col=0)
    assert per_class.columns[1] == "classical" and per_class.columns[0].startswith("DeepLoc (")
    assert per_class.loc["mean"].between(0, 1).all()
    assert len(load_pretrained(tmp_path / "pretrained").classes_) == 17


def test_version(capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("deeploc ")
