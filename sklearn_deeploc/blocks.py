"""Resumable, verified output: long runs keep finished parts and never mix two runs.

:class:`ResumableOutput` keeps a table's parts, keyed by cell ranges ``(start, stop)`` or names,
in ``<output>.parts/``: ``manifest.json`` (what the output depends on), ``journal.jsonl`` (file,
rows, size and sha256 of each finished part; a part is trusted only when its bytes match) and a
lock (a killed run's lock blocks nobody). A journal line costs O(1) where rewriting the manifest
would cost O(parts), and a line torn by a crash only leaves its part to recompute.
"""

import json
import os
import re
import shutil
from collections import Counter
from contextlib import ExitStack
from functools import partial
from io import BytesIO
from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import _files
from ._files import differences, sha256_hex, write_atomically
from ._files import file_identity as file_identity  # public here: jobs and manifests use it
from ._version import __version__
from .validation import check_positive_int

FORMATS = {".csv", ".parquet"}
MANIFEST_FORMAT = 1
LOCK_FILES = {"lock", "lock" + _files.HOLDER_SUFFIX}
START_OVER = "pass overwrite=True to start over"


class ResumableOutputError(Exception):
    """Base of the errors a user fixes by rerunning or by starting over."""


class OutputMismatchError(ResumableOutputError, ValueError):
    """The existing output was made from other inputs or options, or cannot be verified."""


class OutputLockedError(ResumableOutputError, RuntimeError):
    """Another running process is writing the same output."""


class DamagedPartError(ResumableOutputError, ValueError):
    """A part changed on disk after this run had verified it."""


def check_table_path(path):
    """The suffix of an output table's ``path``, or a ValueError unless it is .csv or .parquet."""
    suffix = Path(path).suffix
    if suffix not in FORMATS:
        raise ValueError(f"Output must end in one of {sorted(FORMATS)}; got {path}.")
    return suffix


def _read(source, suffix, text=(), as_written=()):
    """A table from a path or file object. A CSV's ``text`` columns stay text (class "NA", plate
    "2024"), and so do its ``as_written`` ones unless pandas reads them as numbers or booleans
    that keep every value (not the code "007", nor an 18-digit identifier as a float); only
    an empty value is missing. Each is names, or a test of a name."""
    if suffix == ".parquet":
        return pd.read_parquet(source)
    table = pd.read_csv(source)
    strict, loose = (_named(table.columns, names) for names in (text, as_written))
    doubtful = [c for c in loose if c not in strict and _may_lose_text(table[c])]
    if chosen := [*strict, *doubtful]:
        if hasattr(source, "seek"):
            source.seek(0)
        read = pd.read_csv(source, usecols=chosen, dtype=str, keep_default_na=False, na_values=[""])
        for column in chosen:
            if column in strict or not _keeps_every_value(table[column], read[column]):
                table[column] = read[column]
    return table


def _named(columns, names):
    """The ``columns`` among ``names`` (a collection, or a test of a name)."""
    return [c for c in columns if (names(c) if callable(names) else c in names)]


def _may_lose_text(parsed):
    """Whether pandas' reading of a CSV column may have lost some of its text: whole numbers
    (a code "007", an identifier), or missing values ("NA"). Measurements with fractions,
    booleans, and text with no value missing keep it all."""
    if parsed.dtype == bool:
        return False
    if pd.api.types.is_numeric_dtype(parsed):
        values = parsed.dropna().to_numpy()
        return bool(np.all(values == np.round(values)))
    return parsed.dtype == object or parsed.hasnans  # object: integers beyond 64 bits


def _keeps_every_value(parsed, text):
    """Whether pandas' reading of a CSV column as numbers loses none of its ``text``."""
    if not pd.api.types.is_numeric_dtype(parsed):  # "NA" and "None" read as missing
        return False
    text = text.dropna()
    if parsed.isna().all() and len(text):  # "NA" and "None" alone: names, no number
        return False
    code = text.str.match(r"[+-]?0\d").any()  # "007"
    inexact = parsed.dtype.kind == "f" and text.str.fullmatch(r"[+-]?\d{16,}").any()
    return not (code or inexact)


def read_table(path, text=(), as_written=()):
    """Read a ``.csv`` or ``.parquet`` table; a CSV's ``text`` and ``as_written`` columns as in
    :func:`_read`."""
    return _read(path, check_table_path(path), text, as_written)


def write_table(frame, path):
    """Write a table atomically (hidden temporary file, flushed, then renamed)."""
    method = frame.to_parquet if check_table_path(path) == ".parquet" else frame.to_csv
    return write_atomically(path, partial(method, index=False))


def block_ranges(n_items, block_size):
    """``[(start, stop), ...]`` covering ``range(n_items)`` in blocks of ``block_size``."""
    n_items = check_positive_int(n_items, "n_items")
    block_size = check_positive_int(block_size, "block_size")
    return [(start, min(start + block_size, n_items)) for start in range(0, n_items, block_size)]


def parts_folder(output):
    """Where the parts of ``output`` live: ``<output>.parts/``."""
    output = Path(output)
    return output.with_name(output.name + ".parts")


def _part_key(key):
    """A key as used everywhere: ``(start, stop)`` with ints, or a non-empty string."""
    if isinstance(key, str) and key:
        return key
    if isinstance(key, (tuple, list)) and len(key) == 2:
        start, stop = key
        if isinstance(start, Integral) and isinstance(stop, Integral) and 0 <= start < stop:
            return int(start), int(stop)
    raise ValueError(f"A part key must be a cell range (start, stop) or a name; got {key!r}.")


def _key_as_json(key):
    return list(key) if isinstance(key, tuple) else key


def _part_name(key, suffix):
    """File name of a part: ``block-<start>-<stop>`` or ``part-<readable name>-<hash>``."""
    if isinstance(key, tuple):
        return f"block-{key[0]:010d}-{key[1]:010d}{suffix}"
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:60]
    return f"part-{readable}-{sha256_hex(key.encode())[:12]}{suffix}"  # hash: names never collide


def block_path(output, start, stop):
    """File of the block of cells ``start:stop`` of ``output``, in ``output``'s format."""
    return parts_folder(output) / _part_name(_part_key((start, stop)), check_table_path(output))


def _as_json(manifest):
    """The manifest as it reads back from JSON (tuples become lists), or a TypeError."""
    if not isinstance(manifest, dict):
        raise TypeError(f"manifest must be a dict; got {type(manifest).__name__}.")
    try:
        return json.loads(json.dumps(manifest, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"manifest values must be JSON values (str, number, list, dict); {error}"
        ) from None


_HEADER = ("format", "package_version")
held_lock = partial(_files.held_lock, error=OutputLockedError)


def _picked(manifest, keys):
    return {key: manifest[key] for key in keys if key in manifest}


def _manifest_differences(stored, wanted):
    """The caller's entries that differ, then format and version; the keys only if nothing else."""
    stored = stored if isinstance(stored, dict) else {}
    depends_on = stored.get("depends_on")
    found = differences(depends_on if isinstance(depends_on, dict) else {}, wanted["depends_on"])
    found += differences(_picked(stored, _HEADER), _picked(wanted, _HEADER))
    return found or differences(_picked(stored, ["keys"]), _picked(wanted, ["keys"]))


def _journal_records(path):
    """The last record of each part file in a journal; lines that do not parse are skipped."""
    records = {}
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    for line in lines:
        try:
            record = json.loads(line)
            if {"file", "rows", "bytes", "sha256"} <= record.keys():
                records[record["file"]] = record
        except (ValueError, AttributeError, TypeError):  # torn by a crash, or not a record
            continue
    return records


def _call_arguments(key):
    """Arguments a part's key adds to the function: ``start, stop`` or ``name``."""
    return key if isinstance(key, tuple) else (key,)


class ResumableOutput:
    """A table written in parts that survive interruptions and are verified on resume.

    A context manager: entering takes the lock, checks (or writes) ``manifest`` (what the values
    depend on, as JSON values) and keeps the parts whose bytes match the journal; leaving
    releases the lock. ``keys`` are the parts in output order, cell ranges or names. A differing
    manifest raises OutputMismatchError, a held lock OutputLockedError; ``overwrite`` starts over.
    ``text`` names the columns that CSV parts hold as text (class names such as "007", "NA").
    """

    def __init__(self, output, manifest, keys, *, unit="part", text=(), overwrite=False, verbose=1):
        self.output, self.text = Path(output), tuple(text)
        self._suffix = check_table_path(self.output)
        self.parts = parts_folder(self.output)
        self.keys = [_part_key(key) for key in keys]
        if not self.keys:
            raise ValueError("keys is empty: an output needs at least one part.")
        repeated = [key for key, count in Counter(self.keys).items() if count > 1]
        if repeated:
            raise ValueError(f"keys must be unique; {repeated[0]!r} appears more than once.")
        self._file_names = {key: _part_name(key, self._suffix) for key in self.keys}
        self.manifest = {
            "format": MANIFEST_FORMAT,
            "package_version": __version__,
            "depends_on": _as_json(manifest),
            "keys": [_key_as_json(key) for key in self.keys],
        }
        self.unit, self.overwrite, self.verbose = unit, overwrite, verbose
        self.status = None
        self._records = {}
        self._lock = self._journal = None

    def __enter__(self):
        if self.output.is_dir():
            raise ValueError(f"{self.output} is a folder; expected the path of a table file.")
        if self.output.exists() and not self.parts.exists() and not self.overwrite:
            raise OutputMismatchError(
                f"{self.output} exists but has no {self.parts.name} folder, so it cannot be "
                f"verified; {START_OVER} (this replaces it)."
            )
        self.parts.mkdir(parents=True, exist_ok=True)
        self._lock = ExitStack()
        try:
            stale = self._lock.enter_context(held_lock(self.parts / "lock", self.output))
            if stale is not None:
                self._say(
                    "taking over the lock of an earlier run that ended without releasing it "
                    f"({stale})"
                )
            self._prepare()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exception):
        self._close()

    def _close(self):
        """Close the journal, then release the lock (both held by ``_lock``)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = self._journal = None

    def _say(self, message):
        if self.verbose:
            print(message, flush=True)

    def _prepare(self):
        for leftover in self.parts.glob(".*.tmp"):  # from a killed run: we hold the lock
            leftover.unlink()
        if self.overwrite:
            self._remove_previous()
        self._check_manifest()
        untrusted = self._verify_parts()
        pending = len(self.pending())
        self.status = (
            f"{len(self.keys) - pending} of {len(self.keys)} {self.unit}s already done; "
            f"computing {pending}"
        )
        if untrusted:
            counts = ", ".join(f"{count} {kind}" for kind, count in sorted(untrusted.items()))
            self.status += f" (recomputing {counts})"
        self._say(self.status)

    def _remove_previous(self):
        for entry in self.parts.iterdir():
            if entry.name in LOCK_FILES:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        self.output.unlink(missing_ok=True)

    def _check_manifest(self):
        path = self.parts / "manifest.json"
        if not path.exists():
            if self.output.exists() or any(p.name not in LOCK_FILES for p in self.parts.iterdir()):
                raise OutputMismatchError(
                    f"{self.parts} has no manifest.json (damaged or not written by this package), "
                    f"so {self.output.name} and its parts cannot be verified; {START_OVER}."
                )
            text = json.dumps(self.manifest, indent=1)
            write_atomically(path, lambda file: file.write_text(text))
            return
        try:
            stored = json.loads(path.read_text())
        except ValueError as error:
            raise OutputMismatchError(
                f"{path} is damaged ({error}), so the parts cannot be verified; {START_OVER}."
            ) from None
        differences = _manifest_differences(stored, self.manifest)
        if differences:
            raise OutputMismatchError(
                f"{self.output} was made from other inputs or options "
                f"({'; '.join(differences)}); {START_OVER}."
            )

    def _verify_parts(self):
        """Trust the parts whose bytes match the journal; count the others by what is wrong."""
        journal = self.parts / "journal.jsonl"
        records = _journal_records(journal)
        untrusted = Counter()
        for key in self.keys:
            path = self.path(key)
            record = records.get(path.name)
            if record is None:
                if path.exists():
                    untrusted["unrecorded"] += 1
            elif not path.exists():
                untrusted["missing"] += 1
            elif (
                path.stat().st_size == record["bytes"]
                and sha256_hex(path.read_bytes()) == record["sha256"]
            ):
                self._records[path.name] = record
            else:
                untrusted["damaged"] += 1
        lines = "".join(json.dumps(record) + "\n" for record in self._records.values())
        write_atomically(journal, lambda file: file.write_text(lines))  # drops torn lines
        self._journal = os.open(journal, os.O_WRONLY | os.O_APPEND)
        self._lock.callback(os.close, self._journal)
        return untrusted

    def _check_open(self):
        if self._lock is None:
            raise RuntimeError("Open the output first: `with ResumableOutput(...) as parts:`.")

    def _file_name(self, key):
        key = _part_key(key)
        if key not in self._file_names:
            raise ValueError(f"{key!r} is not one of the {len(self.keys)} keys of {self.output}.")
        return self._file_names[key]

    def path(self, key):
        """The file of part ``key`` in the parts folder."""
        return self.parts / self._file_name(key)

    def is_done(self, key):
        """Whether part ``key`` is on disk and verified."""
        return self._file_name(key) in self._records

    def pending(self):
        """The keys of the parts still to compute, in output order."""
        return [key for key in self.keys if not self.is_done(key)]

    def write(self, key, frame):
        """Write part ``key`` atomically, then record its rows, size and sha256 in the journal."""
        self._check_open()
        path = self.path(key)
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"Part {key!r} must be a pandas DataFrame; got {type(frame).__name__}.")
        if frame.columns.empty:
            raise ValueError(f"Part {key!r} has no columns; a table part needs at least one.")
        write_table(frame, path)
        data = path.read_bytes()  # hashed as it lies on disk
        record = {
            "key": _key_as_json(_part_key(key)),  # for people reading the journal
            "file": path.name,
            "rows": len(frame),
            "bytes": len(data),
            "sha256": sha256_hex(data),
        }
        os.write(self._journal, (json.dumps(record) + "\n").encode())
        os.fsync(self._journal)
        self._records[path.name] = record

    def read(self, key):
        """Part ``key`` as a DataFrame, once its bytes and rows match the journal."""
        self._check_open()
        path = self.path(key)
        record = self._records.get(path.name)
        if record is None:
            raise ValueError(f"Part {key!r} of {self.output} is not done yet.")
        data = path.read_bytes() if path.exists() else b""
        if sha256_hex(data) != record["sha256"]:
            raise DamagedPartError(
                f"{path} changed on disk during this run; run again to compute it again."
            )
        frame = _read(BytesIO(data), self._suffix, self.text)
        if len(frame) != record["rows"]:
            # The journal and the part disagree: neither is trusted, the part is computed again.
            path.unlink()
            del self._records[path.name]
            raise DamagedPartError(
                f"{path} reads as {len(frame)} rows; its journal says {record['rows']}. The part "
                "was removed: run again to compute it again."
            )
        return frame

    def discard(self):
        """Remove every part, the manifest and ``output``: the next run starts over."""
        self._check_open()
        self._remove_previous()

    def assemble(self):
        """Concatenate the verified parts, in key order, into ``output``; return the table."""
        self._check_open()
        pending = self.pending()
        if pending:
            raise ValueError(
                f"{len(pending)} of {len(self.keys)} {self.unit}s of {self.output} are not done "
                f"(the first: {pending[0]!r}); write them before assembling."
            )
        table = pd.concat([self.read(key) for key in self.keys], ignore_index=True)
        write_table(table, self.output)
        return table

    def compute(self, function, *args, client=None):
        """Compute and write every pending part; return how many were computed.

        ``function(*args, start, stop)`` (a cell range) or ``function(*args, name)`` returns a
        part's DataFrame; with a Dask ``client`` it runs on the workers, each part is written
        here as it arrives, the rest cancelled if this run stops.
        """
        pending = self.pending()
        with tqdm(total=len(pending), disable=not self.verbose, unit=self.unit) as progress:
            if client is None:
                for key in pending:
                    self.write(key, function(*args, *_call_arguments(key)))
                    progress.update()
            else:
                self._compute_on(client, pending, function, args, progress)
        return len(pending)

    def _compute_on(self, client, pending, function, args, progress):
        from distributed import as_completed

        futures = {
            client.submit(function, *args, *_call_arguments(key), pure=False): key
            for key in pending
        }
        try:
            for future in as_completed(futures):
                self.write(futures[future], future.result())
                progress.update()
        finally:
            client.cancel(list(futures))  # a stopped run leaves no work behind on the cluster


def run_blocks(
    output,
    n_items,
    block_size,
    function,
    *args,
    manifest=None,
    text=(),
    overwrite=False,
    client=None,
    verbose=1,
):
    """Compute the missing blocks of cells with ``function(*args, start, stop)``, then assemble.

    A :class:`ResumableOutput` over :func:`block_ranges`, whose ``manifest`` gets ``n_items``
    and ``block_size``, and whose CSV parts hold ``text`` columns as text; returns the number
    of blocks computed in this run.
    """
    keys = block_ranges(n_items, block_size)
    manifest = _as_json({} if manifest is None else manifest)
    manifest.update(n_items=int(n_items), block_size=int(block_size))
    with ResumableOutput(
        output, manifest, keys, unit="block", text=text, overwrite=overwrite, verbose=verbose
    ) as blocks:
        n_computed = blocks.compute(function, *args, client=client)
        blocks.assemble()
    return n_computed
