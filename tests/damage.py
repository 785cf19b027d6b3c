"""Single damages to a LeRobot dataset written by `lerobot_fixtures`, each returning what it broke.

Every function changes one thing on disk and returns a short description of the
damage (file and episode/frame) so a test can check that the failure names it.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def drop_video_frame(path: Path, drop: int) -> None:
    """Re-encode an mp4 without frame `drop`, every other frame keeping its timestamp (a gap)."""
    with av.open(str(path)) as src:
        stream = src.streams.video[0]
        fps = int(round(float(stream.average_rate)))
        codec = stream.codec_context.name
        images = [f.to_ndarray(format="rgb24") for f in src.decode(stream)]
    encoder = {"av1": "libsvtav1", "libdav1d": "libsvtav1"}.get(codec, "libx264")
    with av.open(str(path), "w") as dst:
        out = dst.add_stream(encoder, rate=fps, options={"g": "8"})
        out.width, out.height = images[0].shape[1], images[0].shape[0]
        out.pix_fmt = "yuv420p"
        for i, image in enumerate(images):
            if i == drop:
                continue
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in out.encode(frame):
                dst.mux(packet)
        for packet in out.encode():
            dst.mux(packet)


def v3_meta(root: Path) -> Path:
    return root / "meta/episodes/chunk-000/file-000.parquet"


def drop_metadata_row(root: Path, episode: int) -> Path:
    """Remove an episode's metadata entry (v3 parquet row or v2.1 jsonl line); its data rows stay."""
    if (root / "meta/episodes.jsonl").exists():
        path = root / "meta/episodes.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["episode_index"] != episode))
        return path
    path = v3_meta(root)
    table = pq.read_table(path)
    pq.write_table(table.filter(pc.not_equal(table["episode_index"], episode)), path)
    return path


def data_file_of(root: Path, episode: int) -> Path:
    for path in sorted((root / "data").rglob("*.parquet")):
        if episode in pq.read_table(path, columns=["episode_index"])["episode_index"].to_pylist():
            return path
    raise AssertionError(f"no data file holds episode {episode}")


def drop_data_rows(root: Path, episode: int) -> Path:
    """Remove an episode's rows from its data parquet (the metadata still lists it)."""
    path = data_file_of(root, episode)
    table = pq.read_table(path)
    pq.write_table(table.filter(pc.not_equal(table["episode_index"], episode)), path)
    return path


def set_value(root: Path, episode: int, column: str, frame: int, value: float) -> Path:
    """Overwrite one element of a vector column (e.g. a NaN action)."""
    path = data_file_of(root, episode)
    table = pq.read_table(path)
    rows = table[column].to_pylist()
    hit = next(i for i, (e, f) in enumerate(zip(table["episode_index"].to_pylist(),
                                                table["frame_index"].to_pylist())) if e == episode and f == frame)
    rows[hit][0] = value
    table = table.set_column(table.schema.get_field_index(column), column,
                             pa.array(rows, type=table.schema.field(column).type))
    pq.write_table(table, path)
    return path


def drop_column(path: Path, column: str) -> None:
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([column]), path)


def set_v3_meta(root: Path, episode: int, column: str, value) -> Path:
    path = v3_meta(root)
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        if row["episode_index"] == episode:
            row[column] = value
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def mean_levels(frames: np.ndarray) -> list[float]:
    return [float(f.mean()) for f in frames]
