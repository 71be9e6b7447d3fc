"""The fsar command line: help, the main job on a minimal configuration, the store commands, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fsar_apps.cli import main

TINY = [
    "-o", "synthetic.videos_per_class=6",
    "-o", "synthetic.n_frames=8",
    "-o", "synthetic.size=32",
    "-o", "train.steps=2",
    "-o", "train.episodes_per_step=2",
    "-o", "train.val_every=2",
    "-o", "train.val_episodes=10",
    "-o", "train.checkpoint_every=2",
    "-o", "episodes.train_queries=1",
    "-o", "eval.episodes=30",
    "-o", "features.progress=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One minimal run of the whole main job (few classes' videos, few steps, few episodes)."""
    root = tmp_path_factory.mktemp("cli")
    run_dir = root / "run"
    status = main(["--run-dir", str(run_dir), "-o", f"data.root='{root / 'data'}'", *TINY])
    return status, run_dir, root


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["data"],
        ["extract"],
        ["train"],
        ["eval"],
        ["presets"],
        ["prompts"],
        ["pretrain"],
        ["compare"],
        ["store"],
        ["store", "build"],
        ["store", "add"],
        ["store", "query"],
        ["store", "list"],
        ["store", "remove"],
        ["store", "rename"],
        ["store", "restore"],
        ["store", "versions"],
        ["store", "evaluate"],
        ["store", "index"],
    ],
)
def test_every_command_has_help(command, capsys):
    assert main([*command, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_the_main_job_trains_evaluates_prints_the_table_and_builds_the_store(tiny_run, capsys):
    status, run_dir, _ = tiny_run
    assert status == 0
    results = json.loads((run_dir / "results.json").read_text())
    summary = results["results"]
    methods = set(summary["1"])
    assert {"fsar_llava", "proto", "otam", "bimhm", "trx", "fsar_llava (visual only)"} <= methods
    assert summary["1"]["fsar_llava"]["n_episodes"] == 30
    assert len(summary["1"]["trx"]["episode_accuracies"]) == 30  # per-episode, for paired comparisons
    assert set(results["trained"]) == {"fsar_llava", "trx"}
    assert (run_dir / "config.toml").exists()
    assert (run_dir / "baselines" / "trx" / "best.pt").exists()
    assert (run_dir / "store").is_dir()


def test_running_again_prints_the_stored_results_without_re_evaluating(tiny_run, capsys):
    _, run_dir, root = tiny_run
    capsys.readouterr()
    assert main(["--run-dir", str(run_dir), "-o", f"data.root='{root / 'data'}'", *TINY]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "results of the earlier run" in out
    assert "fsar_llava" in out


def test_store_commands_on_the_runs_store(tiny_run, capsys):
    _, run_dir, root = tiny_run
    assert main(["store", "list", "--run-dir", str(run_dir)]) == 0
    listing = capsys.readouterr().out
    assert "10 actions" in listing
    videos = sorted((root / "data").rglob("*.mp4"))
    assert main(["store", "add", "my action", *map(str, videos[:2]), "--run-dir", str(run_dir)]) == 0
    assert main(["store", "query", str(videos[0]), "--run-dir", str(run_dir), "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "added 'my action' from 2 videos" in out
    assert "rank" in out
    assert main(["store", "rename", "my action", "waving", "--run-dir", str(run_dir)]) == 0
    assert main(["store", "remove", "waving", "--run-dir", str(run_dir)]) == 0
    assert main(["store", "versions", "--run-dir", str(run_dir)]) == 0
    assert main(["store", "restore", "2", "--run-dir", str(run_dir)]) == 0


def test_a_run_folder_made_with_another_config_is_refused(tiny_run, capsys):
    _, run_dir, root = tiny_run
    status = main(
        ["train", "--run-dir", str(run_dir), "-o", f"data.root='{root / 'data'}'", *TINY, "-o", "train.lr=0.5"]
    )
    assert status == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--benchmark", "ssv3"], "unknown benchmark 'ssv3'; valid: hmdb51, kinetics100"),
        (["--preset", "nope", "data"], "unknown preset 'nope'; presets:"),
        (
            ["--benchmark", "ucf101", "--data-root", "/nonexistent/ucf", "data"],
            "the data root /nonexistent/ucf does not exist",
        ),
        (["-o", "train.stepz=3", "data"], "train.stepz"),
        (["prompts", "--family", "gpt"], "unknown chat format 'gpt'; registered chat formats: "),
        (["store", "list", "--run-dir", "/nonexistent/run"], "no prototype store at /nonexistent/run/store"),
        (["store", "query", "x.mp4", "--run-dir", "/nonexistent/run"], "is not a run folder"),
    ],
)
def test_user_errors_are_one_sentence_and_a_non_zero_status(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split())
    assert "Traceback" not in err


def test_a_model_that_is_not_on_disk_while_offline_is_a_clear_error(tmp_path, capsys):
    from fsar_train import SyntheticConfig, generate_synthetic_actions

    data = tmp_path / "data"
    generate_synthetic_actions(
        data, SyntheticConfig(videos_per_class=2, n_frames=8, size=32, workers=1), progress=False
    )
    status = main(
        [
            "--run-dir",
            str(tmp_path / "run"),
            "--model",
            str(tmp_path / "no-such-model"),
            "extract",
            "-o",
            f"data.root='{data}'",
            "-o",
            "synthetic.videos_per_class=2",
            "-o",
            "synthetic.n_frames=8",
            "-o",
            "synthetic.size=32",
        ]
    )
    assert status == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no-such-model" in err
    assert "Traceback" not in err


def test_run_takes_the_model_option_after_the_command_too(tmp_path, capsys):
    """`run --model M` means what `--model M run` means (the newcomer's spelling)."""
    from fsar_train import SyntheticConfig, generate_synthetic_actions

    data = tmp_path / "data"
    generate_synthetic_actions(
        data, SyntheticConfig(videos_per_class=2, n_frames=8, size=32, workers=1), progress=False
    )
    small = [f"data.root='{data}'", "synthetic.videos_per_class=2", "synthetic.n_frames=8", "synthetic.size=32"]
    missing = str(tmp_path / "no-such-model")
    status = main(["run", "--run-dir", str(tmp_path / "run"), "--model", missing, *(f"-o{o}" for o in small)])
    assert status == 2
    assert "no-such-model" in " ".join(capsys.readouterr().err.split())  # the option reached the features
    status = main(["run", "--run-dir", str(tmp_path / "run"), "--benchmark", "no-such-benchmark"])
    assert status == 2
    assert "no-such-benchmark" in " ".join(capsys.readouterr().err.split())


def test_apps_train_is_a_directory_uv_can_run():
    main_file = Path(__file__).parents[2] / "apps" / "train" / "__main__.py"
    assert "from fsar_apps.cli import main" in main_file.read_text()


def test_compare_tables_runs_and_pairs_methods_on_shared_episodes(tiny_run, tmp_path, capsys):
    """The run compared with itself: every paired difference of a method with itself is exactly 0;
    a paired difference equals the difference of the two means (an oracle over the saved episodes)."""
    from fsar_apps._compare import load_run, paired_difference

    _, run_dir, _ = tiny_run
    markdown = tmp_path / "cmp.md"
    argv = ["compare", f"a={run_dir}", f"b={run_dir}", "--paired", "a/fsar_llava - b/fsar_llava", "--markdown"]
    assert main([*argv, str(markdown)]) == 0
    out = capsys.readouterr().out
    assert "a/fsar_llava − b/fsar_llava" in out
    assert "+0.00 ± 0.00" in out
    text = markdown.read_text()
    assert "| a | fsar_llava |" in text
    assert "| b | trx |" in text
    assert "| a/fsar_llava − b/fsar_llava | 1 | +0.00 ± 0.00 | 30 |" in text
    runs = [load_run(f"a={run_dir}")]
    diff = paired_difference(runs, "a/fsar_llava (text only)", "a/proto", 1)
    summary = json.loads((run_dir / "results.json").read_text())["results"]["1"]
    expected = summary["fsar_llava (text only)"]["accuracy"] - summary["proto"]["accuracy"]
    assert diff.mean == pytest.approx(expected, abs=1e-9)
    assert diff.n_episodes == 30
    # Two replicates that are the same run: every replicate measures the same difference, no spread.
    argv = ["compare", f"a={run_dir}", f"b={run_dir}", "--group", "g=a,b", "--paired", "g/fsar_llava - g/proto"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "2 replicates" in out
    head_vs_proto = paired_difference(runs, "a/fsar_llava", "a/proto", 1)
    assert f"{head_vs_proto.mean:+.2f} ± 0.00" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "nowhere"], "has no results.json"),
        (["compare", "x=RUN", "--paired", "x/fsar_llava"], "write 'LABEL/METHOD - LABEL/METHOD'"),
        (["compare", "x=RUN", "--paired", "y/proto - x/proto"], "no run labelled 'y'"),
        (["compare", "x=RUN", "--paired", "x/nope - x/proto"], "no per-episode 1-shot accuracies of 'nope'"),
        (["compare", "x=RUN", "--group", "g"], "--group 'g': write 'NAME=LABEL,LABEL,...'"),
        (["compare", "x=RUN", "--group", "g=x,y"], "--group 'g': no run labelled ['y']"),
        (["compare", "x=RUN", "--group", "x=x"], "--group 'x': the name is also a run label"),
    ],
)
def test_compare_errors_name_the_problem(tiny_run, argv, message, capsys):
    _, run_dir, _ = tiny_run
    argv = [a.replace("RUN", str(run_dir)) for a in argv]
    assert main(argv) == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_the_store_returns_the_action_a_clip_registered_and_evaluates_a_split(tiny_run, capsys):
    """End to end on synthetic-actions: videos → the run's extraction → head → store; a clip that
    registered an action is classified as that action, and `store evaluate` scores the test split."""
    _, run_dir, root = tiny_run
    store_uri = str(run_dir / "store-clips")
    clips = {}
    for folder in sorted((root / "data" / "videos").iterdir())[:4]:
        clips[folder.name.replace("_", " ")] = sorted(folder.glob("*.mp4"))[0]
    for action, clip in clips.items():
        assert main(["store", "add", action, str(clip), "--run-dir", str(run_dir), "--store", store_uri]) == 0
    capsys.readouterr()
    from fsar_apps.store import encode_query, extract_videos, load_trained_run, open_run_store

    run = load_trained_run(run_dir)
    store = open_run_store(run, store_uri)
    for action, clip in clips.items():
        (features,) = extract_videos(run, [clip], label=None)
        frames, text = encode_query(run.head, features.visual.float(), features.text["query"].float())
        result = store.query(frames, text, k=4, mpmm=run.head.config.mpmm)
        assert result.matches[0].action == action  # rank 1 is the action this clip registered
    assert main(["store", "query", str(clips[action]), "--run-dir", str(run_dir), "--store", store_uri]) == 0
    assert action.split()[0] in capsys.readouterr().out

    assert main(["store", "evaluate", "--run-dir", str(run_dir), "-k", "3"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "store classification of test videos" in out
    assert "chance top-1: 10.0 %" in out


def test_fsar_train_run_and_the_main_job_produce_the_same_run_folder(tiny_run, tmp_path):
    """One runner: `fsar-train run` with the same configuration writes the same files (the apps add the
    store) and the same results, episode for episode."""
    from fsar_train.cli import main as fsar_train_main

    _, run_dir, root = tiny_run
    other = tmp_path / "fsar-train-run"
    assert fsar_train_main(["-q", "run", "--run-dir", str(other), "-o", f"data.root='{root / 'data'}'", *TINY]) == 0

    def files(folder: Path) -> set[str]:
        paths = (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        return {p.as_posix() for p in paths if not p.parts[0].startswith("store")}  # stores: the apps' own

    assert files(other) == files(run_dir)
    ours, theirs = (json.loads((d / "results.json").read_text()) for d in (run_dir, other))
    assert ours["config"] == theirs["config"]
    for shots, by_method in ours["results"].items():
        for method, result in by_method.items():
            assert theirs["results"][shots][method]["episode_accuracies"] == result["episode_accuracies"], method


def test_train_prints_the_best_validation_accuracy_once_as_a_percentage(tiny_run, capsys):
    """It once printed 1940.00 % (a percentage multiplied by 100 again)."""
    _, run_dir, root = tiny_run
    capsys.readouterr()
    assert main(["train", "--run-dir", str(root / "train-only"), "-o", f"data.root='{root / 'data'}'", *TINY]) == 0
    out = " ".join(capsys.readouterr().out.split())
    found = re.search(r"best meta-val accuracy (-?[\d.]+)% at step (\d+)", out)
    assert found, out
    assert 0.0 <= float(found.group(1)) <= 100.0
    saved = json.loads((run_dir / "results.json").read_text())["trained"]["fsar_llava"]["best_val_accuracy"]
    assert 0.0 <= saved <= 100.0
