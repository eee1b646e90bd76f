"""Read TensorFlow "V2" checkpoints (tensor bundles) without TensorFlow.

``<prefix>.index`` is an SSTable (LevelDB format) of tensor name ->
``BundleEntryProto`` (dtype, shape, shard, offset, size, crc32c); the bytes lie
in ``<prefix>.data-<k>-of-<n>``. Uncompressed blocks, unpartitioned tensors only.
"""

import math
import os
import re
import struct
from collections import namedtuple
from contextlib import ExitStack
from pathlib import Path

import google_crc32c
import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + masked crc32c (4 bytes)
# LevelDB and TensorFlow store crc32c values "masked" (rotated, then offset) so
# that a checksum of data that itself holds checksums stays well distributed.
CRC_MASK_DELTA = 0xA282EAD8
# TensorFlow DataType enum values -> numpy dtypes (the ones a DeepLoc graph holds).
DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    19: np.float16,
}


class _Malformed(ValueError):
    """Raised by the parsers, which do not know the file; reported naming it."""


# What a damaged or hand-made file raises while it is parsed.
_PARSE_ERRORS = (IndexError, struct.error, TypeError, _Malformed)

# Where one tensor lies and what it must be (a BundleEntryProto); dtype is None for dtypes a
# DeepLoc graph does not need (strings).
_Entry = namedtuple("_Entry", "dtype shape shard offset size masked_crc32c partitioned")


def _masked_crc32c(data):
    """The crc32c of ``data``, masked as LevelDB and TensorFlow store it."""
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + CRC_MASK_DELTA) & 0xFFFFFFFF


def _varint(buffer, position):
    """The varint at ``position`` and the position after it."""
    result, shift = 0, 0
    while True:
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _protobuf_fields(buffer):
    """``{field number: [values]}`` of a protobuf message (varints as int, others as bytes)."""
    fields, position = {}, 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(buffer, position)
        elif wire_type == 1:
            value, position = buffer[position : position + 8], position + 8
        elif wire_type == 2:
            length, position = _varint(buffer, position)
            value, position = buffer[position : position + length], position + length
        elif wire_type == 5:
            value, position = buffer[position : position + 4], position + 4
        else:
            raise _Malformed(f"unsupported protobuf wire type {wire_type}")
        if position > len(buffer):
            raise _Malformed(f"protobuf field {number} runs past the end of its message")
        fields.setdefault(number, []).append(value)
    return fields


def _read_block(table, handle, path):
    """The contents of the SSTable block that ``handle`` (offset and size varints) points to."""
    offset, position = _varint(handle, 0)
    size, _ = _varint(handle, position)
    trailer = offset + size
    if trailer + BLOCK_TRAILER_SIZE > len(table) - FOOTER_SIZE:
        raise ValueError(
            f"{path} is damaged: a table block ({size} bytes at byte {offset}) lies past "
            f"the end of the {len(table)}-byte file."
        )
    (stored,) = struct.unpack_from("<I", table, trailer + 1)
    if _masked_crc32c(table[offset : trailer + 1]) != stored:  # contents + type byte
        raise ValueError(
            f"{path} is damaged: the table block at byte {offset} fails its crc32c check."
        )
    if table[trailer] != 0:
        raise ValueError(f"{path}: compressed table blocks are not supported")
    return table[offset:trailer]


def _block_entries(block):
    """Key/value pairs of one SSTable block (keys are prefix-compressed)."""
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * n_restarts
    position, key = 0, b""
    while position < end:
        shared, position = _varint(block, position)
        unshared, position = _varint(block, position)
        value_length, position = _varint(block, position)
        key = key[:shared] + block[position : position + unshared]
        position += unshared + value_length
        if position > end:
            raise _Malformed("a table entry runs past the end of its block")
        yield key, block[position - value_length : position]


def _table_entries(index):
    """Every key/value pair of the checkpoint's index table, blocks checked."""
    table = index.read_bytes()
    if len(table) < FOOTER_SIZE or table[-8:] != struct.pack("<Q", TABLE_MAGIC):
        raise ValueError(f"{index} is not a TensorFlow V2 checkpoint index (bad table footer).")
    footer = table[-FOOTER_SIZE:]
    _, position = _varint(footer, 0)  # skip the metaindex block's handle (offset, size):
    _, position = _varint(footer, position)  # only the index block's, next, is used
    entries = {}
    for _, handle in _block_entries(_read_block(table, footer[position:], index)):
        entries.update(_block_entries(_read_block(table, handle, index)))
    return entries


def _integer(fields, number):
    """A varint field (0 when absent, as protobuf defaults)."""
    value = fields.get(number, [0])[0]
    if not isinstance(value, int):
        raise _Malformed(f"field {number} should be an integer")
    return value


def _entry(value):
    """The ``_Entry`` of a serialised ``BundleEntryProto``."""
    fields = _protobuf_fields(value)
    dims = _protobuf_fields(fields[2][0]).get(2, []) if 2 in fields else []
    crc = fields.get(6, [None])[0]
    return _Entry(
        dtype=DTYPES.get(_integer(fields, 1)),
        shape=[_integer(_protobuf_fields(dim), 1) for dim in dims],
        shard=_integer(fields, 3),
        offset=_integer(fields, 4),
        size=_integer(fields, 5),
        masked_crc32c=None if crc is None else struct.unpack("<I", crc)[0],
        partitioned=7 in fields,
    )


def _read_index(index):
    """The number of data shards and every tensor's entry, by name."""
    try:
        entries = _table_entries(index)
        if b"" not in entries:
            raise _Malformed("it has no bundle header (the entry with the empty key)")
        header = _protobuf_fields(entries.pop(b""))
        n_shards, big_endian = _integer(header, 1), _integer(header, 2)
    except _PARSE_ERRORS as error:
        raise ValueError(f"{index} is damaged or not a checkpoint index: {error}") from error
    if n_shards < 1:
        raise ValueError(f"{index} is damaged: its header counts {n_shards} data shards.")
    if big_endian:
        raise ValueError(f"{index}: big-endian checkpoints are not supported")
    parsed = {}
    for key, value in entries.items():
        name = key.decode(errors="replace")
        try:
            parsed[name] = _entry(value)
        except _PARSE_ERRORS as error:
            raise ValueError(
                f"{index}: the entry of tensor {name!r} is damaged: {error}"
            ) from error
    return n_shards, parsed


def _tensor(entry, shard, data, name):
    """One tensor's value, read from the open file ``shard`` after checking size and crc32c."""
    dtype = np.dtype(entry.dtype)
    expected = math.prod(entry.shape) * dtype.itemsize
    if entry.size != expected:
        raise ValueError(
            f"{data}: tensor {name!r} holds {entry.size} bytes, expected {expected} for shape "
            f"{entry.shape} of {dtype}."
        )
    length = os.fstat(shard.fileno()).st_size
    if entry.offset + entry.size > length:
        raise ValueError(
            f"{data} is truncated: tensor {name!r} needs bytes {entry.offset} to "
            f"{entry.offset + entry.size}, the file has {length}."
        )
    shard.seek(entry.offset)
    raw = shard.read(entry.size)
    if entry.masked_crc32c is None or _masked_crc32c(raw) != entry.masked_crc32c:
        raise ValueError(
            f"{data} is damaged: tensor {name!r} fails its crc32c check (stored "
            f"{entry.masked_crc32c}, computed {_masked_crc32c(raw)}, both masked)."
        )
    return np.frombuffer(raw, dtype=dtype).reshape(entry.shape).copy()


def checkpoint_prefix(path):
    """The checkpoint prefix from a prefix, its ``.index`` or a data shard path."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".index").split(".data-")[0])


def read_checkpoint(path):
    """Tensor name -> array of a checkpoint (prefix or file), crc32c-checked; strings skipped."""
    prefix = checkpoint_prefix(path)
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        raise ValueError(
            f"{path} is not a TensorFlow checkpoint: expected the index file {index} "
            "(give the prefix, for example model.ckpt-5000)."
        )
    n_shards, entries = _read_index(index)
    shards, tensors = {}, {}
    with ExitStack() as open_files:
        for name, entry in entries.items():
            if entry.dtype is None:  # strings and other types a DeepLoc graph does not need
                continue
            if entry.partitioned:
                raise ValueError(f"{path}: partitioned tensor {name!r} is not supported")
            data = prefix.with_name(f"{prefix.name}.data-{entry.shard:05d}-of-{n_shards:05d}")
            if entry.shard not in shards:
                if entry.shard >= n_shards or not data.is_file():
                    raise ValueError(f"{path}: data shard {data} is missing (tensor {name!r})")
                shards[entry.shard] = open_files.enter_context(open(data, "rb"))
            tensors[name] = _tensor(entry, shards[entry.shard], data, name)
    return tensors


OPTIMIZER_SLOT = re.compile(r"^(Adam|Adam_\d+|Momentum|RMSProp|RMSProp_\d+|Adagrad)$")
ROLES = ("weights", "biases", "beta", "gamma", "moving_mean", "moving_variance")


def _role(name):
    """The role of a tensor in its layer (a ``ROLES`` entry), from its scope; None for others."""
    parts = name.split("/")
    if "ExponentialMovingAverage" in parts[-1]:
        moment = parts[-2]
        return "moving_variance" if "variance" in moment or moment.endswith("_1") else "moving_mean"
    for role in ("weights", "biases"):
        if role in parts[:-1]:
            return role
    return parts[-1] if parts[-1] in ("beta", "gamma") else None


def layer_tensors(tensors, layer):
    """Role -> (checkpoint name, array) of one reference layer's tensors.

    A name belongs to ``layer`` when a path segment is ``layer`` or ``<layer>_batch_norm``
    (optimizer slots ignored); roles come from the scope structure, as exact names differ
    between TensorFlow versions.
    """
    found = {}
    for name, value in tensors.items():
        parts = name.split("/")
        in_layer = layer in parts or f"{layer}_batch_norm" in parts
        role = _role(name) if in_layer and not OPTIMIZER_SLOT.match(parts[-1]) else None
        if role is None:
            continue
        if role in found:
            raise ValueError(f"Two candidates for {layer} {role}: {found[role][0]!r} and {name!r}.")
        found[role] = (name, value)
    missing = [r for r in ROLES if r not in found]
    if missing:
        raise ValueError(
            f"The checkpoint is not a DeepLoc graph: layer {layer!r} lacks {missing} "
            f"(found {sorted(n for n, _ in found.values()) or 'nothing'})."
        )
    return found
