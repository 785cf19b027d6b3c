"""The simulators' configuration: demonstration recording and closed-loop evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Codec(str, Enum):
    h264 = "h264"
    av1 = "av1"
    # h264 at qp 0 with full-resolution colour (yuv444p): frames decode as rendered (+-2 per channel from
    # the RGB<->YUV rounding), so a policy trained on the demos sees what closed-loop evaluation renders.
    h264_lossless = "h264_lossless"


class SimEnv(str, Enum):
    metaworld = "metaworld"
    libero = "libero"


class EvalLayouts(str, Enum):
    heldout = "heldout"  # seeds disjoint from the demonstrations': the score
    demo = "demo"  # the demonstrations' own layouts: a diagnostic (fitting vs generalising), never the score


@dataclass
class DemoConfig:
    """The embedded MetaWorld demonstration dataset (`python -m sim.demos`)."""

    tasks: list[str] = field(default_factory=lambda: ["reach-v3", "drawer-close-v3", "button-press-topdown-v3"])
    episodes_per_task: int = 10
    seed: int = 0
    # a close scene view and the wrist view (MetaWorld names; corner* renders are rotated upright)
    cameras: list[str] = field(default_factory=lambda: ["corner", "gripperPOV"])
    width: int = 64
    height: int = 64
    fps: int = 20
    max_steps: int = 200
    codec: Codec = Codec.h264
    keep_failed: bool = False
    workers: int = 0  # processes recording episodes at once; 0 = one per CPU (the dataset is the same)
    # std of Gaussian noise added to the expert's action before it is executed (the dataset records the
    # expert's clean action at every state visited): more varied motion, e.g. for an action-free video corpus
    action_noise: float = 0.0


@dataclass
class EvalConfig:
    """Closed-loop evaluation (`python -m pipeline.evaluate model=...`)."""

    model: str = ""  # models:/name@alias, models:/name/3, runs:/id/path or a policy bundle directory
    env: SimEnv = SimEnv.metaworld
    # MetaWorld task names (empty = the tasks of the policy's training data);
    # LIBERO: suites (libero_spatial) or single tasks (libero_spatial/3)
    tasks: list[str] = field(default_factory=list)
    episodes_per_task: int = 10
    seed: int = 1000  # episode seeds derive from it; never one of the demo seeds
    # heldout = the score; demo = replay the demo dataset's layouts (MetaWorld), logged under eval_demo/, never crowns
    layouts: EvalLayouts = EvalLayouts.heldout
    max_steps: int = 200
    max_steps_per_suite: dict[str, int] = field(default_factory=lambda: {"libero_10": 700})
    replan_every: int = 10  # execute the first k actions of each chunk
    num_workers: int = 2  # parallel simulators (Ray actors); 0 = one simulator in this process
    videos_per_task: int = 1
    noop_steps: int = 0  # LIBERO: no-op steps before the policy acts (paper: 30)
    flip_gripper: bool = False  # LIBERO: training data used the opposite gripper sign to the env
    champion_alias: str = "champion"  # moved to the evaluated version when it beats the current one
    via_server: str = ""  # ws://host:port of a running `pipeline.serve` of this model: chunks come over the wire
