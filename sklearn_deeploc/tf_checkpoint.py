"""Read TensorFlow "V2" checkpoints (tensor bundles) without TensorFlow.

A checkpoint ``<prefix>`` is an index file ``<prefix>.index`` and data shards
``<prefix>.data-<k>-of-<n>``. The index is an SSTable (the LevelDB table
format) whose keys are tensor names and whose values are serialized
``BundleEntryProto`` messages (dtype, shape, shard, offset, size); the empty
key holds a ``BundleHeaderProto``. Tensor bytes are read from the shards at
those offsets. Only what a tensor bundle uses is implemented: uncompressed
blocks and unpartitioned tensors.
"""

import re
import struct
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + crc32c (4 bytes)
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


def _varint(buffer, position):
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
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        fields.setdefault(number, []).append(value)
    return fields


def _block_handle(buffer, position):
    offset, position = _varint(buffer, position)
    size, position = _varint(buffer, position)
    return (offset, size), position


def _block_entries(table, handle, path):
    """Key/value pairs of one SSTable block (keys are prefix-compressed)."""
    offset, size = handle
    if table[offset + size] != 0:
        raise ValueError(f"{path}: compressed table blocks are not supported")
    block = table[offset : offset + size]
    n_restarts = struct.unpack_from("<I", block, size - 4)[0]
    end = size - 4 - 4 * n_restarts
    position, key = 0, b""
    while position < end:
        shared, position = _varint(block, position)
        unshared, position = _varint(block, position)
        value_length, position = _varint(block, position)
        key = key[:shared] + block[position : position + unshared]
        position += unshared
        yield key, block[position : position + value_length]
        position += value_length


def checkpoint_prefix(path):
    """The checkpoint prefix from a prefix, its ``.index`` or a data shard path."""
    path = Path(path)
    name = path.name
    if name.endswith(".index"):
        return path.with_name(name[: -len(".index")])
    if ".data-" in name:
        return path.with_name(name[: name.index(".data-")])
    return path


def read_checkpoint(path):
    """All tensors of a TensorFlow V2 checkpoint as numpy arrays.

    Parameters
    ----------
    path : str or path-like
        The checkpoint prefix (``model.ckpt-5000``), or its ``.index`` file.

    Returns
    -------
    dict of str to ndarray
        Tensor name -> value (string tensors are skipped).

    Raises
    ------
    ValueError
        The path is not a V2 checkpoint, or it uses features not supported here.

    Examples
    --------
    >>> from sklearn_deeploc.tf_checkpoint import read_checkpoint
    >>> tensors = read_checkpoint("pretrained_DeepLoc/model.ckpt-5000")  # doctest: +SKIP
    >>> tensors["conv_1/weights/Variable"].shape  # doctest: +SKIP
    (3, 3, 2, 64)
    """
    prefix = checkpoint_prefix(path)
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        raise ValueError(
            f"{path} is not a TensorFlow checkpoint: expected the index file {index} "
            "(give the prefix, for example model.ckpt-5000)."
        )
    table = index.read_bytes()
    if (
        len(table) < FOOTER_SIZE
        or struct.unpack_from("<Q", table, len(table) - 8)[0] != TABLE_MAGIC
    ):
        raise ValueError(f"{index} is not a TensorFlow V2 checkpoint index (bad table footer).")
    footer = table[-FOOTER_SIZE:]
    _, position = _block_handle(footer, 0)  # the metaindex block is not used
    index_handle, _ = _block_handle(footer, position)
    entries = {}
    for _, handle_bytes in _block_entries(table, index_handle, index):
        handle, _ = _block_handle(handle_bytes, 0)
        entries.update(_block_entries(table, handle, index))
    header = _protobuf_fields(entries.pop(b"", b""))
    n_shards = header.get(1, [1])[0]
    if header.get(2, [0])[0] != 0:
        raise ValueError(f"{index}: big-endian checkpoints are not supported")
    shards = {}
    tensors = {}
    for key, value in entries.items():
        fields = _protobuf_fields(value)
        dtype = DTYPES.get(fields.get(1, [0])[0])
        if dtype is None:
            continue  # strings and other types a DeepLoc graph does not need
        if 7 in fields:
            raise ValueError(f"{index}: partitioned tensor {key.decode()!r} is not supported")
        shape = (
            [_protobuf_fields(d).get(1, [0])[0] for d in _protobuf_fields(fields[2][0]).get(2, [])]
            if 2 in fields
            else []
        )
        shard, offset, size = (fields.get(n, [0])[0] for n in (3, 4, 5))
        if shard not in shards:
            data = prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{n_shards:05d}")
            if not data.is_file():
                raise ValueError(f"{path}: data shard {data} is missing")
            shards[shard] = data.read_bytes()
        raw = shards[shard][offset : offset + size]
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if len(raw) != expected:
            raise ValueError(
                f"{index}: {key.decode()!r} holds {len(raw)} bytes, expected {expected}"
            )
        tensors[key.decode()] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return tensors


OPTIMIZER_SLOT = re.compile(r"^(Adam|Adam_\d+|Momentum|RMSProp|RMSProp_\d+|Adagrad)$")
ROLES = ("weights", "biases", "beta", "gamma", "moving_mean", "moving_variance")


def _role(name):
    parts = name.split("/")
    if "ExponentialMovingAverage" in parts[-1]:
        moment = parts[-2]
        return "moving_variance" if "variance" in moment or moment.endswith("_1") else "moving_mean"
    for role in ("weights", "biases"):
        if role in parts[:-1]:
            return role
    return parts[-1] if parts[-1] in ("beta", "gamma") else None


def layer_tensors(tensors, layer):
    """The tensors of one reference layer by role, with their checkpoint names.

    A name belongs to ``layer`` when one of its path segments is ``layer`` or
    ``<layer>_batch_norm``; optimizer slots (``.../Adam``) are ignored. Roles
    come from the reference code's structure, not from one exact string:
    ``weights``/``biases`` name scopes, ``beta``/``gamma``, and the two
    moving averages (the variance's moment op is named ``..._1`` or
    ``...variance``, depending on the TensorFlow version).

    Returns
    -------
    dict
        role -> (checkpoint name, array).
    """
    found = {}
    for name, value in tensors.items():
        parts = name.split("/")
        if OPTIMIZER_SLOT.match(parts[-1]) or not (
            layer in parts or f"{layer}_batch_norm" in parts
        ):
            continue
        role = _role(name)
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
