"""Cache stages without Ray: sample planning, latent masks and pooling, stats, identities,
text embeddings, and the decode stage's checks on real (tiny) LeRobot datasets."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from lerobot_fixtures import frame_value, write_v21_dataset, write_video

from model.config import TextConfig, TextEncoder
from stages.config import CacheConfig
from stages.decode import DecodeGroup, DecodeSpec
from stages.downsample import latent_frame_mask, pool_latents
from stages.manifest import diff_identity, merge_stats
from stages.plan import ClipGeometry, group_episodes, plan_episode
from stages.text import PromptEncoder, text_identity, text_key


def test_plan_clamps_and_flags_padding():
    geom = ClipGeometry(num_frames=5, frame_stride=2, action_horizon=4, sample_stride=3)
    plan = plan_episode(10, geom)
    assert plan.starts.tolist() == [0, 3, 6, 9]
    assert plan.video_index[1].tolist() == [3, 5, 7, 9, 9]
    assert plan.video_pad[1].tolist() == [False, False, False, False, True]
    assert plan.video_index[3].tolist() == [9] * 5 and plan.video_pad[3].tolist() == [False] + [True] * 4
    assert plan.action_index[3].tolist() == [9, 9, 9, 9]
    assert plan.action_mask[3].tolist() == [True, False, False, False]
    assert plan.needed_frames.tolist() == [0, 2, 3, 4, 5, 6, 7, 8, 9]


def test_paper_geometry_and_invalid_frame_count():
    geom = ClipGeometry.from_config(CacheConfig())
    assert (geom.num_frames, geom.frame_stride, geom.action_horizon, geom.latent_frames) == (9, 4, 32, 3)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        ClipGeometry.from_config(CacheConfig(num_frames=8))


def test_groups_are_whole_episodes_and_deterministic():
    geom = ClipGeometry(5, 2, 4, 1)
    lengths = {3: 10, 0: 10, 1: 5, 2: 20}
    groups = group_episodes(lengths, geom, samples_per_shard=12)
    assert groups == [[0, 1], [2], [3]]
    assert groups == group_episodes(dict(reversed(list(lengths.items()))), geom, 12)


def test_latent_frame_mask_follows_causal_vae_grouping():
    pad = np.zeros((2, 9), bool)
    pad[0, 3:] = True  # frames 3..8 padding: latent 1 (pixels 1-4) still has real frames 1, 2
    pad[1, 1:] = True
    assert latent_frame_mask(pad).tolist() == [[True, True, False], [True, False, False]]


def test_pool_latents_averages_spatially():
    x = np.arange(2 * 16 * 3 * 4 * 8, dtype=np.float32).reshape(2, 16, 3, 4, 8)
    y = pool_latents(x, 2)
    assert y.shape == (2, 16, 3, 2, 4)
    assert np.isclose(y[1, 3, 2, 1, 2], x[1, 3, 2, 2:4, 4:6].mean())
    with pytest.raises(ValueError, match="not divisible"):
        pool_latents(x, 3)


def test_merge_stats_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))

    def moments(v):
        return {"count": len(v), "sum": v.sum(0).tolist(), "sumsq": (v * v).sum(0).tolist(),
                "min": v.min(0).tolist(), "max": v.max(0).tolist()}

    merged = merge_stats([{"actions": moments(a), "proprio": moments(b)}, {"actions": moments(b), "proprio": None}])
    both = np.concatenate([a, b])
    assert np.allclose(merged["actions"]["mean"], both.mean(0))
    assert np.allclose(merged["actions"]["std"], both.std(0))
    assert np.allclose(merged["actions"]["min"], both.min(0)) and merged["proprio"]["count"] == 5


def test_identity_diff_names_fields_and_skips_derivable():
    wanted = {"schema": 1, "cache.image_height": 64, "cache.latent_downsample": 4, "cache.vae": {"weights_sha256": "a"}}
    cached = {"schema": 1, "cache.image_height": 32, "cache.latent_downsample": 2, "cache.vae": {"weights_sha256": "b"}}
    diffs = diff_identity(wanted, cached, {"cache.latent_downsample": [4, 8]})
    assert [d.split(":")[0] for d in diffs] == ["cache.image_height", "cache.vae.weights_sha256"]


def test_umt5_without_path_is_a_clear_error():
    with pytest.raises(ValueError, match="cache.text.pretrained_path"):
        text_identity(TextConfig(encoder=TextEncoder.umt5))


def test_minilm_token_embeddings_are_padded_with_mask():
    cfg = TextConfig(encoder=TextEncoder.minilm, max_tokens=16, dim=384, prompt_template="{task}")
    emb, mask = PromptEncoder(cfg).encode(["open the drawer", "pick up the red cube and place it in the bin"])
    assert emb.shape == (2, 16, 384) and mask.shape == (2, 16)
    assert 3 < mask[0].sum() < mask[1].sum() <= 16
    assert np.all(emb[0][~mask[0]] == 0) and np.abs(emb[0][mask[0]]).sum() > 0
    ident = text_identity(cfg)
    assert text_key("a", ident) == text_key("a", ident) != text_key("b", ident)


def _spec(root, cameras, text_keys) -> DecodeSpec:
    return DecodeSpec(str(root), cameras, "observation.state", "action", ClipGeometry(5, 2, 4, 2), 16, 16, text_keys)


def test_decode_joins_cameras_and_quarantines_bad_episodes(tmp_path):
    exp = write_v21_dataset(tmp_path, lengths=(9, 7, 6, 8), size=32)
    # episode 1: NaN action; episode 2: video longer than its data rows
    path = tmp_path / "data/chunk-000/episode_000001.parquet"
    table = pq.read_table(path).to_pandas()
    table.at[3, "action"] = np.array([np.nan] * 7, dtype=np.float32)
    table.to_parquet(path)
    levels = [frame_value(exp.first_global[2] + t) for t in range(exp.lengths[2] + 3)]
    write_video(tmp_path / f"videos/chunk-000/{exp.cameras[0]}/episode_000002.mp4", levels, exp.fps, 32)

    keys = {t: f"key-{i}" for i, t in enumerate(exp.tasks)}
    row = DecodeGroup(_spec(tmp_path, exp.cameras, keys))({"shard": 0, "episodes": [0, 1, 2, 3]})
    rejects = {r["episode"]: r["reason"] for r in json.loads(row["rejects"])}
    assert set(rejects) == {1, 2}
    assert "non-finite action" in rejects[1] and "length mismatch" in rejects[2]
    meta = json.loads(row["meta"])
    assert [m["episode"] for m in meta] == [0] * 5 + [3] * 4
    assert meta[0]["text_key"] == keys[exp.episode_tasks[0]]
    assert row["frames"].shape[1:] == (16, 32, 3)  # two 16x16 cameras side by side
    # sample 1 of episode 0 starts at frame 2: left camera shows frame 2, right camera its mirror level
    first = row["frames"][row["clip_index"][1, 0]]
    assert abs(first[:, :16].mean() - frame_value(2, 0)) < 3 and abs(first[:, 16:].mean() - frame_value(2, 1)) < 3
    ep3 = exp.actions[3][np.minimum(np.arange(6, 10), 7)]  # last sample of episode 3 (t=6), clamped
    assert np.array_equal(row["actions"][-1], ep3)
    assert row["action_mask"][-1].tolist() == [True, True, False, False]
    stats = json.loads(row["stats"])
    assert stats["actions"]["count"] == 9 + 8
