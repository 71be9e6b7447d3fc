"""Where the class name sits in a label-aware prompt: characters of the suffix, then token positions.

The ``label`` text pooling averages the hidden states of the class-name tokens of the support prompt
(the last token's state predicts the answer's first word and carries little of the label). Finding
them::

    label_char_spans(prompt)     # ((a, b), ...)  characters of prompt.suffix holding prompt.label_text
    label_token_positions(...)   # (i, ...)       indices into the [S_t] tokens after the video span

Characters: the prompt contains the label as fsar-prompts normalised it (``RenderedPrompt.label_text``:
SSv2 brackets and HMDB underscores removed, CamelCase split, lower case). Its place is the template's
``{label}``, found by rendering the same template with a sentinel label (the text around it is the
same for every label); a plain search could also hit the label's words in the template's own wording
(a label "action" in ``This video shows the action "{label}"``). A prompt whose template fsar-prompts
cannot render again (a custom template set) falls back to the label's one occurrence in the suffix.

Tokens: the backend's tokenizer reports each token's character span (fast tokenizers'
``return_offsets_mapping``); the class-name tokens are those whose span overlaps the label's
characters. A token that straddles the label's edge (a BPE merge of its last letter and the closing
quote) is included.
"""

from __future__ import annotations

import re

from fsar_features._decode import find_video_span
from fsar_features._registry import FeatureBackend
from fsar_metric.errors import InputError
from fsar_prompts import NormalizedLabel, RenderedPrompt, render_prompt

__all__ = ["label_char_spans", "label_token_positions"]

# No template, chat format or label contains a NUL character.
_SENTINEL = "\x00fsar-label\x00"


def label_char_spans(prompt: RenderedPrompt) -> tuple[tuple[int, int], ...]:
    """``(start, end)`` character spans of the class name in ``prompt.suffix``, one per ``{label}``.

    Args:
        prompt: a rendered label-aware video prompt (``support``).

    Returns:
        Spans into ``prompt.suffix``, in order; ``suffix[start:end] == prompt.label_text``.

    Raises:
        ValueError: a prompt without a label or without a video, or (custom templates only) a label
            that occurs in the suffix other than exactly once.

    Example:
        >>> p = render_prompt("video-llava", "support", label="Pushing [something] from left to right")
        >>> [p.suffix[a:b] for a, b in label_char_spans(p)]
        ['pushing something from left to right']
    """
    if prompt.label_text is None or prompt.suffix is None:
        what = "carries no class name" if prompt.label_text is None else "has no video (a text-only prompt)"
        raise InputError(f"prompt {prompt.id} ({prompt.role}) {what}, so it has no class-name tokens after a video")
    spans = _spans_from_template(prompt, prompt.label_text, prompt.suffix)
    if spans is not None:
        return spans
    starts = [m.start() for m in re.finditer(re.escape(prompt.label_text), prompt.suffix)]
    if len(starts) != 1:
        raise InputError(
            f"the label text {prompt.label_text!r} occurs {len(starts)} times in the suffix of prompt {prompt.id} "
            f"(template {prompt.template_id!r}, not one fsar-prompts can render again), so its place is unknown: "
            f"{prompt.suffix!r}"
        )
    return ((starts[0], starts[0] + len(prompt.label_text)),)


def _spans_from_template(prompt: RenderedPrompt, label: str, suffix: str) -> tuple[tuple[int, int], ...] | None:
    """The spans from the same template rendered with a sentinel label; None when it does not reproduce ``prompt``."""
    try:
        probe = render_prompt(
            prompt.family,
            prompt.role,  # type: ignore[arg-type]  # a RenderedPrompt's role is a valid Role
            prompt.scenario,
            label=NormalizedLabel(original=prompt.label or label, text=_SENTINEL),
            description=prompt.description,
        )
    except ValueError:
        return None
    if (
        probe.suffix is None
        or (probe.template_id, probe.version, probe.prefix) != (prompt.template_id, prompt.version, prompt.prefix)
        or probe.suffix.replace(_SENTINEL, label) != suffix
    ):
        return None
    spans, position = [], 0
    for piece in probe.suffix.split(_SENTINEL)[:-1]:
        position += len(piece)
        spans.append((position, position + len(label)))
        position += len(label)
    return tuple(spans) or None


def label_token_positions(backend: FeatureBackend, prompt: RenderedPrompt, n_frames: int) -> tuple[int, ...]:
    """Positions of the class-name tokens among the tokens after the video span.

    Args:
        backend: the backend whose tokenizer makes the ids (``tokenize_with_offsets``).
        prompt: a rendered label-aware video prompt of the backend's family.
        n_frames: T (the video span has T · V tokens).

    Returns:
        Sorted indices ``i`` into the ``[S_t]`` tokens after the video (``ids[end + i]``, with
        ``end`` the video span's end): every token whose characters overlap the label's.

    Raises:
        ValueError: no label (``label_char_spans``); a label character no token covers; a tokenizer
            without character offsets.

    Example:
        >>> from fsar_features import create_backend
        >>> prompt = render_prompt("video-llava", "support", label="brush_hair")
        >>> len(label_token_positions(create_backend("tiny-video-llava"), prompt, 8))  # a byte per token: "brush hair"
        10
    """
    spans = label_char_spans(prompt)
    ids, offsets = backend.tokenize_with_offsets(prompt, n_frames)
    n_video = n_frames * backend.tokens_per_frame
    _, end = find_video_span(ids, backend.video_token_id, n_video)
    # Where the suffix starts in the expanded text prefix + placeholder × (T·V) + suffix.
    base = len(prompt.prefix or "") + len(prompt.video_placeholder or "") * n_video
    chars = [(base + a, base + b) for a, b in spans]
    positions = [i for i, (s, e) in enumerate(offsets) if e > s and any(s < b and e > a for a, b in chars)]
    covered = {c for i in positions for c in range(*offsets[i])}
    missing = [c - base for a, b in chars for c in range(a, b) if c not in covered and not _is_space(prompt, c - base)]
    if not positions or missing or positions[0] < end:
        raise InputError(
            f"could not map the label {prompt.label_text!r} of prompt {prompt.id} to tokens after the video: "
            f"tokens {positions} (video ends at {end}), label characters without a token at suffix offsets "
            f"{missing[:10]}"
        )
    return tuple(i - end for i in positions)


def _is_space(prompt: RenderedPrompt, index: int) -> bool:
    """True when suffix character ``index`` is whitespace (tokenizers may fold it into a neighbour)."""
    assert prompt.suffix is not None
    return prompt.suffix[index].isspace()
