"""Small readers for the files of a LeRobot dataset (json, jsonl, parquet columns).

Each raises `DatasetError` naming the file (and the row or column) that is not
what a LeRobot reader expects, so `stages.lerobot` can stay about layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


class DatasetError(ValueError):
    """The dataset on disk is not what a LeRobot reader expects."""


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from err


def read_jsonl(path: Path) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, ValueError) as err:  # e.g. a damaged byte that is not UTF-8
        raise DatasetError(f"{path}: unreadable ({err})") from err
    rows = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as err:
                raise DatasetError(f"{path}:{number}: not valid JSON ({err})") from err
    return rows


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        if columns is not None:
            present = set(pq.read_schema(path).names)
            missing = [c for c in columns if c not in present]
            if missing:
                raise DatasetError(f"{path}: missing columns {missing}")
        return pq.read_table(path, columns=columns)
    except DatasetError:
        raise
    except Exception as err:  # ArrowInvalid, OSError: truncated or not parquet
        raise DatasetError(f"{path}: unreadable parquet ({err})") from err


def require(row: dict, key: str, path: Path):
    if key not in row:
        raise DatasetError(f"{path}: a row lacks {key!r}: {row}")
    return row[key]


def first_task(tasks, path: Path, index: int) -> str:
    if isinstance(tasks, str):
        return tasks
    if not tasks:
        raise DatasetError(f"{path}: episode {index} has no task")
    return str(tasks[0])


def ordered_tasks(pairs: list[tuple[int, str]], path: Path) -> list[str]:
    """Task texts as a list whose position is the task_index (must be 0..n-1)."""
    by_index = {int(i): t for i, t in pairs}
    if sorted(by_index) != list(range(len(pairs))):
        raise DatasetError(f"{path}: task_index values must be 0..{len(pairs) - 1}, got {sorted(by_index)}")
    return [by_index[i] for i in range(len(pairs))]


def sorted_episodes(episodes: list, where: Path) -> list:
    """Episodes by index; duplicates refused."""
    episodes.sort(key=lambda e: e.index)
    indices = [e.index for e in episodes]
    if len(set(indices)) != len(indices):
        raise DatasetError(f"{where}: duplicate episode_index values")
    return episodes


def scalars(table: pa.Table, name: str, dtype, path: Path) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        raise DatasetError(f"{path}: column {name!r} has {column.null_count} nulls")
    return column.to_numpy().astype(dtype, copy=False)


def vectors(table: pa.Table, name: str, path: Path) -> np.ndarray:
    """A list-typed (fixed or variable size) column as a float32 [rows, dim] array."""
    column = table.column(name).combine_chunks()
    if column.null_count:
        raise DatasetError(f"{path}: column {name!r} has {column.null_count} nulls")
    rows = len(column)
    if not (pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type)
            or pa.types.is_large_list(column.type)):
        return column.to_numpy().astype(np.float32).reshape(rows, 1)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if rows and (lengths != lengths[0]).any():
        raise DatasetError(f"{path}: column {name!r} has rows of different lengths {sorted(set(lengths))}")
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(rows, -1 if rows else 0)
