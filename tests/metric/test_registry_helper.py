"""``fsar_metric.Registry``: the one registry helper (same wording, same listing for every registry)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fsar_metric import DuplicateNameError, Entry, Registry, UnknownNameError
from fsar_metric.registry import NoDeclared


@dataclass(frozen=True)
class Info:
    fast: bool = False
    width: int = 0


def _registry() -> Registry[object, Info]:
    return Registry("widget", declared=Info)


def test_register_as_decorator_and_as_call_returns_the_object_unchanged():
    widgets = _registry()

    @widgets.register("b", fast=True)
    def b() -> str:
        return "b"

    a = object()
    assert widgets.register("a", a, width=3) is a
    assert b() == "b"
    assert widgets.get("b") is b
    assert widgets.get("a") is a
    assert widgets.entry("a") == Entry("a", a, Info(width=3))
    assert widgets.entry("b").declared == Info(fast=True)


def test_names_are_sorted_and_iteration_and_membership_follow_them():
    widgets = _registry()
    for name in ("zeta", "alpha", "mid"):
        widgets.register(name, name)
    assert widgets.names() == ["alpha", "mid", "zeta"]
    assert list(widgets) == widgets.names()
    assert len(widgets) == 3
    assert "mid" in widgets
    assert "nope" not in widgets
    assert 3 not in widgets


def test_unknown_names_use_the_one_wording_and_list_the_registered_names():
    widgets = _registry()
    widgets.register("b", 1)
    widgets.register("a", 2)
    for lookup in (widgets.get, widgets.entry, widgets.unregister):
        with pytest.raises(UnknownNameError, match=r"^unknown widget 'c'; registered widgets: a, b$"):
            lookup("c")
    assert issubclass(UnknownNameError, ValueError)
    with pytest.raises(UnknownNameError, match=r"^unknown widget 'c'; registered widgets: \(none\)$"):
        _registry().get("c")
    with pytest.raises(UnknownNameError, match=r"registered chat formats: \(none\)"):
        Registry("chat format").get("x")
    with pytest.raises(UnknownNameError, match=r"registered indices: \(none\)"):
        Registry("index", plural="indices").get("x")


def test_a_taken_name_raises_naming_what_holds_it_and_keeps_the_first():
    widgets = _registry()

    def first() -> None: ...

    widgets.register("x", first)
    with pytest.raises(DuplicateNameError, match=r"^a widget named 'x' is already registered \(.*first\)$"):
        widgets.register("x", object())
    assert issubclass(DuplicateNameError, ValueError)
    assert widgets.get("x") is first


def test_unregister_returns_the_entry_and_frees_the_name():
    widgets = _registry()
    widgets.register("x", 1, fast=True)
    assert widgets.unregister("x") == Entry("x", 1, Info(fast=True))
    assert "x" not in widgets
    widgets.register("x", 2)
    assert widgets.get("x") == 2


def test_declared_metadata_is_checked():
    widgets = _registry()
    with pytest.raises(
        ValueError, match=r"widget 'x' declares unknown field\(s\) \['speed'\]; a widget may declare: fast, width"
    ):
        widgets.register("x", speed=1)
    plain: Registry[int, NoDeclared] = Registry("thing")
    plain.register("one", 1)
    assert plain.entry("one").declared == NoDeclared()
    with pytest.raises(
        ValueError, match=r"thing 'two' declares unknown field\(s\) \['fast'\]; a thing may declare: \(nothing\)"
    ):
        plain.register("two", 2, fast=True)
    assert plain.names() == ["one"]


def test_the_check_hook_refuses_what_may_not_be_registered():
    def only_ints(name: str, obj: object) -> None:
        if not isinstance(obj, int):
            raise ValueError(f"number {name!r} must be an int, got {obj!r}")

    numbers: Registry[int, NoDeclared] = Registry("number", check=only_ints)
    numbers.register("one", 1)
    with pytest.raises(ValueError, match=r"number 'half' must be an int, got 0\.5"):
        numbers.register("half", 0.5)  # type: ignore[arg-type]
    assert numbers.names() == ["one"]


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_name_must_be_a_non_empty_string(name):
    with pytest.raises(ValueError, match="a widget name must be a non-empty string"):
        _registry().register(name, 1)  # type: ignore[arg-type]


def test_a_registry_needs_a_kind():
    with pytest.raises(ValueError, match="needs a non-empty kind"):
        Registry("")
