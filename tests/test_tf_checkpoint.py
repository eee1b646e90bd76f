"""The TensorFlow bundle reader refuses damaged checkpoints, naming the file and the tensor."""

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import google_crc32c
import numpy as np
import pytest

from sklearn_deeploc.tf_checkpoint import read_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "tf_deeploc_small"
NAME = "model.ckpt-5000"
DATA = f"{NAME}.data-00000-of-00001"


@pytest.fixture
def checkpoint(tmp_path):
    """A writable copy of the small fixture checkpoint; returns its prefix."""
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(FIXTURE / f"{NAME}{suffix}", tmp_path / f"{NAME}{suffix}")
    return tmp_path / NAME


def _flip_bit(path, byte, bit=0):
    content = bytearray(path.read_bytes())
    content[byte] ^= 1 << bit
    path.write_bytes(bytes(content))


def _index_block(index):
    """Offset and size of the table's index block, from the footer's second handle."""
    content = index.read_bytes()
    footer = content[-48:]
    numbers, value, shift = [], 0, 0
    for byte in footer:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            numbers.append(value)
            value, shift = 0, 0
        if len(numbers) == 4:
            return numbers[2], numbers[3]


def test_untouched_fixture_reads(checkpoint):
    tensors = read_checkpoint(checkpoint)
    assert len(tensors) == 156
    assert tensors["conv_1/weights/Variable"].shape == (3, 3, 2, 4)
    assert all(value.dtype == np.float32 for value in tensors.values())


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_flipped_bit_in_data_file_is_refused(checkpoint, where):
    data = checkpoint.with_name(DATA)
    byte = min(int(where * data.stat().st_size), data.stat().st_size - 1)
    _flip_bit(data, byte, bit=3)
    with pytest.raises(ValueError, match=f"{DATA} is damaged: tensor '.+' fails its crc32c check"):
        read_checkpoint(checkpoint)


def test_truncated_data_file_is_refused(checkpoint):
    data = checkpoint.with_name(DATA)
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{DATA} is truncated: tensor '.+' needs bytes"):
        read_checkpoint(checkpoint)


def _cut_the_middle(content):
    return content[:100] + content[-48:]  # the footer survives, its blocks do not


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda content: content[: len(content) // 2], "bad table footer"),
        (lambda content: content[:-1], "bad table footer"),
        (_cut_the_middle, "is damaged: a table block .* lies past the end"),
        (lambda content: content[:3000] + b"\x55" + content[3001:], "fails its crc32c check"),
        (lambda content: b"\xff" * 48 + content[48:], "fails its crc32c check"),
    ],
    ids=["half", "last byte", "middle cut", "one byte", "first block"],
)
def test_damaged_index_is_refused(checkpoint, damage, match):
    index = checkpoint.with_name(f"{NAME}.index")
    index.write_bytes(damage(index.read_bytes()))
    with pytest.raises(ValueError, match=f"{NAME}.index .*{match}"):
        read_checkpoint(checkpoint)


def test_index_with_valid_checksums_but_broken_entries_is_refused(checkpoint):
    """A hand-made index: the block's checksum is right, its entry lengths are not."""
    index = checkpoint.with_name(f"{NAME}.index")
    content = bytearray(index.read_bytes())
    offset, size = _index_block(index)
    content[offset + 2] = 0x7F  # the first entry's value length, now past the block end
    crc = google_crc32c.value(bytes(content[offset : offset + size + 1]))
    masked = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    struct.pack_into("<I", content, offset + size + 1, masked)
    index.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="damaged or not a checkpoint index: a table entry runs"):
        read_checkpoint(checkpoint)


def test_only_the_tensors_byte_ranges_are_read(checkpoint):
    """A shard far larger than its tensors (here a sparse 1 GiB tail) is not read whole."""
    data = checkpoint.with_name(DATA)
    os.truncate(data, data.stat().st_size + 2**30)
    script = (
        "import resource, sys\n"
        "from sklearn_deeploc.tf_checkpoint import read_checkpoint\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "assert len(read_checkpoint(sys.argv[1])) == 156\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(checkpoint)], capture_output=True, text=True, check=True
    )
    assert int(run.stdout) < 100 * 1024  # KiB of peak memory grown, on Linux
