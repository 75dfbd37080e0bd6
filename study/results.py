"""Tidy parquet results with provenance: the one reader and writer.

A results file holds one row per (run, epoch) and the experiment's metadata
(config, package versions, git commit, devices, wall time) as JSON in the
parquet schema metadata; finer tables (per layer, sampled weights) go to
files beside it, and weights a program keeps (Q4's pretrained networks) to
`NAME-params.npz`. Files are written to a temporary name and renamed,
so an interrupted run leaves the previous file, never a corrupt one; the
files of one write share a `write_id`, which `read` checks, so a run killed
between two renames is caught instead of read as a mix of two runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"study"


class ResultsError(ValueError):
    """A results file is missing or not one this package wrote."""


def path_for(out: Path, name: str) -> Path:
    return Path(out) / "results" / f"{name}.parquet"


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` and move the file into place only if it
    succeeds; temporary files a killed write left beside it are removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from other users
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_writable(folder: Path) -> None:
    """Raise OSError unless files can be created in `folder` (made if missing)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
        pass


@dataclasses.dataclass
class Results:
    """An experiment's results: `frame` has one row per (run, epoch);
    `tables` holds finer-grained frames by name (e.g. "layers", "weights"),
    each written beside the main file as `NAME-<table>.parquet`; `params`
    holds kept weights by name (leading axis: seed), in `NAME-params.npz`."""

    frame: pd.DataFrame
    metadata: dict
    tables: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)
    params: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def table_path(path: Path, table: str, suffix: str = ".parquet") -> Path:
    return Path(path).with_name(f"{Path(path).stem}-{table}{suffix}")


def params_path(path: Path) -> Path:
    return table_path(path, "params", ".npz")


def write_frame(path: Path, frame: pd.DataFrame, metadata: dict) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**table.schema.metadata, METADATA_KEY: json.dumps(metadata)})
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp))


def read_frame(path: Path) -> tuple[pd.DataFrame, dict]:
    """The frame and metadata of one parquet file, or a one-line ResultsError."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"no results file {path}; run `study run {path.stem.split('-')[0]}` first")
    try:
        table = pq.read_table(path)
        metadata = json.loads(table.schema.metadata[METADATA_KEY])
    except (pa.ArrowException, OSError, KeyError, TypeError, ValueError) as err:
        raise ResultsError(f"{path} is not a results file of this package ({type(err).__name__})") from None
    return table.to_pandas(), metadata


def write(path: Path, results: Results) -> None:
    """The tables and kept weights first, the main file (which lists them) last."""
    metadata = {**results.metadata, "tables": sorted(results.tables), "params": sorted(results.params),
                "write_id": uuid.uuid4().hex}
    for name, frame in results.tables.items():
        write_frame(table_path(path, name), frame, metadata)
    if results.params:
        def save(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **results.params, write_id=np.array(metadata["write_id"]))

        atomic_write(params_path(path), save)
    write_frame(path, results.frame, metadata)


def read(path: Path) -> Results:
    """An experiment's files, checked to come from one write and to hold rows."""
    path = Path(path)
    frame, metadata = read_frame(path)
    tables = {}
    for name in metadata.get("tables", []):
        tables[name], table_metadata = read_frame(table_path(path, name))
        same_write(path, table_path(path, name), metadata, table_metadata.get("write_id"))
    params = {}
    if metadata.get("params"):
        try:
            with np.load(params_path(path)) as kept:
                write_id = str(kept["write_id"]) if "write_id" in kept else None
                params = {name: kept[name] for name in metadata["params"]}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise ResultsError(f"{params_path(path)} is missing or not this run's weights ({type(err).__name__}); "
                               f"run `study run {path.stem}` again") from None
        same_write(path, params_path(path), metadata, write_id)
    for name, table in {"": frame, **tables}.items():
        if table.empty or ("epoch" in table and not pd.api.types.is_integer_dtype(table["epoch"])):
            where = table_path(path, name) if name else path
            raise ResultsError(f"{where} has no rows or epochs that are not whole numbers; "
                               f"run `study run {path.stem}` again")
    return Results(frame, metadata, tables, params)


def same_write(path: Path, other: Path, metadata: dict, write_id: str | None) -> None:
    if write_id != metadata.get("write_id"):
        raise ResultsError(f"{other.name} and {path.name} come from different runs (one was interrupted "
                           f"while writing); run `study run {path.stem}` again")


TIMINGS = ("step_time_s",)  # columns that differ between any two runs


def differences(a: Results, b: Results):
    """(table, column, largest absolute difference) for every numeric column
    of two results of one grid, timings excepted ("" is the main table);
    NaN where exactly one of them is NaN counts as an infinite difference.
    Results of different grids are a ResultsError."""
    if sorted(a.tables) != sorted(b.tables):
        raise ResultsError(f"the results hold different tables ({sorted(a.tables)} and {sorted(b.tables)})")
    for table in ["", *a.tables]:
        left, right = (a.frame, b.frame) if not table else (a.tables[table], b.tables[table])
        if left.shape != right.shape:
            raise ResultsError(f"the results come from different grids ({table or 'main'} table: "
                               f"{left.shape[0]:,} and {right.shape[0]:,} rows); rerun `study run` first")
        for column in left.select_dtypes("number").columns.difference(TIMINGS, sort=False):
            x, y = (np.asarray(f[column], dtype=float) for f in (left, right))
            same = (x == y) | (np.isnan(x) & np.isnan(y))  # equal infinities too
            with np.errstate(invalid="ignore"):
                gap = np.where(same, 0.0, np.abs(x - y))
            yield table, column, float(np.nan_to_num(gap, nan=np.inf).max(initial=0.0))
