"""Every registry of fsar speaks one language (issue: "one registry helper used by every registry").

Each registry is an ``fsar_metric.registry.Registry`` (fsar-prompts' chat formats, which may not
import a sibling, copy its wording), so an unknown name reads
``unknown <kind> 'x'; registered <kinds>: a, b, c`` (names sorted), a name taken twice reads
``a <kind> named 'x' is already registered (...)``, and both are ``InputError`` / ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from torch import nn

import fsar_features
import fsar_metric
import fsar_prompts
import fsar_train
from fsar_apps.store import REFRESH_MODES, IndexSettings
from fsar_features import _decode, _model_types, _recipe, _registry, _sampling
from fsar_features.backends import FAMILIES, get_family
from fsar_metric.errors import InputError
from fsar_metric.registry import DuplicateNameError, Registry, UnknownNameError
from fsar_train import _sources

# kind, plural, the sorted names, a public lookup that raises for an unknown name
LOOKUPS: list[tuple[str, str, Callable[[], list[str]], Callable[[str], object]]] = [
    ("metric", "metrics", fsar_metric.list_metrics, fsar_metric.create_metric),
    ("frame similarity", "frame similarities", fsar_metric.list_similarities, fsar_metric.create_similarity),
    ("feature backend", "feature backends", fsar_features.list_backends, fsar_features.create_backend),
    ("frame sampler", "frame samplers", fsar_features.list_samplers, lambda n: fsar_features.sample_indices(9, 3, n)),
    ("layer preset", "layer presets", fsar_features.list_layer_presets, lambda n: fsar_features.resolve_layers(n, 4)),
    (
        "visual pooling",
        "visual poolings",
        fsar_features.list_visual_poolings,
        lambda n: fsar_features.pool_visual(torch.zeros(6, 4), 2, n),
    ),
    ("text pooling", "text poolings", fsar_features.list_text_poolings, fsar_features.text_pooling_needs_label),
    ("model type", "model types", lambda: list(fsar_features.list_model_types()), _model_types.MODEL_TYPES.get),
    ("model family", "model families", FAMILIES.names, get_family),
    ("feature source", "feature sources", fsar_train.list_feature_sources, _sources.SOURCES.get),
    ("chat format", "chat formats", fsar_prompts.list_families, fsar_prompts.get_chat_format),
    ("index refresh mode", "index refresh modes", REFRESH_MODES.names, lambda n: IndexSettings(refresh=n)),
]

# every Registry object of the packages (the contract: no hand-written registry is left)
REGISTRIES: list[Registry] = [
    fsar_metric._registry.METRICS,
    fsar_metric.similarity.SIMILARITIES,
    _registry.BACKENDS,
    _sampling.SAMPLERS,
    _decode.LAYER_PRESETS,
    _decode.VISUAL_POOLINGS,
    _decode.TEXT_POOLINGS,
    _recipe.VISUAL_WIDTHS,
    _model_types.MODEL_TYPES,
    FAMILIES,
    _sources.SOURCES,
    REFRESH_MODES,
]


@pytest.mark.parametrize(("kind", "plural", "names", "lookup"), LOOKUPS, ids=[k for k, *_ in LOOKUPS])
def test_an_unknown_name_is_one_sentence_listing_the_registered_names(kind, plural, names, lookup) -> None:
    listed = names()
    assert listed == sorted(listed)
    assert listed, f"no {plural} registered"
    with pytest.raises(ValueError, match=f"unknown {kind} 'no-such-name'") as caught:
        lookup("no-such-name")
    assert str(caught.value).endswith(f"unknown {kind} 'no-such-name'; registered {plural}: {', '.join(listed)}")
    if kind != "chat format":  # fsar-prompts imports no sibling: its PromptError becomes an InputError at the callers
        assert isinstance(caught.value, UnknownNameError)
        assert isinstance(caught.value, InputError)


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.kind)
def test_every_registry_refuses_a_name_taken_twice_in_one_wording(registry: Registry) -> None:
    name = registry.names()[0]
    with pytest.raises(
        DuplicateNameError, match=rf"^a {re.escape(registry.kind)} named '{re.escape(name)}' is already registered \("
    ):
        registry.register(name, registry.get(name))
    assert registry.names() == sorted(registry.names())


def test_the_chat_format_registry_copies_the_wording_for_a_name_taken_twice() -> None:
    taken = fsar_prompts.get_chat_format("video-llava")
    with pytest.raises(ValueError, match=r"^a chat format named 'video-llava' is already registered \("):
        fsar_prompts.register_chat_format(taken)


def test_no_hand_written_registry_is_left_in_the_packages() -> None:
    """A module-level ``dict`` filled by a ``register_*`` function is what the Registry replaced."""
    import pathlib

    roots = [pathlib.Path(m.__file__).parent for m in (fsar_metric, fsar_features, fsar_train)]
    offenders = []
    for root in roots:
        for path in root.rglob("*.py"):
            text = path.read_text()
            if re.search(r"^_[A-Z_]+: dict\[str, [^\]]*\] = \{\}$", text, re.M) and "def register_" in text:
                offenders.append(str(path))
    assert offenders == []


def test_a_registered_metric_class_is_still_an_nn_module() -> None:
    assert all(issubclass(fsar_metric.get_metric_class(n), nn.Module) for n in fsar_metric.list_metrics())
