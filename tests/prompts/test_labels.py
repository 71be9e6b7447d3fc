"""Label normalisation on real class names of all five benchmarks (fsar_prompts/_labels.py)."""

from __future__ import annotations

import dataclasses

import pytest

from fsar_prompts import NormalizedLabel, normalize_label


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        # Something-Something v2 (Full and Small share the label set)
        ("Pushing [something] from left to right", "pushing something from left to right"),
        ("Putting [something] into [something]", "putting something into something"),
        ("Moving [part] of [something]", "moving part of something"),
        ("Putting [something] onto [something else]", "putting something onto something else"),
        # Kinetics-100: already lower case with spaces; parentheses and apostrophes stay
        ("air drumming", "air drumming"),
        ("dancing ballet", "dancing ballet"),
        ("tying knot (not on a tie)", "tying knot (not on a tie)"),
        ("massaging person's head", "massaging person's head"),
        ("air_drumming", "air drumming"),
        # UCF101: CamelCase
        ("ApplyEyeMakeup", "apply eye makeup"),
        ("YoYo", "yo yo"),
        ("PlayingDaf", "playing daf"),
        ("BlowDryHair", "blow dry hair"),
        # HMDB51: underscores
        ("brush_hair", "brush hair"),
        ("ride_bike", "ride bike"),
        ("shoot_ball", "shoot ball"),
    ],
)
def test_benchmark_labels_become_readable_lowercase_phrases(raw, text):
    label = normalize_label(raw)
    assert label.text == text
    assert label.original == raw


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("TVShow", "tv show"),
        ("PlayingPS4", "playing ps4"),
        ("HTMLParser", "html parser"),
        ("MoveUFO", "move ufo"),
    ],
)
def test_acronyms_stay_one_word_and_split_from_the_next_capitalised_word(raw, text):
    assert normalize_label(raw).text == text


def test_whitespace_is_collapsed_and_trimmed():
    assert (
        normalize_label("  Pushing  [something]\tfrom left\nto right ").text == "pushing something from left to right"
    )


def test_bracket_next_to_words_leaves_no_double_space():
    assert normalize_label("Moving [ part ] of [something]").text == "moving part of something"


def test_verbatim_keeps_brackets_and_case_and_only_collapses_whitespace():
    label = normalize_label("  Pushing [something]  from left to right", verbatim=True)
    assert label.text == "Pushing [something] from left to right"
    assert label.original == "  Pushing [something]  from left to right"


@pytest.mark.parametrize("raw", ["", "   ", "\t\n", "[]", "___", "[ _ ]"])
def test_empty_label_raises_and_names_the_raw_value(raw):
    with pytest.raises(ValueError, match=r"empty label") as error:
        normalize_label(raw)
    assert repr(raw) in str(error.value)


@pytest.mark.parametrize("raw", ["", "  "])
def test_empty_label_raises_in_verbatim_mode_too(raw):
    with pytest.raises(ValueError, match=r"empty label"):
        normalize_label(raw, verbatim=True)


@pytest.mark.parametrize("raw", [None, 3, b"brush_hair"])
def test_a_non_string_label_raises_type_error_naming_the_type(raw):
    with pytest.raises(TypeError, match=type(raw).__name__):
        normalize_label(raw)


def test_normalized_label_is_frozen():
    label = normalize_label("brush_hair")
    assert isinstance(label, NormalizedLabel)
    with pytest.raises(dataclasses.FrozenInstanceError):
        label.text = "x"  # type: ignore[misc]


def test_normalisation_is_idempotent_on_its_own_output():
    for raw in ["ApplyEyeMakeup", "Pushing [something] from left to right", "tying knot (not on a tie)", "ride_bike"]:
        once = normalize_label(raw).text
        assert normalize_label(once).text == once
