"""benchmarks/claim.py: each arm is the configuration the issue names, the targets are judged as stated, the chart is drawn.

The arms' runs themselves are `pipeline.run` (tested end to end elsewhere); here the pure parts, fast.
"""

import pytest

import benchmarks.claim as claim
from benchmarks.metaworld import Arm, ArmResult
from pipeline.cli import load_config


def _config(key: str, *extra: str):
    args = claim.parse_args(["--arms", key, "--steps", "10", "--episodes", "3", *extra])
    cfg, _ = load_config(claim.arm_overrides(args.keys[0], args))
    return cfg


def test_arms_are_the_issue_table():
    a, b, c, d = (_config(k) for k in ("A20", "B20", "C20", "D20"))
    for cfg in (a, b, c):  # the paper's expert alone on a frozen backbone with LoRA and adapters
        assert cfg.model.backbone.freeze and cfg.model.backbone.lora_rank > 0
        assert not cfg.model.shortcut.enabled and cfg.train.steps == 10
        assert cfg.demo.episodes_per_task == 20 and cfg.eval.episodes_per_task == 3
    assert a.pretrain.before_run and a.model.video_loss_weight > 0
    assert b.pretrain.before_run and b.model.video_loss_weight == 0
    assert not c.pretrain.before_run and c.model.video_loss_weight > 0  # random DiT, random VAE
    assert c.cache.vae.pretrained_path == "" and c.model.backbone.pretrained_path == ""
    assert d.model.shortcut.enabled and d.model.backbone.num_layers == 1 and d.train.steps == 20  # same samples
    assert len({cfg.workdir for cfg in (a, b, c, d)}) == 1  # one MLflow experiment


def test_arm_keys_demos_and_seeds():
    assert _config("A5").demo.episodes_per_task == 5
    assert _config("A20s1").train.seed == 1
    assert _config("C5", "pretrain.steps=7").pretrain.steps == 7  # passthrough reaches every arm
    for bad in ("E20", "A", "Ax", "A20sx"):
        with pytest.raises(SystemExit):
            claim.parse_args(["--arms", bad])


def _result(label: str, per_task: dict[str, tuple[int, int]]) -> ArmResult:
    mean = sum(k / n for k, n in per_task.values()) / len(per_task)
    return ArmResult(Arm(label, ()), "0123456789abcdef", f"run-{label}", "f" * 64, per_task, mean, 600.0, 30.0, 900.0)


def test_targets_say_reached_or_missed_and_by_how_much():
    key = claim.ArmKey
    results = {key("A", 20, 0): _result("A", {"reach-v3": (45, 50), "push-v3": (44, 50)}),  # 89%
               key("B", 20, 0): _result("B", {"reach-v3": (30, 50), "push-v3": (30, 50)}),  # 60%
               key("C", 20, 0): _result("C", {"reach-v3": (40, 50), "push-v3": (40, 50)}),  # 80%
               key("A", 5, 0): _result("A5", {"reach-v3": (20, 50), "push-v3": (20, 50)}),
               key("C", 5, 0): _result("C5", {"reach-v3": (10, 50), "push-v3": (10, 50)})}
    lines = "\n".join(claim.targets(results))
    assert "A at 20 demos >= 85%: reached (89.0%)" in lines
    assert "A - C at 20 demos >= 15 points: missed (+9.0 points)" in lines
    assert "A >= 2 x C at 5 demos: reached (40.0% vs 20.0%, x2.00)" in lines
    assert "A above B (co-training): holds (intervals apart)" in lines
    text = claim.markdown(results, {k: ["preset=bench_prior"] for k in results}, "test machine")
    assert "| position tasks | 89.0%" in text and "| reach-v3 | 45/50 = 90%" in text


def test_bar_chart_is_written(tmp_path):
    results = {claim.ArmKey("A", 20, 0): _result("A", {"reach-v3": (5, 10)}),
               claim.ArmKey("C", 20, 0): _result("C", {"reach-v3": (0, 10)})}
    path = claim.bar_chart(results, tmp_path / "claim.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
