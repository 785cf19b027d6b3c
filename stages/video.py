"""Read video frames at timestamps, choosing a decoder per file.

decord is fast for the codecs it handles (H.264, HEVC, ...), but 0.6.0 cannot
even find the stream of an AV1 mp4, and AV1 is LeRobot's default codec. PyAV
bundles dav1d, so it decodes AV1 and anything decord refuses. Every failure
(missing, corrupt or truncated file, timestamps outside the video) surfaces as
`VideoError` naming the file, never as a crash or a silently wrong frame.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import av
import decord
import numpy as np

DECORD = "decord"
PYAV = "pyav"

# Codecs decord 0.6.0 is known to fail on; others are tried with decord first.
_PYAV_ONLY_CODECS = {"av1"}
# Few threads per reader: parallelism comes from running many readers at once.
_DECODE_THREADS = 1
# PyAV path: seek again when the next wanted frame is this far (seconds) ahead,
# instead of decoding through everything in between.
_SEEK_GAP_S = 1.0

# (path, size, mtime) -> decoder name; also the source of `decoder_counts`.
_decoder_cache: dict[tuple[str, int, int], str] = {}


class VideoError(ValueError):
    """A video file could not be read; carries the path and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    path: str
    codec: str  # canonical codec name, e.g. "h264", "av1"
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float  # seconds


def probe(path: str | Path) -> VideoInfo:
    """Describe the first video stream of `path` (container metadata only, no decoding)."""
    path = str(path)
    if not os.path.isfile(path):
        raise VideoError(path, "file not found")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise VideoError(path, "video stream has no frame rate")
            fps = float(rate)
            if stream.duration is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = 0.0
            num_frames = stream.frames or int(round(duration * fps))
            codec = stream.codec_context.codec
            return VideoInfo(
                path=path,
                codec=getattr(codec, "canonical_name", None) or codec.name,
                width=stream.width,
                height=stream.height,
                fps=fps,
                num_frames=num_frames,
                duration=duration,
            )
    except VideoError:
        raise
    except Exception as err:  # PyAV raises FFmpegError subclasses and OSError
        raise VideoError(path, f"cannot open video ({err})") from err


def decoder_for(path: str | Path) -> str:
    """"decord" if decord can open the file, else "pyav". Cached per file version."""
    path = str(path)
    key = _file_key(path)
    if key not in _decoder_cache:
        info = probe(path)
        decoder = PYAV
        if info.codec not in _PYAV_ONLY_CODECS:
            try:
                decord.VideoReader(path, ctx=decord.cpu(0), num_threads=_DECODE_THREADS)
                decoder = DECORD
            except Exception:  # decord.DECORDError is not a RuntimeError
                decoder = PYAV
        _decoder_cache[key] = decoder
    return _decoder_cache[key]


def decoder_counts() -> dict[str, int]:
    """How many distinct files this process routed to each decoder (for run summaries)."""
    return dict(Counter(_decoder_cache.values()))


def read_frames(path: str | Path, timestamps: np.ndarray, decoder: str | None = None) -> np.ndarray:
    """Frames nearest (by pts) to `timestamps` (seconds, file-relative), uint8 [N, H, W, 3].

    The nearest frame must start within half a frame period of its timestamp, else
    `VideoError` (a frame missing mid-video must not be replaced by its neighbour).

    Each distinct frame is decoded once however often it is asked for.
    `decoder` forces "decord" or "pyav"; by default `decoder_for` picks.
    """
    path = str(path)
    timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    decoder = decoder or decoder_for(path)
    if decoder not in (DECORD, PYAV):
        raise ValueError(f"unknown decoder {decoder!r}; expected 'decord' or 'pyav'")
    if not os.path.isfile(path):
        raise VideoError(path, "file not found")
    if timestamps.size == 0:
        info = probe(path)
        return np.zeros((0, info.height, info.width, 3), dtype=np.uint8)
    try:
        if decoder == DECORD:
            return _read_decord(path, timestamps)
        return _read_pyav(path, timestamps)
    except VideoError:
        raise
    except Exception as err:
        raise VideoError(path, f"decoding with {decoder} failed ({err})") from err


def _read_decord(path: str, timestamps: np.ndarray) -> np.ndarray:
    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=_DECODE_THREADS)
    n = len(reader)
    if n == 0:
        raise VideoError(path, "video has no frames")
    starts = reader.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64)
    period = 1.0 / reader.get_avg_fps()
    index = _nearest(path, starts, timestamps, period)
    if n > 1:  # the frame spacing itself: an average over a file with gaps is too long
        period = float(np.median(np.diff(starts)))
    _check_gap(path, starts[index], timestamps, period)
    unique, inverse = np.unique(index, return_inverse=True)
    frames = reader.get_batch(unique.tolist()).asnumpy()
    return frames[inverse]


def _read_pyav(path: str, timestamps: np.ndarray) -> np.ndarray:
    """Seek to the keyframe before each far-away target, then decode forward."""
    targets, inverse = np.unique(timestamps, return_inverse=True)
    picked: list[np.ndarray] = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = _DECODE_THREADS
        time_base = float(stream.time_base)
        period = 1.0 / float(stream.base_rate or stream.average_rate or stream.guessed_rate)  # spacing, not average
        frames = None  # iterator over decoded frames
        prev = cur = None  # (time, frame) pairs around the current target
        rgb_cache: dict[float, np.ndarray] = {}
        for target in targets:
            if frames is None or (cur is not None and target - cur[0] > _SEEK_GAP_S):
                container.seek(max(0, int(target / time_base)), stream=stream, backward=True)
                frames = container.decode(stream)
                prev, cur = None, _next_frame(frames, time_base)
                if cur is None:
                    raise VideoError(path, f"no frame decodable at or after {target:.4f}s")
            while cur[0] < target:
                following = _next_frame(frames, time_base)
                if following is None:
                    break
                prev, cur = cur, following
            best = cur
            if prev is not None and abs(prev[0] - target) <= abs(cur[0] - target):
                best = prev
            if best[0] > target + period or best[0] < target - period:
                raise VideoError(
                    path, f"no frame near {target:.4f}s (nearest at {best[0]:.4f}s); file truncated?"
                )
            _check_gap(path, np.array([best[0]]), np.array([target]), period)
            if best[0] not in rgb_cache:
                rgb_cache[best[0]] = best[1].to_ndarray(format="rgb24")
            picked.append(rgb_cache[best[0]])
    return np.stack(picked)[inverse]


def _next_frame(frames, time_base: float):
    for frame in frames:
        if frame.pts is not None:
            return frame.pts * time_base, frame
    return None


def _nearest(path: str, times: np.ndarray, targets: np.ndarray, period: float) -> np.ndarray:
    """Index of the frame whose start time is nearest each target; out-of-range fails."""
    lo, hi = times[0] - period, times[-1] + period
    bad = (targets < lo) | (targets > hi)
    if bad.any():
        raise VideoError(
            path,
            f"timestamp {targets[bad][0]:.4f}s outside the video's frames "
            f"[{times[0]:.4f}s, {times[-1]:.4f}s]",
        )
    if len(times) == 1:
        return np.zeros(len(targets), dtype=np.int64)
    right = np.clip(np.searchsorted(times, targets), 1, len(times) - 1)
    left = right - 1
    take_left = np.abs(targets - times[left]) <= np.abs(times[right] - targets)
    return np.where(take_left, left, right).astype(np.int64)


def _check_gap(path: str, got: np.ndarray, wanted: np.ndarray, period: float) -> None:
    """Each returned frame must start within half a frame period of the time asked for:
    otherwise the frame there is missing and a neighbour would silently stand in for it."""
    off = np.abs(got - wanted) > period / 2
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise VideoError(path, f"no frame at {wanted[i]:.4f}s (nearest starts at {got[i]:.4f}s, frame period "
                               f"{period:.4f}s): a frame is missing from the video")


def _file_key(path: str) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
    except OSError as err:
        raise VideoError(path, "file not found") from err
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)
