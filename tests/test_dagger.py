"""DAgger's data step on real MetaWorld: a policy drives, the scripted expert labels, a LeRobot dataset comes out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_evaluate_mlflow import IMAGE, TASK, overrides, tiny_bundle

from pipeline.cli import load_config
from pipeline.dagger import MARKER, collect, main
from pipeline.evaluate import demo_seeds, env_specs
from pipeline.workdir import demo_dataset_dir
from sim.demos import generate, record_episode
from sim.evaluation import plan_episodes
from sim.metaworld_env import MetaWorldEnv, instruction_for
from stages.lerobot import LeRobotDataset

CAMERAS = ["corner", "gripperPOV"]


def dagger_overrides(workdir: Path, *extra: str) -> list[str]:
    return overrides(workdir, "demo.tasks=[reach-v3]", "demo.cameras=[corner,gripperPOV]", "demo.episodes_per_task=1",
                     "demo.max_steps=60", f"demo.width={IMAGE}", f"demo.height={IMAGE}", "demo.workers=1",
                     "dagger.episodes_per_task=2", *extra)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "work"


def episode_table(root: Path):
    return pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pandas()


def test_the_policy_drives_the_expert_labels_and_layouts_stay_new(workdir, tmp_path, capsys):
    cfg, _ = load_config(dagger_overrides(workdir))
    generate(cfg.demo, demo_dataset_dir(cfg), show_progress=False)
    bundle = tiny_bundle(tmp_path / "bundle", seed=0)

    main(dagger_overrides(workdir, f"model={bundle}"))

    out = workdir / "datasets" / "dagger-bundle"
    assert "1 source + 2 on-policy episodes" in " ".join(capsys.readouterr().out.split())
    data = LeRobotDataset(out)
    assert [e.length for e in data.episodes][1:] == [12, 12]  # eval.max_steps=12: one labelled state per action
    demo = LeRobotDataset(demo_dataset_dir(cfg))
    first = data.frames(data.episodes[0])
    np.testing.assert_array_equal(first.action, demo.frames(demo.episodes[0]).action)  # the source comes first
    assert {e.task for e in data.episodes} == {instruction_for(TASK)}

    seeds = [int(s) for s in episode_table(out)["layout_seed"]][1:]
    envs = env_specs(cfg, CAMERAS, [instruction_for(TASK)])
    held_out = {e.seed for e in plan_episodes(envs, cfg.eval.episodes_per_task, cfg.eval.seed, 0, demo_seeds(cfg))}
    assert len(set(seeds)) == 2 and not set(seeds) & (held_out | demo_seeds(cfg)(envs[0]))

    with MetaWorldEnv(TASK, CAMERAS, IMAGE, IMAGE, 12) as env:
        for episode, seed in zip(data.episodes[1:], seeds):
            visited = data.frames(episode)
            expert_run = record_episode(env, seed)
            env.reset(seed)
            np.testing.assert_array_equal(visited.state[0], expert_run.states[0])  # the seed's layout
            np.testing.assert_allclose(visited.action[0], env.expert_action())  # labelled by the expert
            # the untrained policy, not the expert, moved the arm: its states leave the expert's path
            assert np.abs(visited.state[1:] - expert_run.states[1:len(visited.state)]).max() > 1e-3
            # and each label is what the expert commands at the state the policy reached
            assert np.abs(visited.action[1:] - expert_run.actions[1:len(visited.state)]).max() > 1e-3
    meta = json.loads((out / MARKER).read_text())
    assert meta["on_policy_success"] == 0.0 and meta["layouts"][TASK] == seeds

    # round two, from the round-one dataset with the same dagger.seed: new layouts, all episodes carried over
    again = collect(load_config(dagger_overrides(workdir, f"dagger.model={bundle}", f"data.path={out}",
                                                 f"dagger.out={tmp_path / 'round2'}"))[0], show_progress=False)
    assert again["source_episodes"] == 3 and again["on_policy_episodes"] == 2
    assert not set(again["layouts"][TASK]) & set(seeds)
    assert len(LeRobotDataset(tmp_path / "round2").episodes) == 5


def test_refuses_what_it_cannot_label_or_would_overwrite(workdir, tmp_path):
    cfg, _ = load_config(dagger_overrides(workdir))
    generate(cfg.demo, demo_dataset_dir(cfg), show_progress=False)
    bundle = tiny_bundle(tmp_path / "bundle", seed=0)
    with pytest.raises(ValueError, match="no policy to drive"):
        collect(cfg, show_progress=False)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        collect(load_config(dagger_overrides(workdir, f"dagger.model={bundle}",
                                             f"dagger.out={tmp_path / 'taken'}"))[0], show_progress=False)
    with pytest.raises(ValueError, match="frames are 32x32 but the simulator would render 64x64"):
        collect(load_config(dagger_overrides(workdir, f"dagger.model={bundle}", "demo.width=64", "demo.height=64",
                                             f"data.path={demo_dataset_dir(cfg)}"))[0], show_progress=False)
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
