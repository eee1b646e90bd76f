import multiprocessing
import os
import signal
import socket

import numpy as np
import pandas as pd
import pytest

from sklearn_deeploc.blocks import (
    DamagedPartError,
    OutputLockedError,
    OutputMismatchError,
    ResumableOutput,
    block_path,
    file_identity,
    parts_folder,
    read_table,
    run_blocks,
)

MANIFEST = {"model": "digest-a", "tta": True, "input": {"size": 100}}


def cell_rows(start, stop):
    return pd.DataFrame({"cell": range(start, stop), "value": np.arange(start, stop) * 0.5})


class Recorder:
    """A block function that remembers which blocks it computed."""

    def __init__(self, rows=cell_rows):
        self.calls, self.rows = [], rows

    def __call__(self, start, stop):
        self.calls.append((start, stop))
        return self.rows(start, stop)


def complete_run(out, **kwargs):
    """Write ``out`` (10 cells, blocks of 4) and return the table."""
    run_blocks(out, 10, 4, cell_rows, manifest=MANIFEST, verbose=0, **kwargs)
    return read_table(out)


@pytest.mark.parametrize(
    ("changes", "block_size", "named"),
    [
        ({"model": "digest-b"}, 4, 'model: "digest-a" -> "digest-b"'),
        ({"tta": False}, 4, "tta: true -> false"),
        ({"input": {"size": 101}}, 4, "input.size: 100 -> 101"),
        ({"layer": "fc1"}, 4, 'layer: <absent> -> "fc1"'),
        ({}, 5, "block_size: 4 -> 5"),
    ],
)
def test_rerun_with_another_manifest_refuses_naming_what_differs(
    tmp_path, changes, block_size, named
):
    out = tmp_path / "cells.csv"
    before = complete_run(out)
    function = Recorder()
    with pytest.raises(OutputMismatchError, match=f"{named}.*overwrite=True"):
        run_blocks(out, 10, block_size, function, manifest={**MANIFEST, **changes}, verbose=0)
    assert function.calls == []
    pd.testing.assert_frame_equal(read_table(out), before)


def test_same_manifest_resumes_computing_nothing(tmp_path, capsys):
    out = tmp_path / "cells.csv"
    before = complete_run(out)
    function = Recorder()
    assert run_blocks(out, 10, 4, function, manifest=MANIFEST) == 0
    assert function.calls == []
    said = capsys.readouterr().out
    assert "3 of 3 blocks already done; computing 0\n" in said
    assert "taking over" not in said  # the first run released its lock
    pd.testing.assert_frame_equal(read_table(out), before)


def test_csv_block_cut_mid_row_is_recomputed(tmp_path, capsys):
    out = tmp_path / "cells.csv"
    before = complete_run(out)
    block = block_path(out, 4, 8)
    text = block.read_bytes()
    cut = text.rindex(b"\n", 0, len(text) - 1) + 3  # two characters into the last row
    block.write_bytes(text[:cut])
    function = Recorder()
    assert run_blocks(out, 10, 4, function, manifest=MANIFEST) == 1
    assert function.calls == [(4, 8)]
    assert "computing 1 (recomputing 1 damaged)" in capsys.readouterr().out
    pd.testing.assert_frame_equal(read_table(out), before)


def test_damaged_parquet_block_is_recomputed(tmp_path):
    out = tmp_path / "cells.parquet"
    before = complete_run(out)
    block = block_path(out, 0, 4)
    data = bytearray(block.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    block.write_bytes(bytes(data))
    function = Recorder()
    assert run_blocks(out, 10, 4, function, manifest=MANIFEST, verbose=0) == 1
    assert function.calls == [(0, 4)]
    pd.testing.assert_frame_equal(read_table(out), before)


def test_deleted_block_is_recomputed(tmp_path, capsys):
    out = tmp_path / "cells.csv"
    before = complete_run(out)
    block_path(out, 8, 10).unlink()
    function = Recorder()
    assert run_blocks(out, 10, 4, function, manifest=MANIFEST) == 1
    assert function.calls == [(8, 10)]
    assert "2 of 3 blocks already done; computing 1 (recomputing 1 missing)" in (
        capsys.readouterr().out
    )
    pd.testing.assert_frame_equal(read_table(out), before)


def interrupted_after(n_blocks, exception=KeyboardInterrupt):
    def function(start, stop):
        if len(function.calls) == n_blocks:
            raise exception("simulated interruption")
        function.calls.append((start, stop))
        return cell_rows(start, stop)

    function.calls = []
    return function


def test_block_written_by_someone_else_is_not_trusted(tmp_path, capsys):
    out = tmp_path / "cells.csv"
    with pytest.raises(KeyboardInterrupt):
        run_blocks(out, 10, 4, interrupted_after(1), manifest=MANIFEST, verbose=0)
    cell_rows(0, 4).to_csv(block_path(out, 4, 8), index=False)  # wrong cells, never recorded
    function = Recorder()
    assert run_blocks(out, 10, 4, function, manifest=MANIFEST) == 2
    assert function.calls == [(4, 8), (8, 10)]
    assert "(recomputing 1 unrecorded)" in capsys.readouterr().out
    assert read_table(out)["cell"].tolist() == list(range(10))


def test_keyboard_interrupt_leaves_only_verified_blocks_and_releases_the_lock(tmp_path, capsys):
    out = tmp_path / "cells.csv"
    with pytest.raises(KeyboardInterrupt):
        run_blocks(out, 12, 3, interrupted_after(2), manifest=MANIFEST, verbose=0)
    assert not out.exists()
    assert len(list(parts_folder(out).glob("block-*"))) == 2
    assert not list(tmp_path.rglob("*.tmp"))
    function = Recorder()
    assert run_blocks(out, 12, 3, function, manifest=MANIFEST) == 2  # the lock was released
    assert "2 of 4 blocks already done; computing 2\n" in capsys.readouterr().out
    assert function.calls == [(6, 9), (9, 12)]
    assert read_table(out)["cell"].tolist() == list(range(12))


def blocking_rows(ready, release, start, stop):
    ready.set()
    release.wait(60)
    return cell_rows(start, stop)


def start_holder(output):
    """Another process whose run on ``output`` is busy computing its one block."""
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    args = (output, 1, 1, blocking_rows, ready, release)
    holder = context.Process(
        target=run_blocks, args=args, kwargs={"manifest": MANIFEST, "verbose": 0}
    )
    holder.start()
    assert ready.wait(60), "the other run did not start"
    return holder, release


def test_second_concurrent_run_refuses_naming_the_other_process(tmp_path):
    out = tmp_path / "cells.csv"
    holder, release = start_holder(out)
    try:
        expected = (
            f"being written by another run \\(pid {holder.pid} on host {socket.gethostname()}"
        )
        function = Recorder()
        with pytest.raises(OutputLockedError, match=expected):
            run_blocks(out, 1, 1, function, manifest=MANIFEST, verbose=0)
        assert function.calls == []
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0  # the other run finished its block; this one resumes it
    assert run_blocks(out, 1, 1, cell_rows, manifest=MANIFEST, verbose=0) == 0


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path, capsys):
    out = tmp_path / "cells.csv"
    holder, _ = start_holder(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(60)
    assert run_blocks(out, 1, 1, cell_rows, manifest=MANIFEST) == 1
    assert (
        "taking over the lock of an earlier run that ended without releasing it "
        f"(pid {holder.pid} on host {socket.gethostname()}"
    ) in capsys.readouterr().out


def test_overwrite_starts_over(tmp_path):
    out = tmp_path / "cells.parquet"
    complete_run(out)
    function = Recorder(rows=lambda start, stop: cell_rows(start, stop).assign(value=-1.0))
    changed = {**MANIFEST, "model": "digest-b"}
    assert run_blocks(out, 10, 5, function, manifest=changed, overwrite=True, verbose=0) == 2
    assert function.calls == [(0, 5), (5, 10)]
    assert sorted(p.name for p in parts_folder(out).glob("block-*")) == [
        block_path(out, 0, 5).name,
        block_path(out, 5, 10).name,
    ]
    assert (read_table(out)["value"] == -1).all()
    assert run_blocks(out, 10, 5, function, manifest=changed, verbose=0) == 0


def test_parts_folder_without_manifest_is_refused(tmp_path):
    out = tmp_path / "cells.csv"
    parts_folder(out).mkdir()
    cell_rows(0, 4).to_csv(block_path(out, 0, 4), index=False)  # as older versions wrote it
    with pytest.raises(OutputMismatchError, match="no manifest.json.*cannot be verified"):
        run_blocks(out, 10, 4, cell_rows, manifest=MANIFEST, verbose=0)
    assert run_blocks(out, 10, 4, cell_rows, manifest=MANIFEST, overwrite=True, verbose=0) == 3


def test_damaged_manifest_is_refused(tmp_path):
    out = tmp_path / "cells.csv"
    complete_run(out)
    (parts_folder(out) / "manifest.json").write_text('{"format": 1, "depends')
    with pytest.raises(OutputMismatchError, match="manifest.json is damaged.*overwrite=True"):
        run_blocks(out, 10, 4, cell_rows, manifest=MANIFEST, verbose=0)


def test_existing_table_without_parts_is_refused_untouched(tmp_path):
    out = tmp_path / "cells.csv"
    out.write_text("someone's table\n")
    with pytest.raises(OutputMismatchError, match="has no cells.csv.parts folder"):
        run_blocks(out, 10, 4, cell_rows, manifest=MANIFEST, verbose=0)
    assert out.read_text() == "someone's table\n"
    assert not parts_folder(out).exists()


def test_named_parts_keep_their_order_and_resume(tmp_path):
    out = tmp_path / "cells.csv"
    fields = ["plate 1/r02c01f01.tiff", "plate 1/r01c01f01.tiff", "plate_1_r01c01f01.tiff"]

    def field_rows(name):
        return pd.DataFrame({"image": [name, name]})

    with ResumableOutput(out, MANIFEST, fields, unit="field", verbose=0) as cells:
        assert cells.compute(field_rows) == 3
        table = cells.assemble()
    assert table["image"].tolist() == [name for name in fields for _ in range(2)]
    assert len(list(parts_folder(out).glob("part-*"))) == 3
    with ResumableOutput(out, MANIFEST, fields, unit="field") as cells:
        assert cells.pending() == [] and cells.is_done(fields[2])
        assert cells.status == "3 of 3 fields already done; computing 0"


def test_part_changed_during_the_run_is_refused_at_assembly(tmp_path):
    out = tmp_path / "cells.csv"
    with ResumableOutput(out, MANIFEST, [(0, 2)], verbose=0) as cells:
        cells.write((0, 2), cell_rows(0, 2))
        cells.path((0, 2)).write_text("cell,value\n0,9.0\n1,9.0\n")
        with pytest.raises(DamagedPartError, match="changed on disk during this run"):
            cells.assemble()
    assert not out.exists()


@pytest.mark.parametrize(
    ("manifest", "message"),
    [({"seed": np.int64(3)}, "JSON values.*int64"), (["model"], "manifest must be a dict")],
)
def test_manifest_must_hold_json_values(tmp_path, manifest, message):
    with pytest.raises(TypeError, match=message):
        run_blocks(tmp_path / "cells.csv", 4, 2, cell_rows, manifest=manifest, verbose=0)


@pytest.mark.parametrize(("n_items", "block_size"), [(10, 0), (10, -1), (0, 4), (10, 2.5)])
def test_sizes_must_be_positive_integers(tmp_path, n_items, block_size):
    with pytest.raises(ValueError, match="must be a positive integer"):
        run_blocks(tmp_path / "cells.csv", n_items, block_size, cell_rows, verbose=0)


def test_file_identity_tells_another_content_apart_without_reading_it_all(tmp_path):
    path = tmp_path / "cells.h5"
    data = bytearray(np.random.default_rng(0).bytes(3 << 20))
    path.write_bytes(bytes(data))
    before = file_identity(path)
    assert file_identity(path) == before
    assert before["path"] == str(path.resolve()) and before["size"] == len(data)
    data[-1] ^= 0xFF  # same size, last byte changed
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before["mtime_ns"], before["mtime_ns"]))
    assert file_identity(path)["fingerprint"] != before["fingerprint"]


def test_dask_client_writes_the_same_verified_blocks(tmp_path):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "cells.parquet"
    before = complete_run(tmp_path / "local.parquet")
    with distributed.Client(processes=False, n_workers=1, dashboard_address=":0") as client:
        assert complete_run(out, client=client).equals(before)
        block_path(out, 4, 8).write_bytes(b"damaged")
        assert run_blocks(out, 10, 4, cell_rows, manifest=MANIFEST, client=client, verbose=0) == 1
    pd.testing.assert_frame_equal(read_table(out), before)


def test_journal_lines_of_the_wrong_shape_are_skipped(tmp_path):
    out = tmp_path / "cells.csv"
    before = complete_run(out)
    journal = parts_folder(out) / "journal.jsonl"
    with open(journal, "a") as handle:
        handle.write('{"file": ["a"], "rows": 1, "bytes": 1, "sha256": "x"}\n[1, 2]\n')
    function = Recorder()
    assert run_blocks(out, 10, 4, function, manifest=MANIFEST, verbose=0) == 0
    assert function.calls == []
    pd.testing.assert_frame_equal(read_table(out), before)
