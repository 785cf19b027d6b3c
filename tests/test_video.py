"""Frame reading: decoder choice per codec, nearest-frame semantics, clean failures."""

from __future__ import annotations

import os

import numpy as np
import pytest

from stages import video
from tests.lerobot_fixtures import frame_value, value_to_index, write_video

FPS = 10
N = 30


def _levels(n: int = N) -> list[int]:
    return [frame_value(i) for i in range(n)]


@pytest.fixture(scope="module")
def h264(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "h264.mp4"
    write_video(path, _levels(), FPS, 32, "h264")
    return path


@pytest.fixture(scope="module")
def av1(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "av1.mp4"
    write_video(path, _levels(), FPS, 32, "av1")
    return path


def _indices(frames: np.ndarray) -> list[int]:
    return [value_to_index(f.mean()) for f in frames]


def test_probe(h264, av1):
    info = video.probe(h264)
    assert (info.codec, info.width, info.height, info.num_frames) == ("h264", 32, 32, N)
    assert info.fps == pytest.approx(FPS) and info.duration == pytest.approx(N / FPS)
    assert video.probe(av1).codec == "av1"


def test_decoder_choice(h264, av1):
    assert video.decoder_for(h264) == "decord"
    assert video.decoder_for(av1) == "pyav"
    counts = video.decoder_counts()
    assert counts["decord"] >= 1 and counts["pyav"] >= 1


@pytest.mark.parametrize("which", ["h264", "av1"])
def test_nearest_frames_with_duplicates(which, h264, av1):
    path = {"h264": h264, "av1": av1}[which]
    # Unsorted, duplicated (as callers clamping past the end produce), off-grid,
    # and far apart so the PyAV path has to seek between keyframes.
    ts = np.array([2.9, 0.0, 0.14, 0.16, 2.9, 2.9, 1.5, 0.31, 2.94])
    frames = video.read_frames(path, ts)
    assert frames.dtype == np.uint8 and frames.shape == (len(ts), 32, 32, 3)
    assert _indices(frames) == [29, 0, 1, 2, 29, 29, 15, 3, 29]


def test_decoders_agree_on_h264(h264):
    ts = np.arange(N) / FPS
    by_decord = video.read_frames(h264, ts, decoder="decord")
    by_pyav = video.read_frames(h264, ts, decoder="pyav")
    assert _indices(by_decord) == _indices(by_pyav) == list(range(N))
    assert np.abs(by_decord.astype(int) - by_pyav.astype(int)).max() <= 3


def test_empty_request(h264):
    assert video.read_frames(h264, np.array([])).shape == (0, 32, 32, 3)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_timestamp_outside_video_fails(h264, decoder):
    with pytest.raises(video.VideoError, match="outside|no frame near") as err:
        video.read_frames(h264, np.array([0.0, 5.0]), decoder=decoder)
    assert str(h264) in str(err.value)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    for call in (lambda: video.probe(missing), lambda: video.read_frames(missing, np.array([0.0]))):
        with pytest.raises(video.VideoError, match="not found") as err:
            call()
        assert err.value.path == str(missing)


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(os.urandom(2000))
    with pytest.raises(video.VideoError) as err:
        video.read_frames(path, np.array([0.0]))
    assert str(path) in str(err.value)


def test_truncated_file_moov_at_end(tmp_path, h264):
    path = tmp_path / "cut.mp4"
    path.write_bytes(h264.read_bytes()[: h264.stat().st_size // 2])
    with pytest.raises(video.VideoError, match="cannot open") as err:
        video.probe(path)
    assert err.value.path == str(path)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_truncated_file_moov_first(tmp_path, decoder):
    """A faststart mp4 cut short still probes; decoding must then fail, not return junk."""
    import av

    full = tmp_path / "full.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS, options={"g": "8"})
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        rng = np.random.default_rng(0)  # noise, so the frames take real space in the file
        for _ in range(N):
            image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 6 // 10])
    assert video.probe(cut).num_frames == N
    with pytest.raises(video.VideoError) as err:
        video.read_frames(cut, np.arange(N) / FPS, decoder=decoder)
    assert str(cut) in str(err.value)
