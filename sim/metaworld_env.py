"""One MetaWorld v3 task with fast multi-camera rendering, seeded layouts and its scripted expert.

Used to generate the demo dataset (`sim.demos`) and, later, for closed-loop
evaluation. Observations hold only what a real robot has: camera images and
its own state (end-effector position + gripper opening). MetaWorld's 39-number
observation (object and goal positions) stays inside, fed only to the expert.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the mujoco import

import re
import warnings
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import metaworld  # noqa: F401  (registers the Meta-World/* gymnasium ids)
import mujoco
import numpy as np
from metaworld.policies import ENV_POLICY_MAP

Obs = dict[str, Any]  # {"images": {camera: uint8 [H, W, 3]}, "state": float32 [4]}

STATE_NAMES = ["ee_x", "ee_y", "ee_z", "gripper_opening"]
ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "gripper"]

# Cameras every MetaWorld v3 scene defines.
CAMERA_NAMES = ["topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV"]
# MetaWorld's corner cameras are mounted rolled by 180 degrees; their renders are rotated back.
UPSIDE_DOWN_CAMERAS = {"corner", "corner2", "corner3", "corner4"}


@dataclass(frozen=True)
class FreeCamera:
    """A camera of ours, aimed by MuJoCo's free-camera parameters (metres and degrees)."""

    lookat: tuple[float, float, float]
    distance: float
    azimuth: float
    elevation: float

    def mjv(self) -> mujoco.MjvCamera:
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam.lookat[:] = self.lookat
        cam.distance, cam.azimuth, cam.elevation = self.distance, self.azimuth, self.elevation
        return cam


# MetaWorld's own scene cameras sit ~2 m away: at 64x64 a 2 cm goal marker is one pixel. `workspace`
# frames only the region every MT10 object and goal is drawn from (x -0.4..0.25, y 0.4..0.95,
# z 0..0.35), from the front-right and above, so the same marker covers 6-9 pixels instead of 2.
# `workspace_left` is its mirror image from the front-left: a goal floating in the air (reach,
# pick-place) lies anywhere along one ray of a single view; a second view 60 degrees away fixes it.
VIRTUAL_CAMERAS: dict[str, FreeCamera] = {
    "workspace": FreeCamera(lookat=(-0.05, 0.7, 0.12), distance=1.0, azimuth=-60.0, elevation=-35.0),
    "workspace_left": FreeCamera(lookat=(-0.05, 0.7, 0.12), distance=1.0, azimuth=-120.0, elevation=-35.0),
}
ALL_CAMERAS = CAMERA_NAMES + list(VIRTUAL_CAMERAS)

INSTRUCTIONS: dict[str, str] = {
    # MT10
    "reach": "reach the goal position",
    "push": "push the puck to the goal",
    "pick-place": "pick up the puck and place it at the goal",
    "door-open": "open the door",
    "drawer-open": "open the drawer",
    "drawer-close": "close the drawer",
    "button-press-topdown": "press the button from the top",
    "peg-insert-side": "insert the peg into the hole from the side",
    "window-open": "open the window",
    "window-close": "close the window",
    # a few more common ones
    "button-press": "press the button",
    "door-close": "close the door",
    "faucet-open": "turn the faucet on",
    "faucet-close": "turn the faucet off",
    "coffee-button": "press the coffee machine button",
    "handle-press": "press the handle down",
    "handle-pull": "pull the handle up",
    "lever-pull": "pull the lever up",
    "plate-slide": "slide the plate into the goal",
    "sweep-into": "sweep the puck into the hole",
    "dial-turn": "turn the dial",
}


def task_names() -> list[str]:
    """Every MetaWorld v3 task that ships a scripted expert."""
    return sorted(ENV_POLICY_MAP)


def instruction_for(task: str) -> str:
    """Natural-language instruction: from the table, else readable words from the task name."""
    base = re.sub(r"-v\d+$", "", task)
    return INSTRUCTIONS.get(base, base.replace("-", " "))


class MetaWorldEnv:
    """A MetaWorld v3 task: seeded resets, 4-d robot state, images from named cameras."""

    def __init__(self, task: str, cameras: list[str], width: int, height: int, max_steps: int) -> None:
        if task not in ENV_POLICY_MAP:
            raise ValueError(f"unknown MetaWorld task '{task}'; available: {', '.join(task_names())}")
        self.task = task
        self.instruction = instruction_for(task)
        self.cameras = list(cameras)
        self.max_steps = max_steps
        env = gym.make("Meta-World/MT1", env_name=task, disable_env_checker=True)
        # Set a task once (fully observable, as MT1 makes it) and stop re-sampling it on reset:
        # layouts come from the seeded random vector instead (see reset).
        selector = env
        while not hasattr(selector, "toggle_sample_tasks_on_reset"):
            selector = selector.env  # type: ignore[attr-defined]
        selector.toggle_sample_tasks_on_reset(False)
        selector.sample_tasks()
        self._gym_env = env
        self._env = env.unwrapped
        if max_steps > self._env.max_path_length:
            raise ValueError(f"max_steps {max_steps} exceeds MetaWorld's episode limit {self._env.max_path_length}")
        model = self._env.model
        known = [model.camera(i).name for i in range(model.ncam)] + list(VIRTUAL_CAMERAS)
        unknown = [c for c in self.cameras if c not in known]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown} for {task}; available: {', '.join(known)}")
        # No multisampling and no shadows: ~7x faster offscreen rendering, same content.
        model.vis.quality.offsamples = 0
        model.light_castshadow[:] = 0
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self._renderer = mujoco.Renderer(model, height=height, width=width)
        self._views = {c: VIRTUAL_CAMERAS[c].mjv() if c in VIRTUAL_CAMERAS else c for c in self.cameras}
        self._policy = ENV_POLICY_MAP[task]()
        self._full_obs: np.ndarray | None = None
        self._steps = 0

    def reset(self, seed: int) -> Obs:
        """New layout drawn from `seed`: the same seed always gives the same scene."""
        env = self._env
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env.seed(seed)
        self._full_obs, _ = env.reset()
        # MetaWorld moves the goal marker by editing the model after its last forward pass: without one
        # more, the first frame of every episode shows the previous episode's goal.
        mujoco.mj_forward(env.model, env.data)
        self._steps = 0
        return self._observe()

    def step(self, action: np.ndarray) -> tuple[Obs, bool, bool]:
        """Apply a 4-d action in [-1, 1]. Returns (obs, success, done)."""
        if self._full_obs is None:
            raise RuntimeError("call reset(seed) before step()")
        if self._steps >= self.max_steps:
            raise RuntimeError(f"episode already ended after {self.max_steps} steps; call reset(seed)")
        action = np.clip(np.asarray(action, dtype=np.float32).reshape(4), -1.0, 1.0)
        self._full_obs, _, _, _, info = self._env.step(action)
        self._steps += 1
        success = bool(info["success"])
        done = success or self._steps >= self.max_steps
        return self._observe(), success, done

    def expert_action(self) -> np.ndarray:
        """MetaWorld's scripted policy for this task, fed the full (privileged) observation."""
        if self._full_obs is None:
            raise RuntimeError("call reset(seed) before expert_action()")
        with warnings.catch_warnings():  # the experts warn on saturated commands; we clip to [-1, 1] anyway
            warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
            action = self._policy.get_action(self._full_obs)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def robot_state(self) -> np.ndarray:
        """End-effector position (3) and gripper opening in [0, 1] (1), read from the simulator."""
        env = self._env
        fingers = env.data.body("rightclaw").xpos - env.data.body("leftclaw").xpos
        opening = np.clip(np.linalg.norm(fingers) / 0.1, 0.0, 1.0)  # fingers open ~0.1 m apart at most
        return np.append(env.get_endeff_pos(), opening).astype(np.float32)

    def render(self) -> dict[str, np.ndarray]:
        """uint8 [H, W, 3] per camera, upright."""
        images = {}
        for camera in self.cameras:
            self._renderer.update_scene(self._env.data, camera=self._views[camera])
            image = self._renderer.render()
            if camera in UPSIDE_DOWN_CAMERAS:
                image = image[::-1, ::-1]
            images[camera] = np.ascontiguousarray(image)
        return images

    def _observe(self) -> Obs:
        return {"images": self.render(), "state": self.robot_state()}

    def close(self) -> None:
        """Release the renderer and the simulator (avoids EGL teardown noise at exit)."""
        self._renderer.close()
        self._gym_env.close()

    def __enter__(self) -> MetaWorldEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
