"""End to end: ``fsar-train run`` on a tiny synthetic-actions preset, then ``evaluate`` on the run folder."""

from __future__ import annotations

import json

import pytest

from fsar_train.cli import main


@pytest.fixture
def tiny_run_overrides(tmp_path) -> list[str]:
    settings = [
        f"data.root={tmp_path / 'data'}",
        "data.expected_videos=[]",
        "synthetic.videos_per_class=3",
        "synthetic.n_frames=8",
        "synthetic.size=32",
        "synthetic.workers=1",
        "features.grid=4",
        "metric.options.key_dim=8",
        "episodes.train_queries=2",
        "train.steps=2",
        "train.episodes_per_step=2",
        "train.val_every=1",
        "train.val_episodes=4",
        "train.device=cpu",
        "eval.episodes=6",
        "eval.shots=[1, 3]",
    ]
    return [arg for s in settings for arg in ("-o", s)]


def test_run_trains_and_evaluates_from_the_synthetic_preset(tmp_path, tiny_run_overrides, capsys):
    run_dir = tmp_path / "run"
    assert main(["-q", "run", "--preset", "synthetic-actions", "--run-dir", str(run_dir), *tiny_run_overrides]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["results"]) == {"1"}  # 3-shot needs 4 test videos per class: skipped with a warning
    assert list(results["results"]["1"]) == ["trx", "proto", "otam", "bimhm"]
    assert results["trained"]["trx"]["steps"] == 2
    assert results["protocol"]["n_query_per_class"] == 1
    for name in ("config.toml", "best.pt", "last.pt", "val_episodes.json", "test_episodes_5way_1shot_6_seed0.json",
                 "training_curves.png", "accuracy_vs_shots.png", "confusion_trx.png"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    assert "5-way 1-shot" in capsys.readouterr().out
    assert main(["-q", "evaluate", "--run-dir", str(run_dir), "-o", "eval.episodes=3"]) == 0
    assert json.loads((run_dir / "results.json").read_text())["protocol"]["episodes"] == 3
    with pytest.raises(SystemExit, match=r"eval\.\* overrides only"):
        main(["-q", "evaluate", "--run-dir", str(run_dir), "-o", "train.lr=1"])


def test_presets_and_config_commands(capsys):
    assert main(["presets"]) == 0
    assert "synthetic-actions" in capsys.readouterr().out.split()
    assert main(["config", "--benchmark", "ucf101", "-o", "episodes.n_shot=5"]) == 0
    out = capsys.readouterr().out
    assert "n_shot = 5" in out
    assert 'name = "fsar_llava"' in out  # a benchmark chooses the data; the method stays FSAR-LLaVA
    assert 'benchmark = "ucf101"' in out
