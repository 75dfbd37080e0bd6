"""Tidy parquet results with provenance: the one reader and writer.

A results file holds one row per (run, epoch) and the experiment's metadata
(config, package versions, git commit, devices, wall time) as JSON in the
parquet schema metadata; finer tables (per layer, sampled weights) go to
files beside it, and weights a program keeps (Q4's pretrained networks) to
`NAME-params.<tag>.npz`.

A write is a transaction. Its tables and weights go to new files whose
names carry the write's tag (`NAME-layers.<tag>.parquet`), so the previous
set stays whole beside them; the main file `NAME.parquet`, which names the
write, is renamed into place last: that one atomic rename is the commit.
Files of other writes (the replaced set, or a killed write's leftovers) are
removed after it, and a failed write removes its own. A reader thus sees the
complete old set or the complete new one, never a mix.

`read` checks every file against the schema the analyses rely on, so a
malformed file is one line of error before anything is drawn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"study"
COMPRESSION, LEVEL = "zstd", 15  # the committed results: 18.8 MB at 15, 20.0 MB at 3 (4 s more to write)
TAG_LENGTH = 8  # hex digits of the write id in the names of a write's side files


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
    """Raise OSError unless files can be created in `folder`; the folders
    made to find out are removed again, so a check leaves nothing behind."""
    folder = Path(folder).absolute()
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    finally:
        for path in made:
            with contextlib.suppress(OSError):
                path.rmdir()


@dataclasses.dataclass
class Results:
    """An experiment's results: `frame` has one row per (run, epoch);
    `tables` holds finer-grained frames by name (e.g. "layers", "weights"),
    each written beside the main file as `NAME-<table>.<tag>.parquet`;
    `params` holds kept weights by name (leading axis: seed), in
    `NAME-params.<tag>.npz`."""

    frame: pd.DataFrame
    metadata: dict
    tables: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)
    params: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def table_path(path: Path, table: str, write_id: str, suffix: str = ".parquet") -> Path:
    """The file of one table of the write `write_id`."""
    return Path(path).with_name(f"{Path(path).stem}-{table}.{write_id[:TAG_LENGTH]}{suffix}")


def params_path(path: Path, write_id: str) -> Path:
    return table_path(path, "params", write_id, ".npz")


def side_files(path: Path) -> list[tuple[Path, str | None]]:
    """The experiment's tables, weights and temporary files beside `path`,
    each with its write's tag (None for a temporary or an untagged file)."""
    name = re.escape(Path(path).stem)
    side = re.compile(rf"{name}-[\w-]+(?:\.([0-9a-f]{{{TAG_LENGTH}}}))?\.(?:parquet|npz)")
    temporary = re.compile(rf"\.{name}[-.].*\.tmp")
    found = []
    for file in Path(path).parent.iterdir() if Path(path).parent.is_dir() else ():
        if match := side.fullmatch(file.name):
            found.append((file, match.group(1)))
        elif temporary.fullmatch(file.name):
            found.append((file, None))
    return found


def remove(files) -> None:
    """Best effort: a file left behind is removed by the next write."""
    for file in files:
        with contextlib.suppress(OSError):
            file.unlink()


def write_frame(path: Path, frame: pd.DataFrame, metadata) -> None:
    """The frame as zstd parquet, its floats byte-stream split rather than
    dictionary-encoded (a third smaller: their bytes compress apart), with
    `metadata` as JSON in the schema."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**table.schema.metadata, METADATA_KEY: json.dumps(metadata)})
    floats = [field.name for field in table.schema if pa.types.is_floating(field.type)]
    others = [name for name in table.column_names if name not in floats]
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp, compression=COMPRESSION, compression_level=LEVEL,
                                                        use_dictionary=others, use_byte_stream_split=floats or False))


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


def committed_id(path: Path) -> str | None:
    """The write id the main file names, None when there is none to read."""
    with contextlib.suppress(pa.ArrowException, OSError, KeyError, TypeError, ValueError, AttributeError):
        return json.loads(pq.read_schema(path).metadata[METADATA_KEY])["write_id"]
    return None


def write(path: Path, results: Results) -> None:
    """Every file of the write under its tag, then the main file (the
    commit), then the files of other writes removed; on failure, this
    write's own files are removed and the previous set stays as it was."""
    path = Path(path)
    write_id = uuid.uuid4().hex
    tag = write_id[:TAG_LENGTH]
    metadata = {**results.metadata, "tables": sorted(results.tables), "params": sorted(results.params),
                "write_id": write_id}
    try:
        for name, frame in results.tables.items():
            write_frame(table_path(path, name, write_id), frame, metadata)
        if results.params:
            def save(tmp):
                with open(tmp, "wb") as f:
                    np.savez(f, **results.params, write_id=np.array(write_id))

            atomic_write(params_path(path, write_id), save)
        write_frame(path, results.frame, metadata)
    except BaseException:
        if committed_id(path) != write_id:  # not interrupted after the commit
            remove(file for file, file_tag in side_files(path) if file_tag == tag)
        raise
    remove(file for file, file_tag in side_files(path) if file_tag != tag)


NUMBER = (int, float)
METADATA = {  # what the analyses and the report read from a results file's metadata, by key: type or keys
    "experiment": str, "config": {"seeds": int, "tuning_seeds": int, "quick": bool, "epochs": (int, type(None))},
    "programs": list,
    "versions": dict, "git_commit": str, "wall_time_s": NUMBER, "write_id": str, "tables": list, "params": list,
    "devices": {"platform": str, "kind": str, "count": int, "xla_flags": str},
}
PROGRAM = {"label": str, "setup": {"epochs": int}, "runs": int, "model": list, "compile_s": NUMBER, "train_s": NUMBER}
REQUIRED_COLUMNS = ("seed", "role", "epoch", "test_acc")  # of every main frame
WHOLE = ("seed", "epoch")  # whole numbers wherever they appear
NUMERIC = ("_acc", "_loss")  # suffixes of columns that hold numbers; accuracies lie in [0, 1]


def malformed(path: Path, problem: str) -> ResultsError:
    return ResultsError(f"{path} {problem}; run `study run {Path(path).stem.split('-')[0]}` again")


def check_keys(path: Path, where: str, value, schema: dict) -> None:
    """A one-line ResultsError unless `value` is an object with every key of
    `schema`, each of its type (a dict in `schema`: the keys it must hold)."""
    if not isinstance(value, dict):
        raise malformed(path, f"has {where} that is a JSON {type(value).__name__}, not an object")
    for key, kind in schema.items():
        if key not in value:
            raise malformed(path, f"has {where} without {key!r}")
        if isinstance(kind, dict):
            check_keys(path, f"{where} {key!r}", value[key], kind)
        elif not isinstance(value[key], kind) or (kind is not bool and isinstance(value[key], bool)):
            raise malformed(path, f"has {where} {key!r} of type {type(value[key]).__name__}")


def check_metadata(path: Path, metadata) -> None:
    check_keys(path, "metadata", metadata, METADATA)
    for i, program in enumerate(metadata["programs"], 1):
        check_keys(path, f"metadata program {i}", program, PROGRAM)
    texts = [*metadata["versions"].values(), *metadata["tables"], *metadata["params"]]
    if not all(isinstance(text, str) for text in texts):
        raise malformed(path, "has metadata versions, tables or params that are not text")


def check_frame(path: Path, frame: pd.DataFrame, main: bool) -> None:
    """Rows, the required columns, whole seeds and epochs, numeric metrics,
    accuracies as fractions, and test accuracies that are not all missing."""
    for column in REQUIRED_COLUMNS if main else ():
        if column not in frame:
            raise malformed(path, f"lacks the column {column!r}")
    if frame.empty:
        raise malformed(path, "has no rows")
    for column in frame.columns:
        values = frame[column]
        if column in WHOLE and not pd.api.types.is_integer_dtype(values):
            raise malformed(path, f"has {column}s that are not whole numbers")
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if str(column).endswith(NUMERIC) and not numeric:
            raise malformed(path, f"has a column {column!r} of {values.dtype} values, not numbers")
        if str(column).endswith("_acc") and not values.dropna().between(0, 1).all():
            raise malformed(path, f"has {column} values outside [0, 1] (largest {values.max():g}; percentages?)")
    if main and frame["test_acc"].isna().all():
        raise malformed(path, "has no test_acc values (all missing)")


def check_last_epochs(path: Path, frame: pd.DataFrame, metadata: dict) -> None:
    """Each run (the columns before `epoch`) has epochs 1, 2, ... up to the
    epochs of one of its experiment's programs: a run cut short is caught."""
    keys = list(frame.columns[:frame.columns.get_loc("epoch")]) or np.zeros(len(frame), int)
    runs = frame.groupby(keys, dropna=False, sort=False, observed=True)["epoch"].agg(["min", "max", "size", "nunique"])
    configured = {program["setup"]["epochs"] for program in metadata["programs"]}
    whole = runs["min"].eq(1) & runs["max"].eq(runs["size"]) & runs["size"].eq(runs["nunique"])
    cut = ~(whole & runs["max"].isin(configured))
    if cut.any():
        raise malformed(path, f"has {cut.sum():,} of {len(runs):,} runs without every epoch up to their last "
                              f"(the programs train {', '.join(map(str, sorted(configured)))} epochs)")


def read_params(path: Path, metadata: dict) -> dict[str, np.ndarray]:
    """The kept weights, checked to come from the main file's write."""
    file = params_path(path, metadata["write_id"])
    try:
        with np.load(file) as kept:
            write_id = str(kept["write_id"]) if "write_id" in kept else None
            params = {name: kept[name] for name in metadata["params"]}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ResultsError(f"{file} is missing or not this run's weights ({type(err).__name__}); "
                           f"run `study run {path.stem}` again") from None
    same_write(path, file, metadata, write_id)
    return params


def read_set(path: Path, frame: pd.DataFrame, metadata: dict) -> Results:
    """The tables and weights the main file names, every file checked."""
    tables = {}
    for name in metadata["tables"]:
        file = table_path(path, name, metadata["write_id"])
        tables[name], table_metadata = read_frame(file)
        same_write(path, file, metadata, table_metadata.get("write_id") if isinstance(table_metadata, dict) else None)
    params = read_params(path, metadata) if metadata["params"] else {}
    for name, table in {"": frame, **tables}.items():
        check_frame(table_path(path, name, metadata["write_id"]) if name else path, table, main=not name)
    check_last_epochs(path, frame, metadata)
    return Results(frame, metadata, tables, params)


def read(path: Path) -> Results:
    """An experiment's files, checked to come from one write and to match
    the schema; read again once if a write committed meanwhile (its commit
    removes the files of the set being read)."""
    path = Path(path)
    for attempt in (1, 2):
        frame, metadata = read_frame(path)
        check_metadata(path, metadata)
        try:
            return read_set(path, frame, metadata)
        except ResultsError:
            if attempt == 2 or committed_id(path) == metadata["write_id"]:
                raise


def same_write(path: Path, other: Path, metadata: dict, write_id: str | None) -> None:
    if write_id != metadata.get("write_id"):
        raise ResultsError(f"{other.name} and {path.name} come from different runs; "
                           f"run `study run {path.stem}` again")


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
