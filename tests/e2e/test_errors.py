"""One project error type: the command lines print an ``FsarError`` as one sentence (exit 2) and let
anything else surface as the bug it is, with its traceback."""

from __future__ import annotations

import pytest

import fsar_features._cli as features_cli
import fsar_prompts
import fsar_train.cli as train_cli
from fsar_apps.cli import main as apps_main
from fsar_metric.errors import FsarError, InputError, MissingFileError, OutputExistsError, as_input_error
from fsar_prompts import PromptError


def _bug(*args, **kwargs):
    raise ValueError("a bug: this message is not for the user")


def test_every_project_error_is_an_fsar_error_and_the_builtin_a_caller_expects() -> None:
    for error, builtin in (
        (InputError, ValueError),
        (MissingFileError, FileNotFoundError),
        (OutputExistsError, FileExistsError),
    ):
        assert issubclass(error, FsarError)
        assert issubclass(error, builtin)
    assert str(MissingFileError(2, "no run folder at /x", "/x")) == "no run folder at /x"


def test_as_input_error_turns_a_prompt_error_into_an_input_error_and_passes_the_rest() -> None:
    with pytest.raises(InputError, match=r"^--label: ") as caught, as_input_error(PromptError, context="--label: "):
        fsar_prompts.render_prompt("video-llava", "support", "generic", label="")
    assert isinstance(caught.value.__cause__, PromptError)
    with pytest.raises(KeyError), as_input_error(PromptError):
        raise KeyError("not a prompt error")


def test_the_app_prints_a_project_error_as_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert apps_main(["prompts", "--family", "gpt"]) == 2
    err = capsys.readouterr().err
    assert "unknown chat format 'gpt'" in " ".join(err.split())
    assert "Traceback" not in err


def test_the_app_lets_a_bug_surface_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert apps_main(["prompts"]) == 0  # the defaults show the synthetic-actions prompts
    assert "(synthetic-actions)" in capsys.readouterr().out
    monkeypatch.setattr(fsar_prompts, "render_prompt", _bug)
    with pytest.raises(ValueError, match="a bug"):
        apps_main(["prompts"])


def test_fsar_train_lets_a_bug_surface_and_prints_a_project_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_cli.main(["config", "--preset", "no-such-preset"]) == 2
    assert "unknown preset 'no-such-preset'" in capsys.readouterr().err
    monkeypatch.setattr(train_cli, "list_presets", _bug)
    with pytest.raises(ValueError, match="a bug"):
        train_cli.main(["presets"])


def test_fsar_features_lets_a_bug_surface_and_prints_a_project_error(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert features_cli.main(["info", str(tmp_path)]) == 2
    assert "is not a feature cache" in capsys.readouterr().err
    monkeypatch.setattr(features_cli, "_info", _bug)
    with pytest.raises(ValueError, match="a bug"):
        features_cli.main(["info", str(tmp_path)])
