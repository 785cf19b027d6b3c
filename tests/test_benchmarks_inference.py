"""benchmarks/inference.py: every path it times runs on the current model API and computes the same actions."""

import numpy as np

from benchmarks.inference import child


def test_fast_paths_compute_the_plain_models_actions():
    plain = child("demo", "plain", 1, 0, 1)
    for path in ("fast", "fast+vae2d+kv"):
        fast = child("demo", path, 1, 0, 1)
        assert fast["blocks"] <= plain["blocks"] and fast["step_s"] > 0
        np.testing.assert_allclose(fast["actions"], plain["actions"], atol=1e-4)
