"""benchmarks/inference.py: every path it times runs on the current model API and computes the same actions."""

import numpy as np

from benchmarks.inference import child


def test_fast_paths_compute_the_plain_models_actions():
    plain = child("demo", "plain", 1, 0, 1)
    for path in ("fast", "fast+vae2d+kv"):
        fast = child("demo", path, 1, 0, 1)
        assert fast["blocks"] <= plain["blocks"] and fast["step_s"] > 0
        np.testing.assert_allclose(fast["actions"], plain["actions"], atol=1e-4)


def test_narrow_path_rounds_the_blocks_weights_to_bf16_and_stays_close():
    fast = np.array(child("demo", "fast+vae2d+kv", 1, 0, 1)["actions"])
    narrow = np.array(child("demo", "fast+vae2d+kv+narrow", 1, 0, 1)["actions"])
    assert np.abs(narrow - fast).max() > 0  # the weights were rounded
    np.testing.assert_allclose(narrow, fast, atol=5e-2)
