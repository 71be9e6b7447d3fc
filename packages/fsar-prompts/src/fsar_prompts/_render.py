"""Rendering a prompt: template + label + chat format → exact text and a stable prompt id.

The id is what the feature cache records next to every text feature, so two features share an id
only if they came from the same family, chat format, template wording and version, and label. The
recipe (also in ``docs/prompts.md``)::

    payload = {"recipe": 1, "family": ..., "chat_format": ..., "role": ...,
               "template_id": ..., "template_text": ..., "version": ...,
               "label": ..., "label_text": ...,      # only when the prompt uses a label
               "description": ...}                   # only when the prompt uses a description
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    id = "p-" + sha256(canonical.encode("utf-8")).hexdigest()[:16]

``chat_format`` is the family's ``template`` for video prompts and its ``text_only_template`` for
label prompts. The file a template came from is not part of the id: the same wording loaded from
another path gives the same id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from fsar_prompts._errors import PromptError
from fsar_prompts._formats import get_chat_format
from fsar_prompts._labels import NormalizedLabel, normalize_label
from fsar_prompts._templates import Role, TemplateSet, default_templates, get_role

__all__ = ["RenderedPrompt", "render_prompt"]

#: Bump when the id recipe changes (every id changes with it, on purpose).
_RECIPE = 1
_ID_HEX_CHARS = 16


@dataclass(frozen=True)
class RenderedPrompt:
    """One rendered prompt and the recipe that produced it.

    Attributes:
        id: stable prompt id, ``"p-"`` + 16 hex digits (recipe in the module docstring).
        text: the exact string to tokenise, chat format included.
        prompt: the rendered template alone, without the chat format.
        prefix: ``text`` before the video placeholder, the same for every role and scenario of a
            family (None for a text-only label prompt).
        suffix: ``text`` after the video placeholder (None for a text-only label prompt).
        video_placeholder: the family's video placeholder (None for a text-only label prompt), so
            that ``prefix + video_placeholder + suffix == text``.
        family: the MLLM family.
        role: ``support``, ``query`` or ``label``.
        scenario: the scenario of the template used (``generic`` when a label prompt fell back).
        template_id: the template used.
        version: the template's version.
        label: the label as given (the raw dataset spelling), or None.
        label_text: the normalised label that went into the text, or None.
        description: the description that went into the text, or None.
        uses_label: True when the text carries a class name (results record it as
            ``uses_class_names``: class names are privileged text, docs/method.md §0).
    """

    id: str
    text: str
    prompt: str
    prefix: str | None
    suffix: str | None
    video_placeholder: str | None
    family: str
    role: str
    scenario: str
    template_id: str
    version: int
    label: str | None
    label_text: str | None
    description: str | None
    uses_label: bool


def _prompt_id(payload: dict[str, object]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "p-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:_ID_HEX_CHARS]


def render_prompt(
    family: str,
    role: Role,
    scenario: str = "generic",
    *,
    label: str | NormalizedLabel | None = None,
    description: str | None = None,
    templates: TemplateSet | None = None,
) -> RenderedPrompt:
    """Render the prompt of one role for one MLLM family.

    Args:
        family: an MLLM family (``list_families()``).
        role: ``support`` (label-aware video prompt), ``query`` (label-free video prompt) or
            ``label`` (text-only class prompt, no video).
        scenario: ``generic``, ``temporal``, ``appearance`` or a scenario of ``templates``; see
            ``scenario_for`` for the benchmark presets. Label prompts fall back to the ``generic``
            template when the scenario has none.
        label: the class label for ``support`` and ``label``, raw (normalised with
            ``normalize_label``) or already a ``NormalizedLabel`` (e.g. ``verbatim=True``). Never
            for ``query``.
        description: text for a template's ``{description}`` placeholder; only for templates that
            have one, never for ``query``.
        templates: the template set (default: the shipped templates).

    Returns:
        The exact text, its parts around the video, and the id and recipe.

    Raises:
        ValueError: unknown family, role or scenario (the message lists the valid ones); a label or
            description for a query; no label for a role that needs one; an empty label or
            description; a description the template has no place for, or a template that needs one
            and got none; a prompt containing the family's video placeholder.
        TypeError: ``label`` or ``description`` of the wrong type.

    Example:
        >>> query = render_prompt("video-llava", "query")
        >>> print(query.text)
        USER: <video>
        What is the person doing in this video? Answer with a short phrase. ASSISTANT:
        >>> support = render_prompt("video-llava", "support", "temporal", label="Pushing [something] left to right")
        >>> support.prompt[:61]
        'This video shows the action "pushing something left to right"'
        >>> support.prefix == query.prefix == "USER: ", support.uses_label, query.uses_label
        (True, True, False)
        >>> query.id  # a hash of the recipe: stable across runs and machines
        'p-...'
    """
    chat_format = get_chat_format(family)
    spec = get_role(role)
    template = (default_templates() if templates is None else templates).find(role, scenario)

    normalized: NormalizedLabel | None = None
    if spec.uses_label:
        if label is None:
            raise PromptError(f"role {role!r} needs a label (template {template.id!r} has {{label}}); pass label=")
        normalized = label if isinstance(label, NormalizedLabel) else normalize_label(label)
    else:
        # The safety rule of the method: a query prompt never carries class information.
        if label is not None:
            raise PromptError(
                f"role {role!r} takes no label: a query prompt never contains a class name (got {label!r})"
            )
        if description is not None:
            raise PromptError(
                f"role {role!r} takes no description: a query prompt never carries class information "
                f"(got {description!r})"
            )

    description_text: str | None = None
    if description is not None:
        if not isinstance(description, str):
            raise TypeError(f"a description must be a string, got {type(description).__name__}: {description!r}")
        if "description" not in template.placeholders:
            raise PromptError(
                f"template {template.id!r} has no {{description}} placeholder, so description= has no place; "
                f"its placeholders: {', '.join('{' + p + '}' for p in sorted(template.placeholders))}"
            )
        description_text = " ".join(description.split())
        if not description_text:
            raise PromptError(f"empty description {description!r}")
    elif "description" in template.placeholders:
        raise PromptError(f"template {template.id!r} has a {{description}} placeholder; pass description=")

    prompt = template.fill(label=normalized.text if normalized else None, description=description_text)
    if chat_format.video_placeholder in prompt:
        # The placeholder would be expanded into a second set of video tokens.
        raise PromptError(
            f"the rendered prompt contains the {family!r} video placeholder {chat_format.video_placeholder!r}: "
            f"{prompt!r}"
        )

    text = chat_format.wrap(prompt, video=spec.has_video)
    prefix = suffix = placeholder = None
    if spec.has_video:
        placeholder = chat_format.video_placeholder
        prefix, _, suffix = text.partition(placeholder)

    payload: dict[str, object] = {
        "recipe": _RECIPE,
        "family": chat_format.family,
        "chat_format": chat_format.template if spec.has_video else chat_format.text_only_template,
        "role": spec.name,
        "template_id": template.id,
        "template_text": template.text,
        "version": template.version,
    }
    if normalized is not None:
        payload["label"] = normalized.original
        payload["label_text"] = normalized.text
    if description_text is not None:
        payload["description"] = description_text

    return RenderedPrompt(
        id=_prompt_id(payload),
        text=text,
        prompt=prompt,
        prefix=prefix,
        suffix=suffix,
        video_placeholder=placeholder,
        family=chat_format.family,
        role=spec.name,
        scenario=template.scenario,
        template_id=template.id,
        version=template.version,
        label=normalized.original if normalized else None,
        label_text=normalized.text if normalized else None,
        description=description_text,
        uses_label=spec.uses_label,
    )
