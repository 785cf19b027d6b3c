"""The config CLI: presets load, overrides apply, bad keys and values are refused clearly."""

import os
import subprocess
import sys

import pytest

from model.config import Pooling
from pipeline.cli import ConfigError, load_config, to_flat_dict


def test_presets_load_with_their_numbers():
    demo, _ = load_config([])
    paper, _ = load_config(["preset=paper"])
    assert demo.preset == "demo" and paper.preset == "paper"
    bb = paper.model.backbone
    assert (bb.num_layers, bb.num_attention_heads, bb.attention_head_dim, bb.ffn_dim) == (30, 12, 128, 8960)
    assert (bb.lora_rank, bb.lora_alpha, bb.adapter_layers) == (64, 128, [8, 16, 24])
    assert (paper.cache.num_frames, paper.cache.frame_stride, paper.cache.action_horizon) == (9, 4, 32)
    assert paper.cache.latent_downsample == 2 and paper.model.flow_shift == 5.0
    assert demo.model.backbone.num_layers < bb.num_layers


def test_overrides_apply_with_types():
    cfg, show = load_config(["train.steps=200", "model.expert.pooling=mean", "train.betas=[0.9,0.99]", "--print-config"])
    assert cfg.train.steps == 200 and isinstance(cfg.train.steps, int)
    assert cfg.model.expert.pooling is Pooling.mean
    assert cfg.train.betas == [0.9, 0.99]
    assert show


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.stepz=3", ["train.stepz", "steps"]),
        ("nosuch.key=1", ["nosuch", "train"]),
        ("train.steps=many", ["train.steps", "int"]),
        ("model.expert.pooling=max", ["model.expert.pooling", "query", "mean"]),
        ("preset=huge", ["huge", "demo", "paper"]),
    ],
)
def test_bad_overrides_name_key_and_allowed_values(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    for word in expected:
        assert word in str(err.value)


def test_flat_dict_covers_every_section():
    flat = to_flat_dict(load_config([])[0])
    for section in ["data", "demo", "cache", "model", "train", "eval", "tracking", "cluster"]:
        assert any(k.startswith(section + ".") for k in flat)
    assert flat["model.expert.pooling"] == "query"


def test_print_config_and_error_exit_codes():
    ok = subprocess.run([sys.executable, "-m", "pipeline.run", "preset=paper", "--print-config"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "num_layers: 30" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "pipeline.run", "train.stepz=1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "train.stepz" in bad.stderr


@pytest.mark.parametrize("step", ["pipeline.run", "pipeline.train"])  # every entry point parses with parse_or_exit
def test_every_entry_point_answers_help(step):
    out = subprocess.run([sys.executable, "-m", step, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"python -m {step}" in out.stdout and "--print-config" in out.stdout
    for preset in ("demo", "paper", "bench"):
        assert f"  {preset} " in out.stdout


def test_demo_recorder_cli_manners(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "sim.demos", "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "--out DIR" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "sim.demos", "--out", str(tmp_path), "demo.episodes_per_task=many"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "episodes_per_task" in bad.stderr and not list(tmp_path.iterdir())


def test_cross_layer_checks_name_both_keys():
    with pytest.raises(ConfigError, match="cache.action_horizon=8 and model.action_horizon=16"):
        load_config(["cache.action_horizon=8"])
    with pytest.raises(ConfigError, match="model.backbone.text_dim=64 must equal cache.text.dim=384"):
        load_config(["model.backbone.text_dim=64"])


def test_allocator_choice_names_the_missing_library():
    from pipeline.config import Allocator
    from pipeline.train import allocator

    assert allocator.worker_env(Allocator.system) == {}
    for choice in (Allocator.tcmalloc, Allocator.jemalloc):
        if allocator.library(choice) is None:  # not installed: an explicit choice fails naming the package
            with pytest.raises(ValueError, match="apt-get install"):
                allocator.worker_env(choice)
    # auto never falls back to the C library's malloc: mimalloc comes with the project's wheels
    auto = allocator.resolve(Allocator.auto)
    assert auto != Allocator.system
    assert allocator.worker_env(Allocator.auto)["LD_PRELOAD"].endswith(allocator.library(auto))
    assert allocator.active() in ("jemalloc", "tcmalloc", "mimalloc", "system")


def test_mimalloc_from_the_wheel_is_what_a_worker_runs_on():
    from pipeline.config import Allocator
    from pipeline.train import allocator

    env = {**os.environ, **allocator.worker_env(Allocator.mimalloc)}
    code = "from pipeline.train import allocator; print(allocator.active())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "mimalloc"
