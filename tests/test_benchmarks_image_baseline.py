"""benchmarks/image_baseline.py: the conv policy reads where things are in the frame, which the state cannot give."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "image_baseline.py"
_spec = importlib.util.spec_from_file_location("benchmark_image_baseline", _PATH)
baseline = sys.modules["benchmark_image_baseline"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(baseline)

from benchmarks.state_baseline import fit_state_only  # noqa: E402  (importable once the script set sys.path)
from model.pixel_keypoints import SpatialSoftmax  # noqa: E402

TEXTS = [torch.randn(5, 8, generator=torch.Generator().manual_seed(7 + t)) for t in range(2)]


def scene(n: int, seed: int) -> tuple[list[dict], torch.Tensor]:
    """A bright 3x3 marker at a random place in a 16x32 frame; the chunk points at it (sign set by the task)."""
    gen = torch.Generator().manual_seed(seed)
    frames = torch.zeros(n, 16, 32, 3, dtype=torch.uint8)
    out = []
    for i in range(n):
        task = i % 2
        row, col = torch.randint(1, 15, (1,), generator=gen).item(), torch.randint(1, 31, (1,), generator=gen).item()
        frames[i, row - 1:row + 2, col - 1:col + 2] = 255
        target = torch.tensor([col / 15.5 - 1.0, row / 7.5 - 1.0]) * (1 if task == 0 else -1)
        out.append({"proprio": torch.rand(3, generator=gen) * 2 - 1, "actions": target.expand(4, 2).clone(),
                    "action_mask": torch.ones(4, dtype=torch.bool), "text": TEXTS[task],
                    "text_mask": torch.ones(5, dtype=torch.bool)})
    return out, frames


def test_spatial_softmax_gives_the_peak_of_each_map():
    maps = torch.zeros(1, 2, 5, 9)
    maps[0, 0, 1, 6] = 50.0  # row 1 of 5, column 6 of 9
    maps[0, 1, 4, 0] = 50.0
    points = SpatialSoftmax()(maps)
    np.testing.assert_allclose(points[0].numpy(), [0.5, -1.0, -0.5, 1.0], atol=1e-4)  # x0, x1, y0, y1


def test_reads_a_position_that_only_the_image_shows():
    train, train_frames = scene(1200, seed=0)
    test, test_frames = scene(200, seed=1)
    policy = baseline.fit_image_policy(train, train_frames, steps=800, batch_size=32, lr=3e-3, shift=0, channels=16)
    state_only = fit_state_only(train, steps=800, batch_size=32, lr=3e-3)
    batch = {"current_pixels": baseline.to_unit(test_frames), "proprio": torch.stack([s["proprio"] for s in test]),
             "text": torch.stack([s["text"] for s in test]), "text_mask": torch.stack([s["text_mask"] for s in test])}
    target = torch.stack([s["actions"] for s in test])
    err = (policy.predict_actions(batch) - target).pow(2).mean()
    assert err < 0.1 * target.pow(2).mean()
    assert (state_only.predict_actions(batch) - target).pow(2).mean() > 5 * err


def test_closed_loop_wrapper_takes_the_rendered_frame_and_raw_state():
    from sim.rollout import Request

    train, frames = scene(64, seed=0)
    policy = baseline.fit_image_policy(train, frames, steps=20, batch_size=16, lr=3e-3, shift=1, channels=8)
    stats = {"proprio": {"min": [0.0] * 3, "max": [2.0] * 3}, "actions": {"min": [-4.0] * 2, "max": [4.0] * 2}}
    text = {name: (TEXTS[t].numpy(), np.ones(5, bool)) for t, name in enumerate(["a", "b"])}
    loop_policy = baseline.ImageChunkPolicy(policy, stats, text)
    raw_state = np.array([1.5, 0.5, 1.0], dtype=np.float32)  # normalized: [0.5, -0.5, 0]
    chunks = loop_policy.act_batch([Request(frames[3].numpy(), raw_state, "a"), Request(frames[5].numpy(), raw_state, "b")])
    normalized = policy.predict_actions({"current_pixels": baseline.to_unit(frames[[3, 5]]),
                                         "proprio": torch.tensor([[0.5, -0.5, 0.0]] * 2),
                                         "text": torch.stack(TEXTS), "text_mask": torch.ones(2, 5, dtype=torch.bool)})
    np.testing.assert_allclose(np.stack(chunks), 4 * normalized.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError, match="not in the training data"):
        loop_policy.act_batch([Request(frames[0].numpy(), raw_state, "c")])
