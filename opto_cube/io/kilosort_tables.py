"""What a Kilosort / phy folder holds as text, read as data: ``params.py``, the cluster tables, the pulses table.

Nothing is executed: ``params.py`` is parsed with :mod:`ast` and only literal
assignments count (:func:`read_params`); phy's and Kilosort's
``cluster_*.tsv`` give each cluster id its curated ``group`` and ``KSLabel``
(:func:`cluster_tables`); the pulses table (``pulses.csv`` or ``.tsv``,
:func:`find_pulses_file`) becomes the trial arrays (:func:`read_pulses`).
Every refusal names the file, and the row. The reader that assembles these with
the binary spike files is :func:`opto_cube.io.kilosort.read_kilosort`.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io as _io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from opto_cube import schema
from opto_cube.errors import SessionFormatError, one_line

CLUSTER_GROUP_TSV = "cluster_group.tsv"  # phy's curation
CLUSTER_KS_LABEL_TSV = "cluster_KSLabel.tsv"
CLUSTER_INFO_TSV = "cluster_info.tsv"
CLUSTER_TABLES = (CLUSTER_GROUP_TSV, CLUSTER_KS_LABEL_TSV, CLUSTER_INFO_TSV)
PULSES_FILES = ("pulses.csv", "pulses.tsv")

# the pulses table's columns
PULSE_ONSET_S = "onset_s"
PULSE_ONSET_SAMPLE = "onset_sample"
PULSE_DURATION = "duration_s"
PULSE_EMITTER = "emitter"
PULSE_POWER = "power_mw"
PULSE_WAVELENGTH = "wavelength_nm"
PULSE_REQUIRED = (PULSE_DURATION, PULSE_EMITTER, PULSE_POWER)


# --------------------------------------------------------------------------
# params.py, as data
# --------------------------------------------------------------------------
def read_params(path: str | os.PathLike) -> dict[str, Any]:
    """The literal assignments of a ``params.py``, never executed.

    Raises
    ------
    SessionFormatError
        Anything but ``name = literal`` statements (calls, imports, names,
        attribute access, ...), or no positive finite ``sample_rate``.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "params.py"
    >>> _ = p.write_text("dat_path = 'raw.bin'\\nsample_rate = 30000.0\\nhp_filtered = False\\n")
    >>> read_params(p)["sample_rate"]
    30000.0
    >>> _ = p.write_text("sample_rate = __import__('os').getpid()\\n")
    >>> read_params(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    opto_cube.errors.SessionFormatError: ...params.py: line 1: only literal assignments are read ...
    """
    path = Path(path)
    params, _ = read_params_hashed(path)
    return params


def read_params_hashed(path: Path) -> tuple[dict[str, Any], str]:
    data = path.read_bytes()
    try:
        tree = ast.parse(data.decode("utf-8-sig"), filename=str(path))
    except (UnicodeDecodeError, SyntaxError, ValueError) as e:
        raise SessionFormatError(path, f"not readable as Python literals ({one_line(e)})") from e
    params: dict[str, Any] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and _is_literal(node.value)
        ):
            params[node.targets[0].id] = ast.literal_eval(node.value)
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # a docstring
        raise SessionFormatError(
            path,
            f"line {getattr(node, 'lineno', '?')}: only literal assignments are read (name = number, string, ...);"
            " this file is never executed: write the value itself",
        )
    rate = params.get("sample_rate")
    if rate is None:
        raise SessionFormatError(path, "no sample_rate: add 'sample_rate = 30000.0' (Hz)")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise SessionFormatError(path, f"sample_rate must be a positive number of Hz, found {rate!r}")
    params["sample_rate"] = float(rate)
    return params, hashlib.sha256(data).hexdigest()


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


# --------------------------------------------------------------------------
# Tables (cluster_*.tsv, pulses.csv)
# --------------------------------------------------------------------------
def _read_table(path: Path, sha: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV / TSV file (tab-separated if its header holds a tab)."""
    data = path.read_bytes()
    sha[path.name] = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SessionFormatError(path, "not UTF-8 text") from e
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first or path.suffix == ".tsv" else ","
    rows = [r for r in csv.reader(_io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
    if not rows:
        raise SessionFormatError(path, "empty: expected a header row")
    header = [c.strip() for c in rows[0]]
    for i, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise SessionFormatError(path, f"row {i + 2} has {len(row)} fields but the header has {len(header)}")
    return header, [[c.strip() for c in r] for r in rows[1:]]


def cluster_tables(folder: Path, sha: dict[str, str]) -> tuple[dict[int, str], dict[int, str]]:
    """phy's curated ``group`` and Kilosort's ``KSLabel`` per cluster id, from whichever tables exist."""
    group: dict[int, str] = {}
    ks_label: dict[int, str] = {}
    for name in (CLUSTER_INFO_TSV, CLUSTER_KS_LABEL_TSV, CLUSTER_GROUP_TSV):  # the later ones win
        path = folder / name
        if not path.is_file():
            continue
        header, rows = _read_table(path, sha)
        id_col = next((header.index(c) for c in ("cluster_id", "id") if c in header), None)
        if id_col is None:
            raise SessionFormatError(path, f"no cluster_id column (found {header})")
        columns = {"group": group, "KSLabel": ks_label}
        if name == CLUSTER_GROUP_TSV and "group" not in header and len(header) == 2:
            header = [header[0], "group"]  # older phy wrote a second column of another name
        for i, row in enumerate(rows):
            try:
                cid = int(row[id_col])
            except ValueError:
                raise SessionFormatError(
                    path, f"row {i + 2}: cluster id {row[id_col]!r} is not a whole number"
                ) from None
            if cid < 0:
                raise SessionFormatError(path, f"row {i + 2}: negative cluster id {cid}")
            for column, target in columns.items():
                if column in header and row[header.index(column)]:
                    target[cid] = row[header.index(column)]
    return group, ks_label


def _number(text: str, path: Path, row: int, column: str, *, whole: bool = False) -> float:
    try:
        value = float(text)  # Python's float parses decimal text to the nearest double: the text round-trips
    except ValueError:
        raise SessionFormatError(path, f"row {row}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SessionFormatError(path, f"row {row}: {column} {text!r} is not finite")
    if value < 0:
        raise SessionFormatError(path, f"row {row}: negative {column} {text!r}")
    if whole and value != math.floor(value):
        raise SessionFormatError(path, f"row {row}: {column} {text!r} is not a whole number")
    return value


def read_pulses(path: str | os.PathLike, sample_rate: float, sha: dict[str, str] | None = None) -> dict[str, Any]:
    """The pulses table as trial arrays named as the cube's (``onset_s``, ``emitter``, ``power_mw``, ``duration_s``).

    ``onset_s`` text is parsed by Python's ``float`` (correctly rounded: the
    text round-trips exactly); ``onset_sample`` (whole samples) becomes
    ``onset_sample / sample_rate``. Also returns ``wavelength_nm`` when given.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "pulses.csv"
    >>> _ = p.write_text("onset_s,duration_s,emitter,power_mw\\n12.3456,0.01,3,1.5\\n")
    >>> read_pulses(p, 30000.0)["onset_s"]
    array([12.3456])
    """
    path = Path(path)
    header, rows = _read_table(path, {} if sha is None else sha)
    onset_col = (
        PULSE_ONSET_S if PULSE_ONSET_S in header else PULSE_ONSET_SAMPLE if PULSE_ONSET_SAMPLE in header else None
    )
    missing = [c for c in PULSE_REQUIRED if c not in header] + (
        [] if onset_col else [f"{PULSE_ONSET_S} (or {PULSE_ONSET_SAMPLE})"]
    )
    if missing:
        raise SessionFormatError(path, f"missing column(s) {', '.join(missing)}; found {header}")
    if not rows:
        raise SessionFormatError(path, "no pulses (no rows after the header)")
    assert onset_col is not None
    col = {name: header.index(name) for name in header}
    n = len(rows)
    onset = np.empty(n, np.float64)
    emitter = np.empty(n, np.int64)
    power = np.empty(n, np.float64)
    duration = np.empty(n, np.float64)
    wavelength = np.empty(n, np.float64) if PULSE_WAVELENGTH in col else None
    for i, row in enumerate(rows):
        r = i + 2
        if onset_col == PULSE_ONSET_S:
            onset[i] = _number(row[col[PULSE_ONSET_S]], path, r, PULSE_ONSET_S)
        else:
            onset[i] = int(_number(row[col[PULSE_ONSET_SAMPLE]], path, r, PULSE_ONSET_SAMPLE, whole=True)) / sample_rate
        e = _number(row[col[PULSE_EMITTER]], path, r, PULSE_EMITTER, whole=True)
        if not 1 <= e <= schema.N_EMITTERS:
            raise SessionFormatError(
                path, f"row {r}: emitter {row[col[PULSE_EMITTER]]!r} outside 1..{schema.N_EMITTERS}"
            )
        emitter[i] = int(e)
        power[i] = _number(row[col[PULSE_POWER]], path, r, PULSE_POWER)
        duration[i] = _number(row[col[PULSE_DURATION]], path, r, PULSE_DURATION)
        if duration[i] <= 0:
            raise SessionFormatError(
                path, f"row {r}: {PULSE_DURATION} must be positive, found {row[col[PULSE_DURATION]]!r}"
            )
        if wavelength is not None:
            wavelength[i] = _number(row[col[PULSE_WAVELENGTH]], path, r, PULSE_WAVELENGTH)
    out: dict[str, Any] = {schema.ONSET: onset, schema.EMITTER: emitter, schema.POWER: power, schema.DURATION: duration}
    if wavelength is not None:
        out[PULSE_WAVELENGTH] = wavelength
    return out


def find_pulses_file(folder: Path) -> Path:
    for name in PULSES_FILES:
        if (folder / name).is_file():
            return folder / name
    raise SessionFormatError(
        folder / PULSES_FILES[0],
        "missing: a Kilosort session needs its light pulses as pulses.csv (onset_s or onset_sample,"
        " duration_s, emitter, power_mw)",
    )
