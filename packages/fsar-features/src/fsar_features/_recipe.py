"""``FeatureRecipe``: how features were made, the one record that travels from extraction to the store.

The extractor builds it (``FeatureExtractor.recipe``), a cache writes it once as ``recipe.json`` and
records its ``hash`` in every shard and fragment, every ``VideoFeatures`` carries it, and a prototype
store keeps it in its ``StoreRecipe``; all of them compare recipes with ``==``.

Widths: ``dim`` is D_in (every text vector); ``visual_dim`` is D_v, derived from the visual pooling
(D_in for ``mean``/``cls``, g²·D_in for ``grid{g}``: the width rule each pooling registers) unless
the recipe holds an explicit ``visual_dim_override``. So ``dataclasses.replace(recipe, dim=…)`` or
``replace(recipe, visual_pooling=…)`` gives a recipe whose ``visual_dim`` follows.

This module imports nothing else of fsar_features, so ``_decode`` (``VideoFeatures``) and
``_cache`` can both import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fsar_metric.errors import InputError
from fsar_metric.registry import NoDeclared, Registry

__all__ = ["FORMAT_VERSION", "FeatureRecipe", "register_visual_width", "visual_width"]

#: The cache layout version (``FeatureRecipe.format_version``).
FORMAT_VERSION = 1

#: Visual pooling name → its width rule D_in → D_v (``register_visual_pooling`` fills it).
VISUAL_WIDTHS: Registry[Callable[[int], int], NoDeclared] = Registry("visual pooling width rule")


def register_visual_width(pooling: str, width: Callable[[int], int]) -> None:
    """Record the width rule D_in → D_v of the visual pooling ``pooling``.

    ``fsar_features.register_visual_pooling`` calls it; a recipe derives its ``visual_dim`` from it.

    Raises:
        ValueError: ``pooling`` already has a width rule.
    """
    VISUAL_WIDTHS.register(pooling, width)


def visual_width(pooling: str, dim: int) -> int | None:
    """D_v of ``pooling`` on D_in = ``dim`` features, or None for a pooling without a width rule.

    Example:
        >>> visual_width("grid4", 64), visual_width("mean", 64)
        (1024, 64)
    """
    return int(VISUAL_WIDTHS.get(pooling)(dim)) if pooling in VISUAL_WIDTHS else None


#: The JSON key of ``visual_dim_override`` (``recipe.json`` has always called it ``visual_dim``).
_VISUAL_DIM_KEY = "visual_dim"


@dataclass(frozen=True)
class FeatureRecipe:
    """How every feature in a cache was made; a cache never mixes two recipes.

    Fields added after the first format (``visual_dim``, ``support_text_pooling``,
    ``query_text_pooling``, ``temporal_centring``) are left out of ``to_json`` (so of ``recipe.json``
    and ``hash``) while they hold the value that reproduces the first format's behaviour: a cache
    extracted before they existed keeps its recipe and hash, and opens with the defaults.

    Attributes:
        backend: registry name of the backend.
        model_id: the model (hub id, folder, or the tiny model's recipe).
        family: fsar-prompts family of the prompts.
        dim: D_in, the decoder width: the width of every text vector.
        n_layers: L of the decoder.
        layers: hidden-state indices averaged (0 = embeddings, ℓ = decoder layer ℓ, L = last).
        visual_pooling: per-frame pooling (``mean``, ``cls`` or ``grid{g}``).
        text_pooling: the text pooling of every role without its own (``last``, ``mean`` or ``label``);
            ``text_pooling_for(role)`` gives a role's.
        n_frames: T.
        sampling: frame sampling strategy.
        sampling_seed: seed of per-video random sampling offsets, or None (deterministic).
        frame_size: short side frames were resized to (PIL bicubic), before the centre crop.
        crop_size: side of the square centre crop.
        scenario: fsar-prompts scenario.
        roles: prompt roles run (``query``, ``support``).
        prompts: role → the prompt: the exact id for a label-free role, ``template_id@version`` for
            a label-aware one (each entry records its own label-specific id).
        storage_dtype: ``float16`` (default), ``bfloat16`` or ``float32``.
        reuse_prefix_cache: True when the text passes reused the key/value cache of prefix + video.
        format_version: the cache layout version.
        visual_dim_override: D_v when the visual pooling's width rule does not give it, else None
            (one equal to the derived width is stored as None), so ``visual_dim`` follows ``dim``
            and ``visual_pooling`` through ``dataclasses.replace``. A pooling without a width rule
            derives D_in. ``recipe.json`` calls it ``visual_dim``.
        support_text_pooling: the support role's own text pooling, or None (``text_pooling``); one
            equal to ``text_pooling`` is stored as None, so equal features give equal recipes.
        query_text_pooling: the query role's own text pooling, or None (``text_pooling``); likewise.
        temporal_centring: True when each video's visual features had their mean over T subtracted
            before storage.
    """

    backend: str
    model_id: str
    family: str
    dim: int
    n_layers: int
    layers: tuple[int, ...]
    visual_pooling: str
    text_pooling: str
    n_frames: int
    sampling: str
    sampling_seed: int | None
    frame_size: int
    crop_size: int
    scenario: str
    roles: tuple[str, ...]
    prompts: dict[str, str] = field(default_factory=dict)
    storage_dtype: str = "float16"
    reuse_prefix_cache: bool = True
    format_version: int = FORMAT_VERSION
    visual_dim_override: int | None = None
    support_text_pooling: str | None = None
    query_text_pooling: str | None = None
    temporal_centring: bool = False

    def __post_init__(self) -> None:
        # Canonical values, so two recipes of the same features compare (and hash) equal however written.
        if self.visual_dim_override is not None:
            if isinstance(self.visual_dim_override, bool) or not isinstance(self.visual_dim_override, int):
                raise InputError(f"visual_dim must be an int (D_v), got {self.visual_dim_override!r}")
            if self.visual_dim_override == self._derived_visual_dim():
                object.__setattr__(self, "visual_dim_override", None)
        for name in ("support_text_pooling", "query_text_pooling"):
            if getattr(self, name) == self.text_pooling:
                object.__setattr__(self, name, None)

    def _derived_visual_dim(self) -> int:
        """D_v by the pooling's width rule; D_in for a pooling without one (not registered in this
        process), as ``recipe.json`` has always read a missing ``visual_dim``."""
        width = visual_width(self.visual_pooling, self.dim)
        return self.dim if width is None else width

    @property
    def visual_dim(self) -> int:
        """D_v, the width of every visual frame vector: the override, else the pooling's width rule."""
        return self.visual_dim_override if self.visual_dim_override is not None else self._derived_visual_dim()

    @property
    def text_dim(self) -> int:
        """D_in, the width of every text vector (the same as ``dim``)."""
        return self.dim

    def text_pooling_for(self, role: str) -> str:
        """The text pooling of ``role``'s vectors (``query`` or ``support``).

        Raises:
            ValueError: a role this recipe does not run.
        """
        if role not in self.roles:
            raise InputError(f"unknown role {role!r} for this recipe; its roles: {', '.join(self.roles)}")
        own = {"query": self.query_text_pooling, "support": self.support_text_pooling}.get(role)
        return own if own is not None else self.text_pooling

    def _legacy_values(self) -> dict[str, Any]:
        """The fields added after the first format, at the values that reproduce its behaviour."""
        return {
            _VISUAL_DIM_KEY: self.dim,
            "support_text_pooling": None,
            "query_text_pooling": None,
            "temporal_centring": False,
        }

    def as_dict(self) -> dict[str, Any]:
        """Every field, ``visual_dim`` resolved (D_v) in place of ``visual_dim_override``."""
        return {
            (_VISUAL_DIM_KEY if key == "visual_dim_override" else key): (
                self.visual_dim if key == "visual_dim_override" else value
            )
            for key, value in dataclasses.asdict(self).items()
        }

    def diff(self, other: FeatureRecipe) -> dict[str, tuple[Any, Any]]:
        """Field → (this value, ``other``'s value) for every field that differs (empty when equal)."""
        mine, theirs = self.as_dict(), other.as_dict()
        return {key: (mine[key], theirs[key]) for key in mine if mine[key] != theirs[key]}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (fields added after the first format only where they differ from it)."""
        data = self.as_dict()
        for key, legacy in self._legacy_values().items():
            if data[key] == legacy:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureRecipe:
        """Inverse of ``to_json``; also reads ``as_dict`` (every field written out).

        Raises:
            ValueError: unknown or missing fields.
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"visual_dim_override"} | {_VISUAL_DIM_KEY}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown recipe fields {unknown}; known: {sorted(names)}")
        values = dict(data)
        if _VISUAL_DIM_KEY in values:
            values["visual_dim_override"] = values.pop(_VISUAL_DIM_KEY)
        for key in ("layers", "roles"):
            if key in values:
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except TypeError as error:
            raise InputError(f"incomplete feature recipe: {error}") from None

    @property
    def hash(self) -> str:
        """A short stable hash of the recipe (recorded in every shard and fragment)."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
