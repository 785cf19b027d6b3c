"""benchmarks/metaworld.py: the Wilson interval, the overrides it passes, the report and results-log updates.

The end-to-end path (two `pipeline.run` subprocesses) is the smoke command in the
benchmark's docstring; here only its pure parts, fast.
"""

import pytest

import benchmarks.metaworld as bench
from pipeline.cli import load_config


@pytest.mark.parametrize("k, n, low, high", [
    (8, 10, 0.4902, 0.9433),  # textbook value
    (45, 50, 0.7864, 0.9565),
    (0, 10, 0.0, 0.2775),  # upper = z^2 / (n + z^2)
    (10, 10, 0.7225, 1.0),
    (1, 2, 0.0945, 0.9055),
])
def test_wilson_interval_known_values(k, n, low, high):
    got = bench.wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=5e-4)


def test_wilson_interval_without_trials_is_uninformative():
    assert bench.wilson_interval(0, 0) == (0.0, 1.0)
    assert bench.wilson_cell(0, 0) == "-"
    assert bench.wilson_cell(8, 10) == "8/10 = 80% (49%-94%)"


def test_flags_become_pipeline_overrides_that_parse():
    args = bench.parse_args(["--tasks", "reach-v3", "drawer-close-v3", "--demos", "2", "--episodes", "3",
                             "--steps", "10", "train.num_workers=1", "--no-write"])
    overrides = bench.overrides_from(args)
    assert overrides[0] == "preset=bench" and overrides[-1] == "train.num_workers=1"
    cfg, _ = load_config(overrides)
    assert cfg.demo.tasks == cfg.eval.tasks == ["reach-v3", "drawer-close-v3"]
    assert (cfg.demo.episodes_per_task, cfg.eval.episodes_per_task, cfg.train.steps) == (2, 3, 10)
    assert cfg.train.num_workers == 1 and args.no_write
    with pytest.raises(SystemExit):
        bench.parse_args(["--bogus"])


def test_bench_preset_is_mt10_with_disjoint_eval_seeds():
    cfg, _ = load_config(["preset=bench"])
    assert len(cfg.demo.tasks) == 10 and cfg.eval.tasks == cfg.demo.tasks
    assert cfg.eval.episodes_per_task == 50 and cfg.workdir == "work-bench"
    assert cfg.eval.seed != cfg.demo.seed


def test_a_run_evaluated_again_with_other_settings_is_not_reported_as_this_arm():
    cfg, _ = load_config(["preset=bench", "eval.episodes_per_task=10", "eval.tasks=[reach-v3,push-v3]"])
    logged = {"episodes_per_task": 10, "seed": cfg.eval.seed, "replan_every": cfg.eval.replan_every,
              "tasks": {"reach-v3": {}, "push-v3": {}}}
    assert bench.evaluation_mismatch(logged, cfg) == ""
    replanned = {**logged, "replan_every": 4}
    assert bench.evaluation_mismatch(replanned, cfg) == f"replan_every 4 instead of {cfg.eval.replan_every}"
    fewer = {**logged, "episodes_per_task": 5, "tasks": {"reach-v3": {}}}
    assert bench.evaluation_mismatch(fewer, cfg) == "episodes_per_task 5 instead of 10; no result for push-v3"


def _arm(name: str, counts: dict[str, tuple[int, int]]) -> "bench.ArmResult":
    mean = sum(k / n for k, n in counts.values()) / len(counts)
    return bench.ArmResult(bench.Arm(name, ()), "0123456789abcdef", f"bench-{name}", "f" * 64, counts, mean,
                           600.0, 27.0, 900.0)


def test_markdown_has_a_row_per_task_and_the_pooled_mean():
    results = [_arm("full", {"reach-v3": (8, 10), "push-v3": (2, 10)}),
               _arm("action", {"reach-v3": (10, 10), "push-v3": (0, 10)})]
    text = bench.markdown(results, ["preset=bench", "train.steps=10"], "test machine")
    assert "| reach-v3 | 8/10 = 80% (49%-94%) | 10/10 = 100% (72%-100%) |" in text
    assert "**50.0%** (30%-70%)" in text  # 10/20 pooled
    assert "10 steps x 2 workers x batch 8 = 160 samples" in text and "NOT shared" not in text


def test_results_file_keeps_header_and_replaces_the_same_command(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(bench.HEADER)  # as committed: a placeholder below the marker
    bench.update_results(path, "2026-01-01 10:00", "python -m benchmarks.metaworld", "table A\n")
    bench.update_results(path, "2026-01-01 11:00", "python -m benchmarks.metaworld --steps 10", "table B\n")
    bench.update_results(path, "2026-01-02 09:00", "python -m benchmarks.metaworld", "table C\n")
    text = path.read_text()
    assert text.startswith("# Benchmark results") and text.count(bench.MARKER) == 1
    assert "table A" not in text and text.index("table C") < text.index("table B")
    assert text.count("## ") == 2 and "No measurement yet" not in text
