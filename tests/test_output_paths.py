"""Outputs of a `ray job submit` job land where later jobs find them, never in Ray's temporary copy."""

from __future__ import annotations

import pytest

from pipeline.cli import load_config
from pipeline.workdir import cache_root, demo_dataset_dir, mlflow_dir, workdir


@pytest.fixture
def in_ray_copy(tmp_path, monkeypatch):
    """The process runs where Ray unpacks a job's working dir; HOME is a fresh directory."""
    copy = tmp_path / "ray" / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("LIGHT_WAM_HOME", raising=False)
    return copy


def test_a_relative_workdir_in_a_job_goes_to_the_per_user_home(in_ray_copy, tmp_path):
    cfg = load_config([])[0]
    assert workdir(cfg) == tmp_path / "user" / ".cache" / "light-wam" / "work"
    assert cache_root(cfg) == workdir(cfg) / "cache" and mlflow_dir(cfg) == workdir(cfg) / "mlflow"


def test_light_wam_home_names_the_place(in_ray_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHT_WAM_HOME", str(tmp_path / "shared"))
    cfg = load_config(["preset=bench"])[0]
    assert workdir(cfg) == tmp_path / "shared" / "work-bench"


def test_an_output_inside_rays_runtime_directory_is_refused(in_ray_copy):
    cfg = load_config([f"cache.root={in_ray_copy / 'cache'}"])[0]
    with pytest.raises(ValueError, match="cache.root=.*inside Ray's temporary runtime directory"):
        cache_root(cfg)


def test_outside_a_job_a_relative_workdir_stays_in_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHT_WAM_HOME", raising=False)
    assert workdir(load_config([])[0]) == tmp_path / "work"


def test_an_ablation_over_the_demos_keeps_each_dataset_it_recorded(tmp_path):
    twenty = load_config([f"workdir={tmp_path}", "preset=bench", "demo.episodes_per_task=20"])[0]
    five = load_config([f"workdir={tmp_path}", "preset=bench", "demo.episodes_per_task=5"])[0]
    again = load_config([f"workdir={tmp_path}", "preset=bench", "demo.episodes_per_task=20", "train.steps=7"])[0]
    assert demo_dataset_dir(twenty) != demo_dataset_dir(five)
    assert demo_dataset_dir(again) == demo_dataset_dir(twenty)
