"""Chat formats per MLLM family: the shipped data, the video-before-prompt rule and the registry
(fsar_prompts/_formats.py)."""

from __future__ import annotations

import pytest

from fsar_prompts import ChatFormat, get_chat_format, list_families, register_chat_format
from fsar_prompts._formats import _FORMATS

# The exact turns, as the families' processors write them (docs/prompts.md lists the same).
EXPECTED = {
    "video-llava": ("USER: <video>\n{prompt} ASSISTANT:", "<video>", "USER: {prompt} ASSISTANT:"),
    "llava-next-video": ("USER: <video>\n{prompt} ASSISTANT:", "<video>", "USER: {prompt} ASSISTANT:"),
    "llava-onevision": (
        "<|im_start|>user\n<video>\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
        "<video>",
        "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
    ),
    "qwen2-vl": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n",
        "<|video_pad|>",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "{prompt}<|im_end|>\n<|im_start|>assistant\n",
    ),
}


def test_the_four_shipped_families_are_registered():
    assert list_families() == sorted(EXPECTED)


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_shipped_format_has_the_expected_turn_placeholder_and_text_only_turn(family):
    template, placeholder, text_only = EXPECTED[family]
    fmt = get_chat_format(family)
    assert (fmt.template, fmt.video_placeholder, fmt.text_only_template) == (template, placeholder, text_only)
    assert fmt.reference


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_wrap_puts_the_prompt_after_the_video_and_keeps_the_prefix(family):
    fmt = get_chat_format(family)
    text = fmt.wrap("Q?")
    assert text == fmt.template.replace("{prompt}", "Q?")
    assert text.startswith(fmt.prefix + fmt.video_placeholder)
    assert text.index(fmt.video_placeholder) < text.index("Q?")


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_wrap_without_video_leaves_out_the_whole_video_block(family):
    fmt = get_chat_format(family)
    text = fmt.wrap("Q?", video=False)
    assert fmt.video_placeholder not in text
    assert fmt.video_block not in text
    assert text == fmt.text_only_template.replace("{prompt}", "Q?")


def test_wrap_inserts_braces_in_the_prompt_literally():
    assert get_chat_format("video-llava").wrap("a {prompt} {x}") == "USER: <video>\na {prompt} {x} ASSISTANT:"


def test_unknown_family_lists_the_registered_families():
    with pytest.raises(
        ValueError, match=r"unknown chat format 'llava'; " r"registered chat formats: llava-next-video, llava-onevision"
    ):
        get_chat_format("llava")


def test_a_user_family_registers_and_renders():
    fmt = ChatFormat("test-family", "<s>[V] {prompt}</s>", video_placeholder="[V]", video_block="[V] ")
    try:
        assert register_chat_format(fmt) is fmt
        assert "test-family" in list_families()
        assert get_chat_format("test-family").wrap("Hi", video=False) == "<s>Hi</s>"
    finally:
        _FORMATS.pop("test-family")


def test_registering_a_taken_family_raises():
    with pytest.raises(ValueError, match=r"a chat format named 'video-llava' is already registered"):
        register_chat_format(get_chat_format("video-llava"))


def test_registering_something_else_than_a_chat_format_raises():
    with pytest.raises(ValueError, match=r"register_chat_format expects a ChatFormat, got dict"):
        register_chat_format({"family": "x"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"template": "[V] {prompt} {prompt}"}, r"must contain \{prompt\} exactly once"),
        ({"template": "[V] hello"}, r"must contain \{prompt\} exactly once"),
        ({"template": "{prompt} [V] "}, r"the video must come before \{prompt\}"),
        ({"template": "[V] [V] {prompt}"}, r"must contain video_block '\[V\] ' .* exactly once"),
        ({"template": "{prompt}"}, r"must contain video_block"),
        ({"video_block": "<v>"}, r"video_block '<v>' must contain video_placeholder '\[V\]' exactly once"),
        ({"video_placeholder": ""}, r"video_placeholder is empty"),
        ({"family": "My Model"}, r"the family name must be lower-case"),
        ({"reference": 3}, r"reference must be a string"),
    ],
)
def test_an_invalid_chat_format_raises_naming_the_family_and_problem(kwargs, message):
    base = {"family": "bad", "template": "[V] {prompt}", "video_placeholder": "[V]", "video_block": "[V] "}
    with pytest.raises(ValueError, match=message):
        ChatFormat(**(base | kwargs))
