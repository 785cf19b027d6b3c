"""`python -m pipeline.prior.corpus`: the action-free video corpus, its layouts checked, its recording resumable."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import subprocess_env

from pipeline.cli import load_config
from pipeline.prior.corpus import (
    CorpusError,
    check_layouts_disjoint,
    corpus_dir,
    ensure_corpus,
)
from stages.lerobot import LeRobotDataset

CORPUS = ["demo.width=32", "demo.height=32", "demo.max_steps=12", "corpus.tasks=[reach-v3,drawer-close-v3]",
          "corpus.episodes_per_task=2", "corpus.workers=1"]


def test_corpus_layouts_may_not_be_demo_layouts():
    cfg = load_config(["demo.tasks=[reach-v3]", "corpus.tasks=[reach-v3]", "corpus.seed=0"])[0]  # the demo's seed
    with pytest.raises(CorpusError, match="demo or evaluation layouts"):
        check_layouts_disjoint(cfg)


def test_killed_recording_resumes_without_recording_finished_episodes(tmp_path, capsys):
    args = [f"workdir={tmp_path}", *CORPUS]
    cfg = load_config(args)[0]
    out = corpus_dir(cfg)
    spool = out.parent / f".{out.name}.spool"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.prior.corpus", *args], env=subprocess_env(""),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not list(spool.glob("*.npz")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    finished = len(list(spool.glob("*.npz")))
    assert finished >= 1 and not (out / "demo_config.json").exists()

    assert ensure_corpus(cfg) == out
    printed = capsys.readouterr().out
    assert f"{finished} episodes came from the spool" in printed
    dataset = LeRobotDataset(out)
    assert len(dataset.episodes) == 4 and not spool.exists()
    ensure_corpus(cfg)  # complete: skipped
    assert "complete: skipped" in capsys.readouterr().out
