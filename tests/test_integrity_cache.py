"""Issue 35 end to end: real Ray on 127.0.0.1, real mp4s, tiny VAE.

A v3.0 dataset whose episode 1 has rows in the data parquet but no metadata row
is built once; the build quarantines it by `cache.max_reject_fraction`. The same
cache then serves the shard checks training does while it reads.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from damage import drop_metadata_row, flip_byte, truncate
from lerobot_fixtures import write_v3_dataset
from test_cache import config, overrides, samples_of

from pipeline.preprocess import main, preprocess
from stages.cache_loader import open_cache, read_shard
from stages.manifest import ManifestError, read_manifest, validate_shards
from stages.plan import ClipGeometry, plan_episode
from stages.shard_check import ShardError

LENGTHS = (6, 7, 5)
SMALL = ("cache.samples_per_shard=3",)  # a shard per episode, so one can be damaged alone


@pytest.fixture(scope="module")
def unlisted(tmp_path_factory):
    root = tmp_path_factory.mktemp("unlisted")
    exp = write_v3_dataset(root / "ds", lengths=LENGTHS, cameras=("observation.images.front",))
    drop_metadata_row(root / "ds", 1)  # episode 1's rows stay in data/chunk-000/file-000.parquet
    return root, exp


@pytest.fixture(scope="module")
def lenient(ray_cluster, unlisted):
    root, _ = unlisted
    result = preprocess(config(root / "ds", root / "cache", *SMALL, "cache.max_reject_fraction=0.5"))
    assert result.ok, result.message
    return result


def test_unlisted_episode_fails_a_strict_build_naming_it_before_ray(unlisted, capsys):
    root, _ = unlisted
    assert main(overrides(root / "ds", root / "strict", *SMALL)) == 1  # the exit status of the command
    out = " ".join(capsys.readouterr().out.split())
    assert "1 of 3 episodes rejected" in out and "cache.max_reject_fraction" in out
    assert "episode 1: 7 rows in" in out and "file-000.parquet" in out and "meta/episodes" in out
    assert not (root / "strict").exists()  # refused before any work


def test_unlisted_episode_is_quarantined_and_the_others_are_exact(lenient, unlisted):
    _, exp = unlisted
    manifest = lenient.manifest
    assert manifest["episodes"] == 3 and [r["episode"] for r in manifest["rejected"]] == [1]
    assert "file-000.parquet" in manifest["rejected"][0]["reason"]
    geom = ClipGeometry.from_config(config(unlisted[0] / "ds", unlisted[0] / "cache").cache)
    samples = samples_of(lenient.cache_dir)
    assert set(samples) == {f"{ep}/{t}" for ep in (0, 2) for t in plan_episode(LENGTHS[ep], geom).starts}
    for key, s in samples.items():
        ep, t = map(int, key.split("/"))
        i = list(plan_episode(LENGTHS[ep], geom).starts).index(t)
        assert np.array_equal(s["actions"], exp.actions[ep][plan_episode(LENGTHS[ep], geom).action_index[i]])


def test_noop_rerun_says_the_cache_was_reused_and_when_it_was_built(lenient, unlisted):
    root, _ = unlisted
    again = preprocess(config(root / "ds", root / "cache", *SMALL, "cache.max_reject_fraction=0.5"))
    assert again.ok and again.skipped
    built = read_manifest(lenient.cache_dir)["built_at"]
    assert again.message.startswith("cache reused") and built in again.message


def _header_offset(path, member: int) -> int:
    with tarfile.open(path) as tar:
        return tar.getmembers()[member].offset


def _inside_latents(path) -> int:
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("video_latents.npy"))
        return member.offset_data + member.size - 8  # a float of the array, not its header


DAMAGES = {
    "latent byte flipped": lambda p: flip_byte(p, _inside_latents(p)),
    "tar header byte flipped": lambda p: flip_byte(p, _header_offset(p, 4) + 3),  # inside a member name
    "truncated": lambda p: truncate(p, 0.6),
    "missing on this node": lambda p: p.unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_shard_fails_training_reads_naming_shard_cache_and_rebuild(lenient, tmp_path, unlisted, damage):
    cache = tmp_path / "cache"
    shutil.copytree(lenient.cache_dir.parent, cache)
    cfg = config(unlisted[0] / "ds", cache, *SMALL, "cache.max_reject_fraction=0.5")
    handle = open_cache(Path(cfg.cache.root), lenient.manifest["identity"])  # opened while intact (another node)
    shard = handle.shard_paths[-1]
    DAMAGES[damage](shard)
    with pytest.raises(ShardError) as err:
        list(handle.dataset())
    message = str(err.value)
    assert shard.name in message and str(handle.cache_dir) in message
    assert "python -m pipeline.preprocess" in message and f"rm {shard} {shard.with_suffix('.json')}" in message


def test_bad_tar_header_read_without_a_manifest_is_a_clear_error(lenient, tmp_path):
    shard = tmp_path / "shard.tar"
    shutil.copy(lenient.cache_dir / lenient.manifest["shards"][0]["file"], shard)
    flip_byte(shard, _header_offset(shard, 4) + 3)
    with pytest.raises(ManifestError, match="shard.tar"):
        list(read_shard(shard))


def test_following_the_rebuild_hint_makes_the_next_build_redo_that_shard(lenient, tmp_path, unlisted):
    """After the hint's `rm`, the build's no-op check fails on that shard and its group is redone alone
    (a build resuming over missing shards is `test_cache.test_killed_run_resumes_to_the_clean_sample_set`)."""
    cache = tmp_path / "cache"
    shutil.copytree(lenient.cache_dir.parent, cache)
    cfg = config(unlisted[0] / "ds", cache, *SMALL, "cache.max_reject_fraction=0.5")
    handle = open_cache(Path(cfg.cache.root), lenient.manifest["identity"])
    shard = handle.shard_paths[0]
    flip_byte(shard, _inside_latents(shard))
    with pytest.raises(ShardError) as err:
        list(handle.dataset())
    removed = str(err.value).split("`rm ")[1].split("`")[0].split()
    for path in removed:
        Path(path).unlink()
    with pytest.raises(ManifestError, match=shard.name):
        validate_shards(handle.cache_dir, read_manifest(handle.cache_dir))
    left = sorted(p.name for p in handle.cache_dir.glob("shard-*"))
    assert shard.name not in left and len(left) == 2 * (len(handle.shard_paths) - 1)
