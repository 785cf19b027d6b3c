"""The offline cache end to end: real Ray on 127.0.0.1, real mp4s, tiny VAE.

One Ray session serves every test (and the subprocesses, which join it through
RAY_ADDRESS); the clean cache of the small H.264 dataset is built once per module.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import subprocess_env
from lerobot_fixtures import write_v3_dataset, write_v21_dataset

from model.pixels import resize, to_unit_range
from pipeline.cli import load_config
from pipeline.preprocess import open_cache_for, preprocess
from pipeline.train.data import batches
from stages.cache_loader import CacheMismatchError, read_shard
from stages.lerobot import LeRobotDataset
from stages.manifest import read_manifest, validate_shards
from stages.plan import ClipGeometry, plan_episode
from stages.schema import BATCH_KEYS

LENGTHS = (12, 15, 10, 9, 11, 13)
CAMERAS = ("observation.images.front", "observation.images.wrist")
TINY = ["cache.image_height=32", "cache.image_width=32", "cache.num_frames=5", "cache.frame_stride=2",
        "cache.action_horizon=4", "cache.sample_stride=2", "cache.samples_per_shard=6",
        "cache.latent_downsample=2", "cache.encode_batch_size=4",
        "cache.vae.base_dim=8", "cache.vae.dim_mult=[1,1,1,1]", "cache.vae.num_res_blocks=1",
        "cache.text.encoder=minilm", "cache.text.max_tokens=16", "cache.text.dim=384", "model.action_horizon=4"]


CLEAN = ("cache.current_frames=true",)  # the clean cache also keeps each sample's current frame


def overrides(data: Path, root: Path, *extra: str) -> list[str]:
    return [f"data.path={data}", f"cache.root={root}", *TINY, *extra]


def config(data: Path, root: Path, *extra: str):
    return load_config(overrides(data, root, *extra))[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    h264 = write_v3_dataset(root / "h264", lengths=LENGTHS, cameras=CAMERAS, codec="h264")
    write_v3_dataset(root / "av1", lengths=LENGTHS, cameras=CAMERAS, codec="av1")
    return root, h264


@pytest.fixture(scope="module")
def clean(ray_cluster, data, tmp_path_factory):
    cfg = config(data[0] / "h264", tmp_path_factory.mktemp("clean"), *CLEAN)
    result = preprocess(cfg)
    assert result.ok, result.message
    return cfg, result


def samples_of(cache_dir: Path) -> dict[str, dict]:
    manifest = read_manifest(cache_dir)
    out = {}
    for shard in manifest["shards"]:
        for sample in read_shard(cache_dir / shard["file"]):
            key = f"{sample['meta']['episode']}/{sample['meta']['frame']}"
            assert key not in out, f"duplicate sample {key}"
            out[key] = sample
    return out


def test_ray_nodes_use_loopback(ray_cluster):
    import ray

    assert ray_cluster.startswith("127.0.0.1:")
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}


def test_shards_hold_expected_shapes_and_exact_source_values(clean, data):
    cfg, result = clean
    exp = data[1]
    manifest = result.manifest
    validate_shards(result.cache_dir, manifest, hash_contents=True)
    geom = ClipGeometry.from_config(cfg.cache)
    samples = samples_of(result.cache_dir)
    reader = LeRobotDataset(data[0] / "h264", cameras=list(CAMERAS))
    episodes = {e.index: e for e in reader.episodes}
    expected_keys = {f"{ep}/{t}" for ep, n in enumerate(LENGTHS) for t in plan_episode(n, geom).starts}
    assert set(samples) == expected_keys and manifest["samples"] == len(expected_keys)
    assert manifest["rejected"] == [] and manifest["decoders"] == {"decord": 6}  # 3 files x 2 cameras
    for key, s in samples.items():
        ep, t = map(int, key.split("/"))
        plan = plan_episode(LENGTHS[ep], geom)
        i = list(plan.starts).index(t)
        assert s["video_latents"].shape == (16, 2, 2, 4) and s["video_latents"].dtype == np.float32
        assert s["current_latent"].shape == (16, 1, 4, 8)
        assert s["video_frame_mask"].tolist() == [True, not plan.video_pad[i, 1:].all()]
        assert np.array_equal(s["actions"], exp.actions[ep][plan.action_index[i]])  # bit-exact
        assert np.array_equal(s["proprio"], exp.states[ep][t])
        assert s["action_mask"].tolist() == plan.action_mask[i].tolist()
        views = [resize(reader.read_images(episodes[ep], c, np.array([t])), 32, 32)[0] for c in CAMERAS]
        assert np.array_equal(s["current_frame"], np.concatenate(views, axis=1))  # frame t, cameras side by side
        assert s["meta"]["task"] == exp.episode_tasks[ep] and s["meta"]["text_key"] in manifest["text_keys"].values()
    pooled = samples["0/0"]["current_latent"][:, 0].reshape(16, 2, 2, 4, 2).mean(axis=(2, 4))
    assert np.allclose(samples["0/0"]["video_latents"][:, 0], pooled, atol=1e-5)  # frame 0 pooled = current
    actions = np.concatenate(exp.actions)
    assert np.allclose(manifest["stats"]["actions"]["min"], actions.min(0))
    assert np.allclose(manifest["stats"]["actions"]["std"], actions.std(0), atol=1e-5)


def test_no_member_is_a_pickle(clean):
    _, result = clean
    for shard in result.manifest["shards"]:
        with tarfile.open(result.cache_dir / shard["file"]) as tar:
            for member in tar:
                assert member.name.endswith((".npy", ".json")), member.name
                data = tar.extractfile(member).read()
                assert not data.startswith(b"\x80"), f"{member.name} looks like a pickle"


def test_second_run_is_a_noop(clean):
    cfg, first = clean
    again = preprocess(cfg)
    assert again.ok and again.skipped and again.cache_dir == first.cache_dir


def test_loader_splits_ranks_and_derives_downsample_and_training_normalizes(clean):
    cfg, result = clean
    handle = result.open()
    assert handle.fingerprint == result.fingerprint
    items = list(handle.dataset())
    assert len(items) == result.manifest["samples"]
    first = items[0]
    assert set(BATCH_KEYS) <= set(first)
    raw = next(read_shard(handle.shard_paths[0]))  # the cached uint8 frame, as the simulator's frames are fed
    assert torch.equal(first["current_pixels"][:, 0], to_unit_range(raw["current_frame"]))
    assert np.array_equal(first["actions"].numpy(), raw["actions"])  # the loader keeps the robot's units
    assert first["text"].shape == (16, 384) and first["text_mask"].dtype == torch.bool
    cfg.train.batch_size = result.manifest["samples"]
    actions = next(batches(cfg, handle, rank=0, world=1))["actions"]  # training sees [-1, 1]
    assert actions.min() >= -1 - 1e-6 and actions.max() <= 1 + 1e-6
    assert torch.isclose(actions.amin(dim=(0, 1)), torch.tensor(-1.0)).all()
    rank0 = {(int(i["episode"]), int(i["frame"])) for i in handle.dataset(rank=0, world_size=2)}
    rank1 = {(int(i["episode"]), int(i["frame"])) for i in handle.dataset(rank=1, world_size=2)}
    assert rank0 and rank1 and not rank0 & rank1 and len(rank0 | rank1) == len(items)

    cfg.cache.latent_downsample = 4  # coarser: derived from the cached factor-2 latents
    derived = next(iter(open_cache_for(cfg).dataset()))
    assert derived["video_latents"].shape == (16, 2, 1, 2)
    assert torch.allclose(derived["video_latents"], first["video_latents"].reshape(16, 2, 1, 2, 2, 2).mean((3, 5)))


def test_training_batches_from_kept_shards_match_the_streamed_ones_without_the_files(clean, data):
    """train.keep_shards_in_memory: later epochs come from RAM, in the order streaming gives; pixel_shift applies."""
    _, result = clean
    streamed_cfg, kept_cfg, unshifted_cfg = (
        config(data[0] / "h264", result.cache_dir.parent, *CLEAN, "train.batch_size=4", *extra)
        for extra in (["model.shortcut.enabled=true", "train.pixel_shift=2"],
                      ["model.shortcut.enabled=true", "train.pixel_shift=2", "train.keep_shards_in_memory=true"], []))
    handle = open_cache_for(kept_cfg)
    streamed, kept = batches(streamed_cfg, handle, rank=0, world=1), batches(kept_cfg, handle, rank=0, world=1)
    unshifted = batches(unshifted_cfg, handle, rank=0, world=1)
    one_epoch = -(-result.manifest["samples"] // 4)
    got = [next(kept) for _ in range(one_epoch)]  # every shard has now been read once
    hidden = [path.rename(path.with_suffix(".hidden")) for path in handle.shard_paths]
    try:
        got += [next(kept) for _ in range(2 * one_epoch)]
    finally:
        for moved, path in zip(hidden, handle.shard_paths):
            moved.rename(path)
    for batch in got:
        want, plain = next(streamed), next(unshifted)
        assert batch.keys() == want.keys() and "current_pixels" in batch
        for key in batch:
            assert torch.equal(batch[key], want[key]), key
            assert torch.equal(batch[key], plain[key]) == (key != "current_pixels"), key


def test_config_mismatch_is_refused_naming_the_field(clean):
    cfg, _ = clean
    cfg.cache.image_height = 64
    with pytest.raises(CacheMismatchError, match="cache.image_height: wanted 64, cache has 32"):
        open_cache_for(cfg)
    cfg.cache.image_height = 32
    cfg.cache.vae.seed = 1
    with pytest.raises(CacheMismatchError, match="cache.vae.weights_sha256"):
        open_cache_for(cfg)


def test_h264_and_av1_caches_agree_within_codec_tolerance(clean, data, tmp_path):
    cfg, result = clean
    av1 = preprocess(config(data[0] / "av1", tmp_path))
    assert av1.ok and av1.manifest["decoders"] == {"pyav": 6}
    assert av1.fingerprint != result.fingerprint  # different source files
    a, b = samples_of(result.cache_dir), samples_of(av1.cache_dir)
    assert set(a) == set(b)
    scale = np.std([s["current_latent"] for s in a.values()])
    for key in a:
        assert np.array_equal(a[key]["actions"], b[key]["actions"])
        for name in ("current_latent", "video_latents"):
            assert np.abs(a[key][name] - b[key][name]).max() < 0.1 * scale, (key, name)


def test_killed_run_resumes_to_the_clean_sample_set(clean, data, ray_cluster, tmp_path):
    cfg, result = clean
    cmd = [sys.executable, "-m", "pipeline.preprocess", *overrides(data[0] / "h264", tmp_path, *CLEAN)]
    proc = subprocess.Popen(cmd, env=subprocess_env(ray_cluster), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    cache_dir = tmp_path / result.fingerprint
    deadline = time.time() + 120
    while not list(cache_dir.glob("shard-*.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cache_dir / "manifest.json").exists(), "run finished before it could be killed"
    written = len(list(cache_dir.glob("shard-*.json")))
    assert 0 < written < len(result.manifest["shards"])

    resumed = preprocess(config(data[0] / "h264", tmp_path, *CLEAN))
    assert resumed.ok and not resumed.skipped
    a, b = samples_of(result.cache_dir), samples_of(cache_dir)
    assert set(a) == set(b)
    for key in a:
        assert np.array_equal(a[key]["actions"], b[key]["actions"])
        assert np.allclose(a[key]["video_latents"], b[key]["video_latents"], atol=1e-6)
    assert not list(cache_dir.glob("*.tmp-*"))


def test_corrupt_video_is_quarantined_and_too_many_rejects_fail(ray_cluster, tmp_path):
    exp = write_v21_dataset(tmp_path / "ds", lengths=(9, 8, 7), size=32)
    bad = tmp_path / "ds" / f"videos/chunk-000/{exp.cameras[1]}/episode_000001.mp4"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated: no index, half the frames

    strict = subprocess.run([sys.executable, "-m", "pipeline.preprocess",
                             *overrides(tmp_path / "ds", tmp_path / "cache")],
                            env=subprocess_env(ray_cluster), capture_output=True, text=True, timeout=300)
    assert strict.returncode == 1, strict.stdout[-2000:] + strict.stderr[-2000:]
    out = " ".join(strict.stdout.split())
    assert "1 of 3 episodes rejected" in out and "episode 1:" in out and "episode_000001.mp4" in out

    lenient = preprocess(config(tmp_path / "ds", tmp_path / "cache", "cache.max_reject_fraction=0.5"))
    assert lenient.ok
    rejected = lenient.manifest["rejected"]
    assert [r["episode"] for r in rejected] == [1] and "episode_000001.mp4" in rejected[0]["reason"]
    assert {s.split("/")[0] for s in samples_of(lenient.cache_dir)} == {"0", "2"}


def test_missing_video_is_quarantined(ray_cluster, tmp_path):
    exp = write_v21_dataset(tmp_path / "ds", lengths=(9, 8, 7), size=32)
    (tmp_path / "ds" / f"videos/chunk-000/{exp.cameras[0]}/episode_000002.mp4").unlink()
    result = preprocess(config(tmp_path / "ds", tmp_path / "cache", "cache.max_reject_fraction=0.5"))
    assert result.ok
    rejected = result.manifest["rejected"]
    assert [r["episode"] for r in rejected] == [2] and "episode_000002.mp4" in rejected[0]["reason"]
    assert {s.split("/")[0] for s in samples_of(result.cache_dir)} == {"0", "1"}
