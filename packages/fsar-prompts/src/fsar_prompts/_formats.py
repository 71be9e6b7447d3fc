"""Chat formats per MLLM family, as data (``fsar_prompts/data/formats.toml``) behind a registry.

A family's format wraps a rendered template in the model's chat turn. The shipped families:

- ``video-llava``: ``USER: <video>\\n{prompt} ASSISTANT:`` (docs/prompts.md, "Chat formats");
- ``llava-next-video``: the same (the chat template of the 7B Vicuna checkpoints);
- ``llava-onevision``: ``<|im_start|>user\\n<video>\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n``
  (Qwen2 ChatML, as the llava-hf processor's chat template writes it);
- ``qwen2-vl``: the default system turn, then
  ``<|im_start|>user\\n<|vision_start|><|video_pad|><|vision_end|>{prompt}<|im_end|>\\n<|im_start|>assistant\\n``.

Every format puts the video before ``{prompt}``. In a causal decoder the hidden states at the video
positions depend only on the tokens before them, so with all role and scenario wording after the
video, the visual features are the same for every prompt of a family and can be cached once per
video (docs/prompts.md, "Why the role wording goes after the video"). ``ChatFormat`` enforces that
order when it is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fsar_prompts._data import PACKAGE, check_keys, read_toml, shipped
from fsar_prompts._errors import PromptError

__all__ = ["ChatFormat", "get_chat_format", "list_families", "register_chat_format"]

_FAMILY = re.compile(r"[a-z0-9][a-z0-9._-]*")
_PROMPT = "{prompt}"
_FIELDS = frozenset({"family", "template", "video_placeholder", "video_block"})


@dataclass(frozen=True)
class ChatFormat:
    """How one MLLM family wraps a prompt and a video into a user turn.

    Attributes:
        family: the registry name, e.g. ``"video-llava"``.
        template: the whole turn, up to where the answer begins; holds ``{prompt}`` once.
        video_placeholder: the string the family's processor expands into video tokens.
        video_block: the part of ``template`` holding the video: the placeholder plus the separators
            that belong to it (``"<video>\\n"``). Removing it gives the text-only format.
        reference: where the format comes from (documentation only; not part of prompt ids).

    Raises:
        ValueError: ``{prompt}`` or the video block is missing or repeated, the placeholder is not in
            the block exactly once, or the video comes after ``{prompt}`` (which would make the text
            before the video depend on the prompt and break visual-feature sharing).
    """

    family: str
    template: str
    video_placeholder: str
    video_block: str
    reference: str = ""

    def __post_init__(self) -> None:
        where = f"chat format {self.family!r}"
        if not isinstance(self.family, str) or not _FAMILY.fullmatch(self.family):
            raise PromptError(f"{where}: the family name must be lower-case letters, digits, '.', '_', '-'")
        for name in ("template", "video_placeholder", "video_block", "reference"):
            if not isinstance(getattr(self, name), str):
                raise PromptError(f"{where}: {name} must be a string, got {getattr(self, name)!r}")
        if not self.video_placeholder:
            raise PromptError(f"{where}: video_placeholder is empty")
        if self.template.count(_PROMPT) != 1:
            raise PromptError(f"{where}: template must contain {_PROMPT} exactly once: {self.template!r}")
        if self.video_block.count(self.video_placeholder) != 1:
            raise PromptError(
                f"{where}: video_block {self.video_block!r} must contain video_placeholder "
                f"{self.video_placeholder!r} exactly once"
            )
        if self.template.count(self.video_block) != 1 or self.template.count(self.video_placeholder) != 1:
            raise PromptError(
                f"{where}: template must contain video_block {self.video_block!r} (and with it "
                f"{self.video_placeholder!r}) exactly once: {self.template!r}"
            )
        if self.template.index(self.video_block) + len(self.video_block) > self.template.index(_PROMPT):
            raise PromptError(
                f"{where}: the video must come before {_PROMPT}, so that the text before the video is the same "
                f"for every prompt: {self.template!r}"
            )

    @property
    def text_only_template(self) -> str:
        """``template`` without the video block: the format of a text-only prompt (role ``label``)."""
        return self.template.replace(self.video_block, "", 1)

    @property
    def prefix(self) -> str:
        """The text before the video placeholder; identical for every prompt of this family."""
        return self.template.split(self.video_placeholder, 1)[0]

    def wrap(self, prompt: str, *, video: bool = True) -> str:
        """The full turn with ``prompt`` in place of ``{prompt}``.

        Args:
            prompt: the rendered template text.
            video: False for a text-only prompt (the video block is left out).

        Example:
            >>> fmt = get_chat_format("video-llava")
            >>> fmt.wrap("What is happening?")
            'USER: <video>\\nWhat is happening? ASSISTANT:'
            >>> fmt.wrap("The action.", video=False)
            'USER: The action. ASSISTANT:'
        """
        # partition, not str.format or str.replace: the prompt itself may contain braces or "{prompt}".
        before, _, after = (self.template if video else self.text_only_template).partition(_PROMPT)
        return before + prompt + after


#: family → its chat format. fsar-prompts imports no sibling package, so this is a plain dict, not
#: ``fsar_metric.registry.Registry``; its messages follow the Registry's wording word for word
#: (tests/e2e/test_registries.py holds every registry of fsar to it).
_FORMATS: dict[str, ChatFormat] = {}


def register_chat_format(chat_format: ChatFormat) -> ChatFormat:
    """Add a family's chat format to the registry.

    Returns:
        ``chat_format`` unchanged.

    Raises:
        ValueError: the family is already registered, or the argument is not a ``ChatFormat``.

    Example:
        >>> fmt = ChatFormat("doc-model", "<s>[VIDEO]{prompt}</s>", video_placeholder="[VIDEO]", video_block="[VIDEO]")
        >>> register_chat_format(fmt) is fmt
        True
        >>> "doc-model" in list_families()
        True
        >>> from fsar_prompts._formats import _FORMATS; _ = _FORMATS.pop("doc-model")
    """
    if not isinstance(chat_format, ChatFormat):
        raise PromptError(f"register_chat_format expects a ChatFormat, got {type(chat_format).__name__}")
    if chat_format.family in _FORMATS:
        raise PromptError(
            f"a chat format named {chat_format.family!r} is already registered ({_FORMATS[chat_format.family]!r})"
        )
    _FORMATS[chat_format.family] = chat_format
    return chat_format


def list_families() -> list[str]:
    """Names of all registered MLLM families, sorted.

    Example:
        >>> list_families()
        ['llava-next-video', 'llava-onevision', 'qwen2-vl', 'video-llava']
    """
    return sorted(_FORMATS)


def get_chat_format(family: str) -> ChatFormat:
    """The chat format registered for ``family``.

    Raises:
        ValueError: unknown family; the message lists the registered ones.
    """
    try:
        return _FORMATS[family]
    except (KeyError, TypeError):
        listed = ", ".join(list_families()) or "(none)"
        raise PromptError(f"unknown chat format {family!r}; registered chat formats: {listed}") from None


def _load_shipped() -> None:
    data, source = read_toml(shipped("data/formats.toml"), f"{PACKAGE}/data/formats.toml")
    check_keys(data, required={"format"}, where=source)
    for entry in data["format"]:
        check_keys(entry, required=_FIELDS, optional={"reference"}, where=f"{source}: format {entry.get('family')!r}")
        register_chat_format(ChatFormat(**entry))


_load_shipped()
