"""`python -m pipeline.prior.corpus [overrides]`: record the action-free video corpus the video prior pretrains on.

MetaWorld scripted experts on many tasks and layouts, with noise on the executed
actions, written as a LeRobot v3.0 dataset like the demos (it keeps the actions
it recorded; pretraining never reads them). Every layout seed is checked
disjoint from the demo and evaluation layouts before anything is simulated.
Each finished episode is kept in a spool directory beside the output, so a
killed recording resumes without simulating its finished episodes again; the
spool goes once the dataset is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.console import console
from pipeline.logged_progress import LoggedProgress
from sim.demo_recorder import Episode, EpisodeRecorder, Key, episode_seed
from sim.demos import (
    ATTEMPTS_PER_EPISODE,
    MARKER,
    demo_config_hash,
    generate,
    print_summary,
)

EVAL_SEED_MARGIN = 64  # evaluation re-draws a seed that collides with a demo seed: cover those too


class CorpusError(ValueError):
    """The corpus cannot be recorded as configured (the message says why)."""


def corpus_demo(cfg: Config):
    """The corpus as a demo-recording config: the demos' cameras and geometry, the corpus' tasks and layouts."""
    from sim.metaworld_env import task_names

    c = cfg.corpus
    return dataclasses.replace(cfg.demo, tasks=list(c.tasks) or task_names(), episodes_per_task=c.episodes_per_task,
                               seed=c.seed, action_noise=c.action_noise, keep_failed=True, workers=c.workers)


def corpus_dir(cfg: Config) -> Path:
    if cfg.corpus.out:
        return Path(cfg.corpus.out).expanduser().resolve()
    return Path(cfg.workdir).expanduser().resolve() / "datasets" / f"corpus-{demo_config_hash(corpus_demo(cfg))}"


def check_layouts_disjoint(cfg: Config) -> int:
    """Refuse a corpus layout that is a demo or an evaluation layout of the same task; returns seeds checked."""
    from sim.evaluation import episode_seed as eval_seed

    demo, corpus = cfg.demo, corpus_demo(cfg)
    clashes, checked = [], 0
    for index, task in enumerate(corpus.tasks):
        mine = {episode_seed(corpus.seed, index, a) for a in range(corpus.episodes_per_task)}
        checked += len(mine)
        taken = {eval_seed(cfg.eval.seed, task, i) for i in range(cfg.eval.episodes_per_task + EVAL_SEED_MARGIN)}
        if task in demo.tasks:
            d = demo.tasks.index(task)
            taken |= {episode_seed(demo.seed, d, a) for a in range(ATTEMPTS_PER_EPISODE * demo.episodes_per_task)}
        clashes += [(task, s) for s in sorted(mine & taken)]
    if clashes:
        raise CorpusError(f"corpus layouts {clashes[:5]} are demo or evaluation layouts "
                          f"(corpus.seed={cfg.corpus.seed}); choose another corpus.seed")
    return checked


class SpooledRecorder(EpisodeRecorder):
    """An `EpisodeRecorder` that keeps each finished episode as a .npz (no pickle) and never records it twice."""

    def __init__(self, spool: Path, demo, workers: int) -> None:
        super().__init__(demo, workers)
        self.spool = spool
        spool.mkdir(parents=True, exist_ok=True)
        self.reused = 0

    def _path(self, key: Key) -> Path:
        return self.spool / f"{key[0]:03d}-{key[1]:05d}.npz"

    def expect(self, keys: list[Key]) -> None:
        super().expect([k for k in keys if not self._path(k).exists()])

    def get(self, key: Key) -> Episode:
        path = self._path(key)
        if path.exists():
            self.reused += 1
            return _load(path)
        episode = super().get(key)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            np.savez(f, task=np.array(episode.task), instruction=np.array(episode.instruction),
                     seed=np.array(episode.seed, np.int64), success=np.array(episode.success),
                     states=episode.states, actions=episode.actions,
                     **{f"image.{cam}": frames for cam, frames in episode.images.items()})
        os.replace(tmp, path)
        return episode

    def close(self) -> None:
        if self.reused:
            console.print(f"corpus: {self.reused} episodes came from the spool of an earlier, unfinished recording")
        super().close()


def _load(path: Path) -> Episode:
    with np.load(path, allow_pickle=False) as z:
        images = {k.removeprefix("image."): z[k] for k in z.files if k.startswith("image.")}
        return Episode(str(z["task"]), str(z["instruction"]), int(z["seed"]), bool(z["success"]),
                       z["states"], z["actions"], images)


def ensure_corpus(cfg: Config) -> Path:
    """The corpus dataset for `cfg`, recorded (or its recording resumed) only if no complete one exists."""
    out = corpus_dir(cfg)
    demo = corpus_demo(cfg)
    marker = out / MARKER
    if marker.exists() and json.loads(marker.read_text()).get("hash") == demo_config_hash(demo):
        console.print(f"corpus: {out} is complete: skipped")
        return out
    checked = check_layouts_disjoint(cfg)
    console.print(f"corpus: {len(demo.tasks)} tasks x {demo.episodes_per_task} layouts ({checked} seeds checked "
                  f"disjoint from demo and evaluation layouts), action noise {demo.action_noise} -> {out}")
    spool = out.parent / f".{out.name}.spool"
    summary = generate(demo, out, progress_cls=LoggedProgress, recorder=partial(SpooledRecorder, spool))
    print_summary(summary)
    console.print(f"corpus: {summary.frames / max(summary.seconds, 1e-9):.1f} frames/s recorded")
    for path in spool.glob("*.npz"):
        path.unlink()
    spool.rmdir()
    return out


def main(argv: list[str] | None = None) -> None:
    from pipeline.cli import parse_or_exit

    cfg = parse_or_exit(argv)
    try:
        console.print(f"corpus ready: {ensure_corpus(cfg)}  (pretrain on it with data.path=<that directory>)")
    except CorpusError as err:
        console.print(f"[red]corpus:[/red] {err}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
