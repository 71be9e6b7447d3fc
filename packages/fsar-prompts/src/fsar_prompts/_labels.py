"""Class-label normalisation: dataset label styles → one readable, lower-case phrase.

The five FSAR benchmarks spell class names in four styles (docs/prompts.md, "Label normalisation"):

- SSv2 (Full, Small): ``Pushing [something] from left to right`` → ``pushing something from left to right``;
- Kinetics-100: ``tying knot (not on a tie)`` → unchanged;
- UCF101: ``ApplyEyeMakeup`` → ``apply eye makeup``;
- HMDB51: ``brush_hair`` → ``brush hair``.

The rules, applied in this order:

1. square brackets are removed and the word inside kept (SSv2's ``[something]`` → ``something``);
2. underscores become spaces (HMDB51, and Kinetics in its CSV spelling ``air_drumming``);
3. CamelCase is split into words: a space goes between a lower-case letter or digit and a capital
   (``ApplyEyeMakeup`` → ``Apply Eye Makeup``, ``YoYo`` → ``Yo Yo``), and between an acronym and a
   capitalised word (``TVShow`` → ``TV Show``);
4. everything is lower-cased (so ``American football`` becomes ``american football``: one simple
   rule beats a list of proper nouns);
5. runs of whitespace collapse to one space, with none at either end.

Everything else (parentheses, apostrophes, hyphens, digits) is kept. ``verbatim=True`` skips rules 1-4
and keeps the raw label as the dataset spells it, whitespace collapsed: the alternative that
CLIP-FSAR uses for SSv2 (docs/prompts.md, "Label normalisation").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fsar_prompts._errors import PromptError

__all__ = ["NormalizedLabel", "normalize_label"]

# A lower-case letter or digit followed by a capital: "yEye", "oYo", "4G".
_LOWER_UPPER = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# The last capital of an acronym followed by a capitalised word: "TVShow" → "TV" + "Show".
_ACRONYM_WORD = re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])")


@dataclass(frozen=True)
class NormalizedLabel:
    """A class label as the dataset spells it and as prompts use it.

    Attributes:
        original: the raw label, exactly as given.
        text: the normalised phrase that goes into ``{label}``.
    """

    original: str
    text: str


def normalize_label(raw: str, *, verbatim: bool = False) -> NormalizedLabel:
    """Turn a dataset class label into a readable phrase (rules in the module docstring).

    Args:
        raw: the label as the dataset spells it.
        verbatim: keep the raw spelling (brackets, case, underscores) and only collapse whitespace.

    Returns:
        The original label and its normalised text.

    Raises:
        TypeError: ``raw`` is not a string.
        ValueError: the label is empty, or nothing but whitespace, brackets and underscores.

    Example:
        >>> normalize_label("Pushing [something] from left to right").text
        'pushing something from left to right'
        >>> normalize_label("ApplyEyeMakeup").text, normalize_label("brush_hair").text
        ('apply eye makeup', 'brush hair')
        >>> normalize_label("Pushing [something] from left to right", verbatim=True).text
        'Pushing [something] from left to right'
    """
    if not isinstance(raw, str):
        raise TypeError(f"a label must be a string, got {type(raw).__name__}: {raw!r}")
    if verbatim:
        text = " ".join(raw.split())
    else:
        text = raw.replace("[", "").replace("]", "").replace("_", " ")
        text = _ACRONYM_WORD.sub(" ", _LOWER_UPPER.sub(" ", text))
        text = " ".join(text.lower().split())
    if not text:
        raise PromptError(f"empty label {raw!r}: a label needs at least one word")
    return NormalizedLabel(original=raw, text=text)
