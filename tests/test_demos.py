"""The embedded demo dataset: real MetaWorld rollouts written as real LeRobot v3.0 files.

Every dataset here is tiny (32x32, a few short episodes), so the module runs in
seconds while still exercising the simulator, the scripted experts, the video
encoders and the reader.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from sim.config import Codec, DemoConfig
from sim.demos import (
    MARKER,
    DemoError,
    demo_config_hash,
    ensure_demo_dataset,
    episode_seed,
    generate,
    record_episode,
)
from sim.metaworld_env import VIRTUAL_CAMERAS, FreeCamera, MetaWorldEnv, instruction_for
from stages.lerobot import LeRobotDataset

CAMERAS = ["corner", "gripperPOV"]
TINY = DemoConfig(tasks=["reach-v3", "push-v3"], episodes_per_task=1, seed=0, cameras=CAMERAS,
                  width=32, height=32, fps=20, max_steps=50)


def expected_episodes(demo: DemoConfig):
    """Re-run the generator's seed schedule directly on the simulator: what the dataset must hold."""
    kept, outcomes = [], []
    for task_index, task in enumerate(demo.tasks):
        with MetaWorldEnv(task, demo.cameras, demo.width, demo.height, demo.max_steps) as env:
            count, attempt = 0, 0
            while count < demo.episodes_per_task:
                episode = record_episode(env, episode_seed(demo.seed, task_index, attempt))
                outcomes.append(episode.success)
                if episode.success or demo.keep_failed:
                    kept.append(episode)
                    count += 1
                attempt += 1
    return kept, outcomes


def read_data(root: Path) -> pd.DataFrame:
    return pq.read_table(root / "data/chunk-000/file-000.parquet").to_pandas()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "tiny"
    generate(TINY, out, show_progress=False)
    return out


def test_layout_and_metadata_are_v3(tiny: Path):
    keys = [f"observation.images.{c}" for c in CAMERAS]
    for rel in ["meta/info.json", "meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                "data/chunk-000/file-000.parquet"] + [f"videos/{k}/chunk-000/file-000.mp4" for k in keys]:
        assert (tiny / rel).is_file(), rel
    info = json.loads((tiny / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_tasks"], info["fps"]) == (2, 2, 20)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert {"chunks_size", "data_files_size_in_mb", "video_files_size_in_mb"} <= set(info)
    assert info["features"]["observation.state"]["shape"] == [4]
    assert info["features"]["action"]["shape"] == [4]
    for key in keys:
        feature = info["features"][key]
        assert feature["dtype"] == "video" and feature["shape"] == [32, 32, 3]
        assert feature["info"]["video.codec"] == "h264" and feature["info"]["video.pix_fmt"] == "yuv420p"

    tasks = pd.read_parquet(tiny / "meta/tasks.parquet")
    assert list(tasks.index) == [instruction_for("reach-v3"), instruction_for("push-v3")]
    assert list(tasks["task_index"]) == [0, 1]

    episodes = pd.read_parquet(tiny / "meta/episodes/chunk-000/file-000.parquet")
    data = read_data(tiny)
    assert info["total_frames"] == len(data) == episodes["length"].sum()
    assert list(data.columns) == ["observation.state", "action", "timestamp", "frame_index", "episode_index",
                                  "index", "task_index"]
    schema = pq.read_schema(tiny / "data/chunk-000/file-000.parquet")
    assert str(schema.field("observation.state").type) == "fixed_size_list<element: float>[4]"
    assert str(schema.field("action").type) == "fixed_size_list<element: float>[4]"
    assert list(data["index"]) == list(range(len(data)))
    for _, ep in episodes.iterrows():
        rows = data[data["episode_index"] == ep["episode_index"]]
        assert (rows["index"].min(), rows["index"].max() + 1) == (ep["dataset_from_index"], ep["dataset_to_index"])
        assert list(rows["frame_index"]) == list(range(ep["length"]))
        assert np.allclose(rows["timestamp"], np.arange(ep["length"]) / 20)
        assert list(ep["tasks"]) == [tasks.index[rows["task_index"].iloc[0]]]
        for key in keys:
            assert ep[f"videos/{key}/from_timestamp"] == pytest.approx(ep["dataset_from_index"] / 20)
            assert ep[f"videos/{key}/to_timestamp"] == pytest.approx(ep["dataset_to_index"] / 20)

    stats = json.loads((tiny / "meta/stats.json").read_text())
    for feature in ("observation.state", "action"):
        assert set(stats[feature]) >= {"min", "max", "mean", "std"} and len(stats[feature]["mean"]) == 4

    for key in keys:  # one video frame per row, timestamps exactly frame / fps
        with av.open(str(tiny / f"videos/{key}/chunk-000/file-000.mp4")) as container:
            times = [float(frame.time) for frame in container.decode(video=0)]
        assert times == pytest.approx(list(np.arange(len(data)) / 20))


def test_same_seed_gives_identical_parquet(tiny: Path, tmp_path: Path):
    again = tmp_path / "again"
    generate(TINY, again, show_progress=False)
    for rel in ["data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet", "meta/tasks.parquet"]:
        assert (again / rel).read_bytes() == (tiny / rel).read_bytes(), rel


def test_state_is_robot_state_only():
    with MetaWorldEnv("push-v3", CAMERAS, 32, 32, 20) as env:
        obs = env.reset(3)
        for _ in range(5):
            obs, _, _ = env.step(env.expert_action())
        full = env._full_obs  # MetaWorld's privileged 39-d observation, kept inside the wrapper
        assert full.shape == (39,)
        assert obs["state"].shape == (4,) and obs["state"].dtype == np.float32
        assert np.allclose(obs["state"][:3], env._env.get_endeff_pos(), atol=1e-6)
        assert np.allclose(obs["state"], full[:4], atol=1e-6)  # hand xyz + gripper opening, nothing else
        assert set(obs["images"]) == set(CAMERAS)
        assert all(img.shape == (32, 32, 3) and img.dtype == np.uint8 for img in obs["images"].values())


def test_same_seed_same_rollout_and_seeds_change_layout():
    with MetaWorldEnv("push-v3", ["corner"], 32, 32, 30) as env:
        a, b, c = record_episode(env, 7), record_episode(env, 7), record_episode(env, 8)
    assert np.array_equal(a.states, b.states) and np.array_equal(a.actions, b.actions)
    assert np.array_equal(a.images["corner"], b.images["corner"])
    assert not np.array_equal(a.actions, c.actions)


class ActionSpy:
    """The real simulator, passing through, remembering what the expert said and what was executed."""

    def __init__(self, env: MetaWorldEnv) -> None:
        self.env, self.cameras, self.said, self.executed = env, env.cameras, [], []

    def reset(self, seed: int):
        self.said, self.executed = [], []
        return self.env.reset(seed)

    def expert_action(self) -> np.ndarray:
        self.said.append(self.env.expert_action())
        return self.said[-1]

    def step(self, action: np.ndarray):
        self.executed.append(np.clip(action, -1, 1))
        return self.env.step(action)

    def __getattr__(self, name: str):
        return getattr(self.env, name)


def test_action_noise_executes_noisy_actions_and_records_the_experts_own(tmp_path: Path):
    with MetaWorldEnv("reach-v3", ["corner"], 32, 32, 150) as env:
        spy = ActionSpy(env)
        clean = record_episode(spy, 5)
        noisy = record_episode(spy, 5, action_noise=0.2)
        said, executed = np.stack(spy.said), np.stack(spy.executed)
        again = record_episode(spy, 5, action_noise=0.2)
    assert noisy.success, "the expert recovers from its own perturbations"
    assert np.array_equal(noisy.actions, said), "the dataset holds the expert's clean action at each state"
    deviation = executed - said
    assert 0.1 < deviation.std() < 0.25 and abs(deviation.mean()) < 0.05  # clipping trims some of the 0.2
    assert np.array_equal(noisy.states[0], clean.states[0]), "the noise does not change the layout"
    assert not np.allclose(noisy.states[1:5], clean.states[1:5]), "the noisy rollout visits other states"
    assert np.array_equal(again.states, noisy.states) and np.array_equal(again.actions, noisy.actions)
    # a dataset made before the option existed keeps its hash (the value the code gave then; a bump of
    # sim.demos.FORMAT_VERSION changes it on purpose); a noisy one is a different dataset
    assert demo_config_hash(TINY) == "62b84d62565bc89a"
    assert demo_config_hash(TINY) != demo_config_hash(replace(TINY, action_noise=0.2))
    with pytest.raises(DemoError, match="demo.action_noise"):
        generate(replace(TINY, action_noise=-0.1), tmp_path / "ds", show_progress=False)


def test_only_successful_episodes_are_kept(tmp_path: Path):
    demo = replace(TINY, tasks=["reach-v3"], cameras=["corner"], episodes_per_task=2, max_steps=45)
    expected, outcomes = expected_episodes(demo)
    assert False in outcomes, "precondition: some rollout must fail so the filter is exercised"
    generate(demo, tmp_path / "ds", show_progress=False)
    data = read_data(tmp_path / "ds")
    assert data["episode_index"].nunique() == len(expected) == 2
    for index, episode in enumerate(expected):
        assert episode.success
        rows = data[data["episode_index"] == index]
        assert np.array_equal(np.stack(rows["action"]), episode.actions)


def decoded_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_worker_processes_write_the_serial_dataset(tmp_path: Path):
    """demo.workers records episodes in parallel: same episodes, same order, failed layouts redrawn alike."""
    demo = replace(TINY, tasks=["reach-v3"], cameras=["corner"], episodes_per_task=2, max_steps=45)
    _, outcomes = expected_episodes(demo)
    assert False in outcomes, "precondition: a rollout fails, so a redrawn attempt goes through the workers"
    # The serial reference runs in a fresh process, as a user's would: in this long-lived test process other
    # tests' renderers can shift a few pixels of MuJoCo's EGL output (seen: 7% of pixels, by up to 18).
    out = subprocess.run([sys.executable, "-m", "sim.demos", "--out", str(tmp_path / "serial"), "demo.tasks=[reach-v3]",
                          "demo.cameras=[corner]", "demo.episodes_per_task=2", "demo.max_steps=45", "demo.width=32",
                          "demo.height=32", "demo.fps=20", "demo.seed=0", "demo.workers=1"],
                         capture_output=True, text=True, check=True).stdout
    serial = re.search(r"(\d+) episodes, (\d+) frames \((\d+) rollouts\)", " ".join(out.split()))
    parallel = generate(replace(demo, workers=2), tmp_path / "parallel", show_progress=False)
    assert (parallel.episodes, parallel.frames, parallel.attempts) == tuple(int(g) for g in serial.groups())
    for rel in ["data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet", "meta/tasks.parquet",
                MARKER]:
        assert (tmp_path / "parallel" / rel).read_bytes() == (tmp_path / "serial" / rel).read_bytes(), rel
    # Frames: MuJoCo's software EGL renderer is not bit-exact across processes (CI saw a few pixels differ), so the
    # check is that the parallel frames sit on the serial ones: their mean difference must be well under what one
    # frame of robot motion changes. A missing, repeated or reordered frame or episode moves it above that.
    video = "videos/observation.images.corner/chunk-000/file-000.mp4"
    parallel_frames = decoded_frames(tmp_path / "parallel" / video).astype(np.int16)
    serial_frames = decoded_frames(tmp_path / "serial" / video).astype(np.int16)
    assert parallel_frames.shape == serial_frames.shape
    render_noise = float(np.abs(parallel_frames - serial_frames).mean())
    one_frame_of_motion = float(np.abs(serial_frames[1:] - serial_frames[:-1]).mean())
    assert render_noise < 0.5 * one_frame_of_motion, (render_noise, one_frame_of_motion)


def test_expert_that_cannot_succeed_fails_clearly(tmp_path: Path):
    demo = replace(TINY, tasks=["reach-v3"], max_steps=3)
    with pytest.raises(DemoError, match="reach-v3.*demo.max_steps=3"):
        generate(demo, tmp_path / "ds", show_progress=False)
    assert not (tmp_path / "ds").exists()
    assert not list(tmp_path.iterdir()), "no temporary directory left behind"


def test_av1_dataset(tmp_path: Path):
    demo = replace(TINY, tasks=["reach-v3"], max_steps=10, keep_failed=True, codec=Codec.av1)
    generate(demo, tmp_path / "ds", show_progress=False)
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    assert info["total_frames"] == 10  # a failed (cut) episode, kept on request
    assert info["features"]["observation.images.corner"]["info"]["video.codec"] == "av1"
    with av.open(str(tmp_path / "ds/videos/observation.images.corner/chunk-000/file-000.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.codec.id == av.codec.Codec("libsvtav1", "w").id  # AV1, whichever decoder reads it
        assert len(list(container.decode(video=0))) == 10


def test_lossless_h264_decodes_to_what_evaluation_renders(tmp_path: Path):
    """demo.codec=h264_lossless: the cache's reader gets the rendered frames back; the default h264 does not."""
    worst = {}
    for codec in (Codec.h264, Codec.h264_lossless):
        demo = replace(TINY, tasks=["reach-v3"], max_steps=10, keep_failed=True, codec=codec)
        generate(demo, tmp_path / codec.value, show_progress=False)
        (rendered,), _ = expected_episodes(demo)
        ds = LeRobotDataset(tmp_path / codec.value)
        (episode,) = ds.episodes
        errors = []
        for camera, key in zip(CAMERAS, ds.camera_keys):
            decoded = ds.read_images(episode, key, np.arange(episode.length))
            errors.append(np.abs(decoded.astype(int) - rendered.images[camera]).max())
        worst[codec] = max(errors)
    info = json.loads((tmp_path / "h264_lossless/meta/info.json").read_text())
    video = info["features"]["observation.images.corner"]["info"]
    assert (video["video.codec"], video["video.pix_fmt"]) == ("h264", "yuv444p")
    assert worst[Codec.h264_lossless] <= 2, "only RGB<->YUV rounding may differ"
    assert worst[Codec.h264] > 20, "yuv420p + crf 18 visibly changes small details"


def test_ensure_demo_dataset_is_a_noop_the_second_time(tmp_path: Path, monkeypatch):
    demo = replace(TINY, tasks=["reach-v3"], max_steps=10, keep_failed=True)
    path = ensure_demo_dataset(demo, tmp_path / "demo")
    marker = (path / MARKER).read_text()
    data = (path / "data/chunk-000/file-000.parquet").stat().st_mtime_ns

    def must_not_run(*args, **kwargs):
        raise AssertionError("generate() called although the dataset is complete")

    monkeypatch.setattr("sim.demos.generate", must_not_run)
    assert ensure_demo_dataset(demo, tmp_path / "demo") == path
    assert (path / MARKER).read_text() == marker
    assert (path / "data/chunk-000/file-000.parquet").stat().st_mtime_ns == data

    monkeypatch.undo()  # a different demo config regenerates in place
    assert ensure_demo_dataset(replace(demo, max_steps=5), tmp_path / "demo") == path
    assert json.loads((path / "meta/info.json").read_text())["total_frames"] == 5


def test_round_trip_through_the_reader(tiny: Path):
    lerobot = pytest.importorskip("stages.lerobot")
    dataset = lerobot.LeRobotDataset(tiny)
    expected, _ = expected_episodes(TINY)
    assert len(dataset.episodes) == len(expected)
    for episode, truth in zip(dataset.episodes, expected):
        assert episode.length == len(truth.states)
        assert episode.task == truth.instruction
        frames = dataset.frames(episode)
        assert np.array_equal(frames.state, truth.states)
        assert np.array_equal(frames.action, truth.actions)
        for camera in CAMERAS:
            decoded = dataset.read_images(episode, f"observation.images.{camera}", np.arange(episode.length))
            assert decoded.shape == truth.images[camera].shape and decoded.dtype == np.uint8
            error = np.abs(decoded.astype(np.int16) - truth.images[camera].astype(np.int16)).mean()
            assert error < 10, f"episode {episode.index} {camera}: mean abs error {error:.1f}"


def test_bad_demo_config_is_rejected_before_simulating(tmp_path: Path):
    demo = replace(TINY, tasks=["reach-v3", "no-such-task-v3"], cameras=["corner", "no-such-camera"], workers=-1)
    with pytest.raises(DemoError, match="no-such-task-v3.*no-such-camera.*demo.workers"):
        generate(demo, tmp_path / "ds", show_progress=False)
    assert not list(tmp_path.iterdir())


def _green_marker(image: np.ndarray) -> np.ndarray:
    """Pixels of push-v3's green goal marker: the only saturated green in that scene."""
    rgb = image.astype(np.int16)
    return (rgb[..., 1] > 100) & (rgb[..., 0] < 80) & (rgb[..., 2] < 80)


def test_the_goal_the_policy_sees_is_the_episodes_goal_from_the_first_frame():
    """Frame 0 must show this layout's goal (not the previous episode's), and `workspace` must show it larger."""
    with MetaWorldEnv("push-v3", ["workspace", "corner"], 64, 64, 5) as env:
        centroids = []
        for seed in (0, 1, 2):
            first = env.reset(seed)["images"]
            after_a_step = env.step(np.zeros(4, dtype=np.float32))[0]["images"]
            marker = _green_marker(first["workspace"])
            assert np.array_equal(marker, _green_marker(after_a_step["workspace"])), f"seed {seed}: stale goal"
            assert marker.sum() >= 4, f"seed {seed}: goal covers {marker.sum()} px in the workspace view"
            assert _green_marker(first["corner"]).sum() < marker.sum()
            centroids.append(np.argwhere(marker).mean(axis=0))
    spread = max(np.linalg.norm(a - b) for a in centroids for b in centroids)
    assert spread > 3, f"the goal moved by {spread:.1f} px across three layouts"


def _ray_from(camera: FreeCamera, point: np.ndarray) -> np.ndarray:
    """Unit vector from the camera's eye through `point` (MuJoCo's free-camera convention)."""
    az, el = np.radians(camera.azimuth), np.radians(camera.elevation)
    forward = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    eye = np.asarray(camera.lookat) - camera.distance * forward
    ray = point - eye
    return ray / np.linalg.norm(ray)


def test_a_second_workspace_view_tells_apart_goals_that_one_view_sees_in_the_same_place():
    """Floating goals (reach, pick-place) are only located in 3-D from two views: `workspace_left` moves where `workspace` cannot."""
    with MetaWorldEnv("push-v3", ["workspace", "workspace_left"], 64, 64, 5) as env:
        env.reset(0)
        near = env._env.data.site("goal").xpos.copy()
        seen = []
        for point in (near, near - 0.15 * _ray_from(VIRTUAL_CAMERAS["workspace"], near)):  # lifted 15 cm up the ray
            env._env.data.site("goal").xpos = point
            images = env.render()
            seen.append({c: np.argwhere(_green_marker(images[c])).mean(axis=0) for c in env.cameras})
    in_workspace = np.linalg.norm(seen[0]["workspace"] - seen[1]["workspace"])
    in_left = np.linalg.norm(seen[0]["workspace_left"] - seen[1]["workspace_left"])
    assert in_workspace < 1.0, f"the marker moved {in_workspace:.1f} px along the workspace camera's own ray"
    assert in_left > 4.0, f"workspace_left sees the 15 cm move as only {in_left:.1f} px"
