"""benchmarks/state_baseline.py: the no-image yardstick fits what the state and instruction determine, and no more."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "state_baseline.py"
_spec = importlib.util.spec_from_file_location("benchmark_state_baseline", _PATH)
baseline = sys.modules["benchmark_state_baseline"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(baseline)


def samples(n: int, seed: int) -> list[dict]:
    """Two instructions; the chunk is +state for the first and -state for the second, plus a hidden layout term."""
    texts = [torch.randn(6, 8, generator=torch.Generator().manual_seed(99 + t)) for t in range(2)]
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        task = i % 2
        state = torch.rand(3, generator=gen) * 2 - 1
        hidden = torch.rand(3, generator=gen) * 2 - 1  # what only an image would show
        chunk = ((1 if task == 0 else -1) * state * 0.8 + 0.2 * hidden).expand(4, 3)
        mask = torch.tensor([True, True, True, i % 3 != 0])  # some chunks end early
        out.append({"proprio": state, "actions": chunk.clone(), "action_mask": mask, "frame": i,
                    "text": texts[task], "text_mask": torch.tensor([True] * (3 + task) + [False] * (3 - task))})
    return out


def test_fits_the_state_and_instruction_part_only():
    train = samples(2000, seed=0)
    policy = baseline.fit_state_only(train, steps=3000, batch_size=32, lr=3e-3)
    assert len(policy.task_codes) == 2
    test = samples(200, seed=1)
    batch = {k: torch.stack([s[k] for s in test]) for k in ("proprio", "text", "text_mask")}
    pred = policy.predict_actions(batch)
    target = torch.stack([s["actions"] for s in test])
    known = torch.stack([((1 if i % 2 == 0 else -1) * s["proprio"] * 0.8).expand(4, 3) for i, s in enumerate(test)])
    err = (pred - target).pow(2).mean()
    hidden_part = (known - target).pow(2).mean()  # what no policy blind to the images can remove
    assert err < 1.3 * hidden_part
    assert err < 0.1 * target.pow(2).mean()


def test_closed_loop_wrapper_takes_raw_state_and_returns_raw_actions():
    from sim.rollout import Request

    train = samples(200, seed=0)
    policy = baseline.fit_state_only(train, steps=200, batch_size=32, lr=3e-3)
    stats = {"proprio": {"min": [0.0] * 3, "max": [2.0] * 3}, "actions": {"min": [-4.0] * 3, "max": [4.0] * 3}}
    text = {name: (train[t]["text"].numpy(), train[t]["text_mask"].numpy()) for t, name in enumerate(["a", "b"])}
    loop_policy = baseline.StateOnlyChunkPolicy(policy, stats, text)
    raw_state = np.array([1.5, 0.5, 1.0], dtype=np.float32)  # normalized: [0.5, -0.5, 0]
    image = np.zeros((8, 16, 3), np.uint8)
    chunks = loop_policy.act_batch([Request(image, raw_state, "a"), Request(image, raw_state, "b")])
    normalized = policy.predict_actions({"proprio": torch.tensor([[0.5, -0.5, 0.0]] * 2),
                                         "text": torch.stack([train[0]["text"], train[1]["text"]]),
                                         "text_mask": torch.stack([train[0]["text_mask"], train[1]["text_mask"]])})
    np.testing.assert_allclose(np.stack(chunks), 4 * normalized.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError, match="not in the training data"):
        loop_policy.act_batch([Request(image, raw_state, "c")])


def test_task_balanced_weights_draw_a_rare_task_as_often_as_a_common_one():
    codes = torch.tensor([[0.0, 1.0]] * 30 + [[1.0, 0.0]] * 10 + [[0.5, 0.5]] * 60)  # 30 / 10 / 60 samples
    weights = baseline.task_balanced_weights(codes)
    draws = torch.multinomial(weights, 30000, replacement=True, generator=torch.Generator().manual_seed(0))
    share = torch.stack([(draws < 30).float().mean(), ((draws >= 30) & (draws < 40)).float().mean(),
                         (draws >= 40).float().mean()])
    np.testing.assert_allclose(share.numpy(), [1 / 3] * 3, atol=0.02)
    assert torch.allclose(weights[:30], weights[0].expand(30))  # uniform within a task


def test_rolls_out_on_the_demonstrations_own_layouts(tmp_path):
    """eval.layouts=demo: a yardstick replays the layouts its demos were recorded on, in their order."""
    import json
    from types import SimpleNamespace

    import pyarrow.parquet as pq

    from pipeline.cli import load_config
    from pipeline.workdir import demo_dataset_dir
    from sim.demos import generate
    from sim.lerobot_writer import EPISODES_PATH
    from sim.metaworld_env import instruction_for

    cfg, _ = load_config([f"workdir={tmp_path}", "demo.tasks=[reach-v3]", "demo.cameras=[corner,gripperPOV]",
                          "demo.episodes_per_task=2", "demo.max_steps=45", "demo.width=32", "demo.height=32",
                          "demo.workers=1", "cache.image_height=32", "cache.image_width=32", "eval.tasks=[reach-v3]",
                          "eval.episodes_per_task=2", "eval.max_steps=6", "eval.replan_every=3",
                          "eval.num_workers=0", "eval.videos_per_task=0", "eval.layouts=demo"])
    generate(cfg.demo, demo_dataset_dir(cfg), show_progress=False)
    text = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    policy = baseline.StateOnlyPolicy(text.mean(0, keepdim=True), proprio_dim=4, horizon=3, action_dim=4)
    limits = {"min": [-1.0] * 4, "max": [1.0] * 4}
    loop_policy = baseline.StateOnlyChunkPolicy(policy.eval(), {"proprio": limits, "actions": limits},
                                                {instruction_for("reach-v3"): (text.numpy(), np.ones(3, bool))})
    handle = SimpleNamespace(fingerprint="cache-under-test",
                             manifest={"identity": {"data.cameras": ["observation.images.corner",
                                                                     "observation.images.gripperPOV"]}})

    baseline.roll_out(cfg, handle, loop_policy, "state-only", "an untrained MLP", {})

    results = json.loads((tmp_path / "eval" / "state-only-demo-layouts" / "results.json").read_text())
    recorded = pq.read_table(demo_dataset_dir(cfg) / EPISODES_PATH).column("layout_seed").to_pylist()
    assert results["layouts"] == "demo" and results["cache"] == "cache-under-test"
    assert [e["seed"] for e in results["per_episode"]] == recorded
    assert [e["steps"] for e in results["per_episode"]] == [6, 6]
