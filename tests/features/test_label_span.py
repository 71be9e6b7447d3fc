"""The class name's place in a support prompt: characters of the suffix, then tokens, on every tokenizer kind.

The oracle for the tokens does not use character offsets: the label alone, tokenised without special
tokens, must appear in the suffix right between the two quotes that every shipped support template
puts around ``{label}``. That holds for the three tokenizers here (bytes; BERT-style words, with and
without the labels' words in the vocabulary), whose splits do not depend on the neighbouring text.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fsar_features import (
    ExtractionConfig,
    FeatureBackend,
    FeatureExtractor,
    create_backend,
    find_video_span,
    label_char_spans,
    label_token_positions,
    save_tiny_checkpoint,
)
from fsar_features.backends._hf import CLIP_MEAN, CLIP_STD, HFVideoBackend, Preprocessing, build_word_tokenizer
from fsar_prompts import normalize_label, render_prompt

T = 8
LABELS = [
    "jumping jacks",  # spaces
    "Pushing [something] from left to right",  # SSv2 brackets
    "brush_hair",  # HMDB underscores
    "ApplyEyeMakeup",  # UCF CamelCase
    "TVShow",  # an acronym before a capitalised word
    "tying knot (not on a tie)",  # Kinetics parentheses
    "action",  # also a word of the template itself
]
KINDS = ["byte", "word", "real-video-llava", "real-llava-next-video"]


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FeatureBackend]:
    """One backend per tokenizer kind (the tokenizers matter here, not the weights)."""
    byte = create_backend("tiny-video-llava")
    words = {w for label in LABELS for w in normalize_label(label).text.split()} | {"USER:", "ASSISTANT:"}
    word = HFVideoBackend(
        name="tiny-video-llava-words",
        model=byte.model,
        tokenizer=build_word_tokenizer(sorted(words)),
        model_id="tiny-video-llava-words",
        family="video-llava",
        tokens_per_frame=byte.tokens_per_frame,
        has_cls=True,
        preprocessing=Preprocessing(frame_size=32, crop_size=32, mean=CLIP_MEAN, std=CLIP_STD),
    )
    root = tmp_path_factory.mktemp("label-span")
    out: dict[str, FeatureBackend] = {"byte": byte, "word": word}
    for family in ("video-llava", "llava-next-video"):
        out[f"real-{family}"] = create_backend(family, model=save_tiny_checkpoint(family, Path(root) / family))
    return out


def _expected_positions(backend: FeatureBackend, prompt) -> tuple[int, ...]:
    """Indices after the video of the label's own tokens, found between the quotes around it."""
    tokenizer = backend.tokenizer
    ids = backend.tokenize(prompt, T)
    _, end = find_video_span(ids, backend.video_token_id, T * backend.tokens_per_frame)
    suffix = ids[end:]
    label = tokenizer(prompt.label_text, add_special_tokens=False).input_ids
    quote = tokenizer('"', add_special_tokens=False).input_ids
    pattern = quote + label + quote
    starts = [i for i in range(len(suffix) - len(pattern) + 1) if suffix[i : i + len(pattern)] == pattern]
    assert len(starts) == 1, f"the quoted label occurs {len(starts)} times"
    first = starts[0] + len(quote)
    return tuple(range(first, first + len(label)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scenario", ["generic", "temporal"])
@pytest.mark.parametrize("label", LABELS)
def test_label_token_positions_are_exactly_the_label_tokens_on_every_tokenizer_kind(
    backends: dict[str, FeatureBackend], kind: str, scenario: str, label: str
) -> None:
    backend = backends[kind]
    prompt = render_prompt(backend.family, "support", scenario, label=label)
    positions = label_token_positions(backend, prompt, T)
    assert positions == _expected_positions(backend, prompt)
    ids = backend.tokenize(prompt, T)
    _, end = find_video_span(ids, backend.video_token_id, T * backend.tokens_per_frame)
    decoded = backend.tokenizer.decode([ids[end + i] for i in positions])
    assert decoded.replace(" ", "") == prompt.label_text.replace(" ", "")


def test_the_word_tokenizer_keeps_a_known_label_word_as_one_token(backends: dict[str, FeatureBackend]) -> None:
    backend = backends["word"]
    prompt = render_prompt(backend.family, "support", label="Pushing [something] from left to right")
    assert len(label_token_positions(backend, prompt, T)) == 6  # pushing something from left to right


@pytest.mark.parametrize("label", LABELS)
def test_char_spans_hold_the_normalised_label_the_prompt_contains(label: str) -> None:
    prompt = render_prompt("video-llava", "support", "appearance", label=label)
    spans = label_char_spans(prompt)
    assert [prompt.suffix[a:b] for a, b in spans] == [normalize_label(label).text]
    assert prompt.suffix[spans[0][0] - 1] == prompt.suffix[spans[0][1]] == '"'


def test_a_label_that_is_also_a_template_word_is_found_at_the_template_placeholder() -> None:
    prompt = render_prompt("video-llava", "support", label="action")
    assert prompt.suffix.count("action") == 3  # 'shows the action "action". ... how the action is carried out'
    ((start, end),) = label_char_spans(prompt)
    assert prompt.suffix[start - 1 : end + 1] == '"action"'


def test_a_prompt_of_an_unknown_template_falls_back_to_the_labels_one_occurrence() -> None:
    custom = dataclasses.replace(render_prompt("video-llava", "support", label="jumping jacks"), template_id="mine")
    ((start, end),) = label_char_spans(custom)
    assert custom.suffix[start:end] == "jumping jacks"
    ambiguous = dataclasses.replace(render_prompt("video-llava", "support", label="action"), template_id="mine")
    with pytest.raises(ValueError, match=r"label text 'action' occurs 3 times in the suffix"):
        label_char_spans(ambiguous)


def test_a_query_prompt_has_no_class_name_tokens(tiny_backend: FeatureBackend) -> None:
    with pytest.raises(ValueError, match=r"\(query\) carries no class name"):
        label_token_positions(tiny_backend, render_prompt("video-llava", "query"), T)


def test_a_tokenizer_without_offsets_is_refused_when_the_extractor_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = create_backend("tiny-video-llava")
    monkeypatch.setattr(type(backend.tokenizer), "is_fast", property(lambda self: False))
    with pytest.raises(ValueError, match=r"slow tokenizer .* gives no character offsets"):
        FeatureExtractor(backend, ExtractionConfig(support_text_pooling="label"))
    FeatureExtractor(backend)  # the default text pooling needs no offsets
