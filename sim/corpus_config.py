"""Configuration of the action-free video corpus (`python -m sim.corpus`, `Config.corpus`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CorpusConfig:
    """Many MetaWorld tasks x many layouts, for pretraining the video prior.

    Cameras, image size, fps, episode length and codec are the demonstrations'
    (`demo.*`), so the corpus and the demos share one VAE and one cache geometry.
    """

    tasks: list[str] = field(default_factory=list)  # empty = every v3 task with a scripted expert (50)
    episodes_per_task: int = 20
    seed: int = 7919  # layout seeds derive from it; checked disjoint from demo and evaluation layouts
    # noise on the executed actions: more varied motion than the expert's own (videos of failures are kept)
    action_noise: float = 0.3
    workers: int = 0  # recording processes; 0 = one per CPU
    out: str = ""  # empty = <workdir>/datasets/corpus-<hash of the recording settings>
