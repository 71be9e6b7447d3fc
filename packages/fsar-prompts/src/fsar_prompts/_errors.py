"""``PromptError``: what fsar-prompts raises on purpose (a bad template, placeholder, label, family).

fsar-prompts imports no sibling package, so it cannot derive from ``fsar_metric.errors.FsarError``;
the packages that pass a user's value to it (fsar-features, fsar-train, the apps) turn a
``PromptError`` into an ``fsar_metric.errors.InputError`` there, so the command lines see one
project error type. It is a ``ValueError``, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["PromptError"]


class PromptError(ValueError):
    """A prompt template, placeholder, label, chat family or benchmark name that is not valid."""
