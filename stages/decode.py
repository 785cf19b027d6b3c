"""Decode stage: read each episode's needed frames once, check it, or quarantine it.

Works on one shard group (a few whole episodes) at a time so memory stays
bounded by the group, not the dataset. Each distinct frame is decoded once per
episode and kept as uint8 (4x smaller than float in Ray's object store); clips
are gathered from it and scaled to [-1, 1] only inside the encoder
(`clip_pixels`). Any failure of an episode (unreadable parquet, corrupt or
truncated video, NaN/inf values, data/video length mismatch) rejects that
episode with the reason; the rest of the group continues.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import torch

from model.pixels import resize, to_unit_range
from stages import video
from stages.lerobot import Episode, LeRobotDataset
from stages.plan import ClipGeometry, plan_episode
from stages.provenance import node_id
from stages.schema import OPTIONAL_SHARD_ARRAYS


@dataclass(frozen=True)
class DecodeSpec:
    root: str
    cameras: list[str]  # resolved LeRobot keys, joined left to right
    state_key: str
    action_key: str
    geometry: ClipGeometry
    height: int  # per camera
    width: int  # per camera
    text_keys: dict[str, str]  # task text -> text embedding key


class EpisodeRejected(Exception):
    """Why one episode cannot be cached (it is quarantined, the run goes on)."""


def clip_pixels(frames: np.ndarray, clip_index: np.ndarray) -> torch.Tensor:
    """Gather clips: frames uint8 [N, H, W, 3], clip_index [B, n] -> float [B, 3, n, H, W] in [-1, 1]."""
    return to_unit_range(frames[clip_index]).movedim(1, 2)  # [B, n, 3, H, W] -> [B, 3, n, H, W]


def _check_finite(name: str, values: np.ndarray, where) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise EpisodeRejected(f"{where}: {int(bad.sum())} non-finite {name} values (first at frame {row})")


def _check_video_length(dataset: LeRobotDataset, episode: Episode) -> None:
    """Data rows and video frames must agree (v2.x: one file per episode; v3: segment span)."""
    for camera, segment in episode.videos.items():
        if dataset.version.startswith("v2"):
            frames = video.probe(segment.path).num_frames
        else:
            frames = round((segment.to_timestamp - segment.from_timestamp) * episode.fps)
            if frames != episode.length:  # the metadata disagrees with itself, not with the mp4
                raise EpisodeRejected(
                    f"{dataset.root / 'meta/episodes'}: episode {episode.index}: videos/{camera}/to_timestamp - "
                    f"from_timestamp ({segment.to_timestamp:g} - {segment.from_timestamp:g} s at {episode.fps:g} fps) "
                    f"spans {frames} frames, but its length is {episode.length} (rows in {episode.data_path})")
        if abs(frames - episode.length) > 0:
            raise EpisodeRejected(
                f"length mismatch: {episode.length} data rows but {frames} video frames in {camera} ({segment.path})"
            )


def _moments(values: np.ndarray) -> dict:
    v = values.astype(np.float64)
    return {"count": len(v), "sum": v.sum(0).tolist(), "sumsq": (v * v).sum(0).tolist(),
            "min": v.min(0).tolist(), "max": v.max(0).tolist()}


class DecodeGroup:
    """Ray Data `map` stage: {shard, episodes} -> one row with the group's frames and sample arrays."""

    def __init__(self, spec: DecodeSpec):
        self.spec = spec

    def __call__(self, row: dict) -> dict:
        start = time.perf_counter()
        spec = self.spec
        dataset = LeRobotDataset(spec.root, cameras=spec.cameras, state_key=spec.state_key,
                                 action_key=spec.action_key)
        by_index = {e.index: e for e in dataset.episodes}
        parts: list[dict] = []
        rejects: list[dict] = []
        decoders: dict[str, str] = {}
        offset = 0
        for index in [int(i) for i in row["episodes"]]:
            try:
                part = self._episode(dataset, by_index[index], decoders)
            except Exception as err:  # quarantine this episode, keep the group going
                reason = str(err) if isinstance(err, EpisodeRejected) else f"{type(err).__name__}: {err}"
                rejects.append({"episode": index, "reason": reason})
                continue
            part["clip_index"] = part["clip_index"] + offset
            offset += len(part["frames"])
            parts.append(part)
        out = _concat(parts, spec)
        out.update(
            shard=int(row["shard"]),
            rejects=json.dumps(rejects),
            decoders=json.dumps(decoders),
            stats=json.dumps({k: _moments(np.concatenate([p[f"rows_{k}"] for p in parts])) if parts else None
                              for k in ("actions", "proprio")}),
            t_decode=time.perf_counter() - start,
            node_decode=node_id(),
        )
        return out

    def _episode(self, dataset: LeRobotDataset, episode: Episode, decoders: dict[str, str]) -> dict:
        spec = self.spec
        rows = dataset.frames(episode)
        _check_finite(f"action ({spec.action_key!r})", rows.action, episode.data_path)
        _check_finite(f"state ({spec.state_key!r})", rows.state, episode.data_path)
        _check_video_length(dataset, episode)
        plan = plan_episode(episode.length, spec.geometry)
        needed = plan.needed_frames
        clip_index = np.searchsorted(needed, plan.video_index).astype(np.int32)
        views = []
        for camera in spec.cameras:
            decoders[str(episode.videos[camera].path)] = video.decoder_for(episode.videos[camera].path)
            images = dataset.read_images(episode, camera, needed)
            if len(images) != len(needed):
                raise EpisodeRejected(f"{camera}: got {len(images)} frames, asked for {len(needed)}")
            views.append(resize(images, spec.height, spec.width))
        meta = [{"episode": episode.index, "frame": int(t), "task": episode.task,
                 "task_index": episode.task_index, "text_key": spec.text_keys[episode.task]}
                for t in plan.starts]
        return {
            "frames": np.concatenate(views, axis=2),  # cameras side by side
            "clip_index": clip_index,
            "video_pad": plan.video_pad,
            "actions": rows.action[plan.action_index],
            "action_mask": plan.action_mask,
            "proprio": rows.state[plan.starts],
            "meta": meta,
            "rows_actions": rows.action,
            "rows_proprio": rows.state,
        }


def _concat(parts: list[dict], spec: DecodeSpec) -> dict:
    if not parts:  # every episode rejected: empty arrays of the right rank
        n, h, w = spec.geometry.num_frames, spec.height, spec.width * len(spec.cameras)
        return {"frames": np.zeros((0, h, w, 3), np.uint8), "clip_index": np.zeros((0, n), np.int32),
                "video_pad": np.zeros((0, n), bool), "actions": np.zeros((0, 0, 0), np.float32),
                "action_mask": np.zeros((0, spec.geometry.action_horizon), bool),
                "proprio": np.zeros((0, 0), np.float32), "meta": "[]"}
    cat = {k: np.concatenate([p[k] for p in parts]) for k in
           ("frames", "clip_index", "video_pad", "actions", "action_mask", "proprio") + OPTIONAL_SHARD_ARRAYS
           if k in parts[0]}
    cat["meta"] = json.dumps([m for p in parts for m in p["meta"]])
    return cat
