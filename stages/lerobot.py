"""Read LeRobot datasets (v2.x one-file-per-episode and v3.0 many-episodes-per-file).

The reader resolves every episode to where its rows and video frames live,
reads frame tables with pyarrow (only the needed columns, one open data file
cached so a v3 file holding many episodes is parsed once), decodes images
through `stages.video`, and fingerprints the source for the content-addressed
cache. Bad input raises `DatasetError` naming the file or key; nothing is
silently skipped.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np

from stages import video
from stages.lerobot_episode import Episode, EpisodeFrames, VideoSegment
from stages.lerobot_files import (
    DatasetError,
    first_task,
    ordered_tasks,
    read_json,
    read_jsonl,
    read_parquet,
    require,
    scalars,
    sorted_episodes,
    vectors,
)

__all__ = ["DatasetError", "Episode", "EpisodeFrames", "LeRobotDataset", "VideoSegment"]

V2_VERSIONS = ("v2.0", "v2.1")
V3_VERSIONS = ("v3.0",)
_HASH_CHUNK = 1 << 20


class LeRobotDataset:
    def __init__(
        self,
        root: str | Path,
        cameras: list[str] | None = None,
        state_key: str = "observation.state",
        action_key: str = "action",
    ):
        self.root = Path(root)
        self.info = read_json(self.root / "meta/info.json")
        self.version = self.info.get("codebase_version")
        if self.version not in V2_VERSIONS + V3_VERSIONS:
            raise DatasetError(
                f"{self.root / 'meta/info.json'}: unknown codebase_version {self.version!r}; "
                f"expected one of {V2_VERSIONS + V3_VERSIONS}"
            )
        self.fps = float(self._info_field("fps"))
        features = self._info_field("features")
        if state_key not in features:
            raise DatasetError(f"{self.root}: no feature {state_key!r}; features are {sorted(features)}")
        self.state_key, self.action_key = state_key, action_key
        # action-free video (e.g. a pretraining corpus): actions read as [T, 0]; training on them is refused
        self.has_actions = action_key in features
        self.camera_keys = self._select_cameras(features, cameras)
        if self.version in V3_VERSIONS:
            self.tasks = self._read_tasks_v3()
            self.episodes = self._read_episodes_v3()
        else:
            self.tasks = self._read_tasks_v2()
            self.episodes = self._read_episodes_v2()
        self._check_files_exist()
        self._open_data: tuple[Path, dict[str, np.ndarray]] | None = None
        self._file_hashes: dict[Path, str] = {}
        self._decoders: dict[Path, str] = {}
        self.data_file_reads = 0  # parquet files parsed so far (caching is observable)

    # ---- public API -------------------------------------------------------

    def frames(self, episode: Episode) -> EpisodeFrames:
        """The episode's rows, in order, with the row count checked against its length."""
        columns = self._data_file(episode.data_path)
        rows = np.flatnonzero(columns["episode_index"] == episode.index)
        if len(rows) != episode.length:
            raise DatasetError(
                f"{episode.data_path}: episode {episode.index} has {len(rows)} rows, "
                f"metadata says length {episode.length}"
            )
        frame_index = columns["frame_index"][rows]
        if not np.array_equal(frame_index, np.arange(episode.length)):
            raise DatasetError(
                f"{episode.data_path}: episode {episode.index} frame_index is not 0..{episode.length - 1}"
            )
        return EpisodeFrames(
            timestamp=columns["timestamp"][rows],
            frame_index=frame_index,
            state=columns[self.state_key][rows],
            action=columns[self.action_key][rows],
        )

    def read_images(self, episode: Episode, camera: str, frame_indices: np.ndarray) -> np.ndarray:
        """Decoded RGB frames uint8 [N, H, W, 3] of `camera` at the episode's frame indices."""
        self._check_camera(camera)
        frame_indices = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
        if frame_indices.size and (frame_indices.min() < 0 or frame_indices.max() >= episode.length):
            raise DatasetError(
                f"episode {episode.index}: frame indices must lie in [0, {episode.length}), "
                f"got [{frame_indices.min()}, {frame_indices.max()}]"
            )
        segment = episode.videos[camera]
        if not segment.path.is_file():
            raise DatasetError(f"{segment.path}: file not found (episode {episode.index}, camera {camera!r})")
        timestamps = segment.from_timestamp + self.frames(episode).timestamp[frame_indices]
        try:
            if segment.path not in self._decoders:
                self._decoders[segment.path] = video.decoder_for(segment.path)
            return video.read_frames(segment.path, timestamps, decoder=self._decoders[segment.path])
        except video.VideoError as err:
            raise DatasetError(f"episode {episode.index}, camera {camera!r}: {err}") from err

    @property
    def decoder_counts(self) -> dict[str, int]:
        """Video files read so far per decoder ("decord" / "pyav"), for the run summary."""
        return dict(Counter(self._decoders.values()))

    def fingerprint(self) -> str:
        """sha256 over meta files and every data/video file's size and content hash.

        Paths are relative to the root, so a copied dataset keeps its identity.
        Videos of cameras not selected are left out: they cannot affect a cache
        built from this instance (the camera list belongs in the cache key).
        """
        digest = hashlib.sha256()
        meta = sorted(p for p in (self.root / "meta").rglob("*") if p.is_file())
        files = sorted(set(meta) | self._data_and_video_files())
        for path in files:
            rel = path.relative_to(self.root).as_posix()
            if not path.is_file():  # a missing video is part of the identity too
                digest.update(f"{rel}\0missing\n".encode())
                continue
            digest.update(f"{rel}\0{path.stat().st_size}\0{self._file_hash(path)}\n".encode())
        return digest.hexdigest()

    # ---- metadata ---------------------------------------------------------

    def _info_field(self, key: str):
        if key not in self.info:
            raise DatasetError(f"{self.root / 'meta/info.json'}: missing field {key!r}")
        return self.info[key]

    def _select_cameras(self, features: dict, cameras: list[str] | None) -> list[str]:
        available = [k for k, f in features.items() if f.get("dtype") == "video"]
        self._available_cameras = available
        if not cameras:
            return available
        for camera in cameras:
            self._check_camera(camera, available)
        return list(cameras)

    def _check_camera(self, camera: str, allowed: list[str] | None = None) -> None:
        allowed = self.camera_keys if allowed is None else allowed
        if camera not in allowed:
            raise DatasetError(
                f"{self.root}: unknown camera key {camera!r}; available video keys: {allowed}"
            )

    def _path(self, template_key: str, **fields) -> Path:
        template = self._info_field(template_key)
        try:
            return self.root / template.format(**fields)
        except (KeyError, IndexError, ValueError) as err:
            raise DatasetError(
                f"{self.root / 'meta/info.json'}: cannot fill {template_key} {template!r} ({err})"
            ) from err

    def _task_index(self, text: str, where: str) -> int:
        try:
            return self.tasks.index(text)
        except ValueError:
            raise DatasetError(f"{where}: task {text!r} is not in the tasks table") from None

    def _read_tasks_v2(self) -> list[str]:
        path = self.root / "meta/tasks.jsonl"
        pairs = [(require(row, "task_index", path), require(row, "task", path)) for row in read_jsonl(path)]
        return ordered_tasks(pairs, path)

    def _read_tasks_v3(self) -> list[str]:
        path = self.root / "meta/tasks.parquet"
        frame = read_parquet(path).to_pandas()  # restores LeRobot's task-text index
        if "task_index" not in frame.columns:
            raise DatasetError(f"{path}: expected a 'task_index' column, found {list(frame.columns)}")
        if "task" in frame.columns:
            texts = frame["task"]
        elif "__index_level_0__" in frame.columns:  # index column without pandas metadata
            texts = frame["__index_level_0__"]
        else:
            texts = frame.index
        return ordered_tasks(list(zip(frame["task_index"].tolist(), [str(t) for t in texts])), path)

    def _read_episodes_v2(self) -> list[Episode]:
        path = self.root / "meta/episodes.jsonl"
        chunks_size = int(self._info_field("chunks_size"))
        episodes = []
        for row in read_jsonl(path):
            index, length = int(require(row, "episode_index", path)), int(require(row, "length", path))
            task = first_task(require(row, "tasks", path), path, index)
            chunk = index // chunks_size
            fields = dict(episode_chunk=chunk, chunk_index=chunk, episode_index=index, file_index=index)
            videos = {
                camera: VideoSegment(
                    self._path("video_path", video_key=camera, **fields), 0.0, length / self.fps
                )
                for camera in self.camera_keys
            }
            episodes.append(Episode(index, length, task, self._task_index(task, str(path)), self.fps,
                                    videos, self._path("data_path", **fields)))
        return sorted_episodes(episodes, path)

    def _read_episodes_v3(self) -> list[Episode]:
        files = sorted((self.root / "meta/episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetError(f"{self.root / 'meta/episodes'}: no chunk-*/file-*.parquet episode tables")
        needed = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index"]
        for camera in self.camera_keys:
            for name in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"):
                needed.append(f"videos/{camera}/{name}")
        episodes = []
        for path in files:
            for row in read_parquet(path, needed).to_pylist():
                index = int(row["episode_index"])
                task = first_task(row["tasks"], path, index)
                data = self._path("data_path", chunk_index=row["data/chunk_index"],
                                  file_index=row["data/file_index"], episode_chunk=row["data/chunk_index"],
                                  episode_index=index)
                videos = {}
                for camera in self.camera_keys:
                    col = f"videos/{camera}/"
                    videos[camera] = VideoSegment(
                        self._path("video_path", video_key=camera, chunk_index=row[col + "chunk_index"],
                                   file_index=row[col + "file_index"], episode_chunk=row[col + "chunk_index"],
                                   episode_index=index),
                        float(row[col + "from_timestamp"]),
                        float(row[col + "to_timestamp"]),
                    )
                episodes.append(Episode(index, int(row["length"]), task, self._task_index(task, str(path)),
                                        self.fps, videos, data))
        return sorted_episodes(episodes, files[0].parent.parent)

    def _data_and_video_files(self) -> set[Path]:
        files = {ep.data_path for ep in self.episodes}
        files |= {seg.path for ep in self.episodes for seg in ep.videos.values()}
        return files

    def _check_files_exist(self) -> None:
        """Data files must all exist. A missing video fails only the episodes that need it
        (`read_images` raises naming the file), so a cache can quarantine them and go on."""
        for path in sorted({ep.data_path for ep in self.episodes}):
            if not path.is_file():
                raise DatasetError(f"{path}: file not found (referenced by the episode metadata)")

    # ---- data files -------------------------------------------------------

    def _data_file(self, path: Path) -> dict[str, np.ndarray]:
        """Columns of one data parquet as numpy; the last one read stays cached."""
        if self._open_data is not None and self._open_data[0] == path:
            return self._open_data[1]
        names = ["episode_index", "frame_index", "timestamp", self.state_key] + [self.action_key] * self.has_actions
        table = read_parquet(path, names)
        self.data_file_reads += 1
        columns = {
            "episode_index": scalars(table, "episode_index", np.int64, path),
            "frame_index": scalars(table, "frame_index", np.int64, path),
            "timestamp": scalars(table, "timestamp", np.float64, path),
            self.state_key: vectors(table, self.state_key, path),
            self.action_key: vectors(table, self.action_key, path) if self.has_actions
            else np.zeros((table.num_rows, 0), np.float32),
        }
        self._open_data = (path, columns)
        return columns

    def _file_hash(self, path: Path) -> str:
        if path not in self._file_hashes:
            digest = hashlib.sha256()
            try:
                with open(path, "rb") as f:
                    while chunk := f.read(_HASH_CHUNK):
                        digest.update(chunk)
            except OSError as err:
                raise DatasetError(f"{path}: cannot read for fingerprint ({err})") from err
            self._file_hashes[path] = digest.hexdigest()
        return self._file_hashes[path]
