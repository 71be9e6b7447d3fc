"""Prompt templates as data: the roles, the template record, template sets and the TOML loader.

A template file holds one or more ``[[template]]`` tables::

    [[template]]
    id = "support-kitchen"      # unique in the set: lower-case letters, digits, ".", "_", "-"
    role = "support"            # support | query | label
    scenario = "kitchen"        # generic | temporal | appearance | a name of your own
    version = 1                 # an integer >= 1; bump it when the wording changes
    text = 'This video shows the action "{label}". Describe the utensils.'

The shipped files (``fsar_prompts/templates/*.toml``) go through the same loader and the same
checks as user files, so every rule below holds for both:

- a file has only ``[[template]]`` tables, each with exactly the keys above;
- placeholders are ``{label}`` and ``{description}`` only, written plainly (no ``{}``, ``{0}``,
  ``{label!r}``, ``{label:>9}``); ``{{`` and ``}}`` give literal braces;
- a ``support`` or ``label`` template contains ``{label}``; a ``query`` template contains no
  placeholder at all: a query prompt never carries a class name (docs/prompts.md, "Roles");
- the text is non-empty and has no leading or trailing whitespace (a stray newline from a TOML
  multi-line string would silently change the tokens);
- in one set, ids are unique and each (role, scenario) pair has at most one template, so rendering
  never has to choose.

Every violation raises ``ValueError`` naming the file, the template id and the problem.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from os import PathLike
from typing import Any, Literal

from fsar_prompts._data import PACKAGE, check_keys, read_toml, shipped_folder
from fsar_prompts._errors import PromptError

__all__ = [
    "PLACEHOLDERS",
    "PromptTemplate",
    "Role",
    "RoleSpec",
    "TemplateSet",
    "default_templates",
    "get_role",
    "list_roles",
    "list_scenarios",
    "list_templates",
    "load_templates",
]

Role = Literal["support", "query", "label"]

#: Every placeholder a template may use.
PLACEHOLDERS = frozenset({"label", "description"})

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_FIELDS = frozenset({"id", "role", "scenario", "text", "version"})


@dataclass(frozen=True)
class RoleSpec:
    """What a prompt role requires; rendering and template checks read this table, never the role name."""

    name: str
    #: True: the template must contain ``{label}`` and rendering needs a label. False: no placeholder
    #: at all, and rendering rejects a label or a description.
    uses_label: bool
    #: True: the prompt follows a video in the chat format; False: a text-only forward (no video).
    has_video: bool
    #: True: a scenario without a template of this role falls back to the role's ``generic`` template
    #: (label prompts have no video, so scenario wording about what to watch does not apply).
    generic_fallback: bool
    #: One line for error messages and docs.
    purpose: str


_ROLES: dict[str, RoleSpec] = {
    spec.name: spec
    for spec in (
        RoleSpec(
            "support", uses_label=True, has_video=True, generic_fallback=False, purpose="label-aware video prompt"
        ),
        RoleSpec("query", uses_label=False, has_video=True, generic_fallback=False, purpose="label-free video prompt"),
        RoleSpec("label", uses_label=True, has_video=False, generic_fallback=True, purpose="text-only class prompt"),
    )
}


def list_roles() -> list[str]:
    """The prompt roles, sorted: ``['label', 'query', 'support']``."""
    return sorted(_ROLES)


def get_role(role: str) -> RoleSpec:
    """The rules of one role.

    Raises:
        ValueError: unknown role; the message lists the valid ones.
    """
    try:
        return _ROLES[role]
    except (KeyError, TypeError):
        raise PromptError(f"unknown role {role!r}; valid roles: {', '.join(list_roles())}") from None


def _placeholders(text: str) -> frozenset[str]:
    """The placeholder names in ``text``; raises ``ValueError`` (a bare problem) on anything but ``{name}``."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as error:  # "Single '}' encountered in format string" and the like
        raise PromptError(f"malformed braces ({error}); write {{{{ and }}}} for literal braces") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise PromptError(
                f"positional placeholder {{{name}}}; valid placeholders: {_fmt_placeholders(PLACEHOLDERS)}"
            )
        if name not in PLACEHOLDERS:
            raise PromptError(f"unknown placeholder {{{name}}}; valid placeholders: {_fmt_placeholders(PLACEHOLDERS)}")
        if spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise PromptError(f"placeholder {{{shown}}} has a conversion or format spec; write plain {{{name}}}")
        names.add(name)
    return frozenset(names)


def _fmt_placeholders(names: frozenset[str]) -> str:
    return ", ".join("{" + name + "}" for name in sorted(names)) or "none"


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt template, validated when built (the checks in the module docstring).

    Attributes:
        id: unique name within a template set; part of every rendered prompt's id.
        role: ``support``, ``query`` or ``label``.
        scenario: ``generic``, ``temporal``, ``appearance`` or a user-defined name.
        text: the wording, with ``{label}`` / ``{description}`` placeholders.
        version: bumped whenever the wording changes; part of every rendered prompt's id.
        source: the file it came from (messages only; not part of any id and not compared).

    Raises:
        ValueError: any rule broken; the message names the source, the id and the problem.
    """

    id: str
    role: str
    scenario: str
    text: str
    version: int
    source: str = field(default="<python>", compare=False)

    def __post_init__(self) -> None:
        where = f"{self.source}: template {self.id!r}"
        if not isinstance(self.id, str) or not _NAME.fullmatch(self.id):
            raise PromptError(
                f"{self.source}: template id {self.id!r} is not a name (lower-case letters, digits, '.', '_', '-')"
            )
        try:
            spec = get_role(self.role)
        except ValueError as error:
            raise PromptError(f"{where}: {error}") from None
        if not isinstance(self.scenario, str) or not _NAME.fullmatch(self.scenario):
            raise PromptError(
                f"{where}: scenario {self.scenario!r} is not a name (lower-case letters, digits, '.', '_', '-')"
            )
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise PromptError(f"{where}: version must be an integer >= 1, got {self.version!r}")
        if not isinstance(self.text, str) or not self.text.strip():
            raise PromptError(f"{where}: text must be a non-empty string, got {self.text!r}")
        if self.text != self.text.strip():
            raise PromptError(f"{where}: text has leading or trailing whitespace: {self.text!r}")
        try:
            found = _placeholders(self.text)
        except ValueError as error:
            raise PromptError(f"{where}: {error}") from None
        if not spec.uses_label and found:
            # The one rule that keeps the method honest: the query side never sees a class name.
            raise PromptError(
                f"{where}: a {self.role} template must not contain {_fmt_placeholders(found)}: "
                "a query prompt never carries a class name or class description"
            )
        if spec.uses_label and "label" not in found:
            raise PromptError(f"{where}: a {self.role} template must contain {{label}} ({spec.purpose})")

    @property
    def placeholders(self) -> frozenset[str]:
        """The placeholder names the text uses, e.g. ``frozenset({'label'})``."""
        return _placeholders(self.text)

    def fill(self, *, label: str | None = None, description: str | None = None) -> str:
        """The text with its placeholders replaced (checks of the values belong to ``render_prompt``).

        Raises:
            ValueError: a placeholder the text uses was given no value.
        """
        values = {"label": label, "description": description}
        missing = sorted(name for name in self.placeholders if values[name] is None)
        if missing:
            raise PromptError(f"template {self.id!r} needs a value for {_fmt_placeholders(frozenset(missing))}")
        return self.text.format_map({name: values[name] for name in self.placeholders})


@dataclass(frozen=True)
class TemplateSet:
    """An immutable, validated collection of templates: at most one per (role, scenario).

    Attributes:
        templates: the templates, in load order.

    Raises:
        ValueError: two templates share an id, or a (role, scenario) pair; the message names both
            templates and their files.
    """

    templates: tuple[PromptTemplate, ...]

    def __post_init__(self) -> None:
        by_id: dict[str, PromptTemplate] = {}
        by_slot: dict[tuple[str, str], PromptTemplate] = {}
        for template in self.templates:
            if not isinstance(template, PromptTemplate):
                raise PromptError(f"a TemplateSet holds PromptTemplate objects, got {type(template).__name__}")
            if (other := by_id.get(template.id)) is not None:
                raise PromptError(
                    f"{template.source}: template {template.id!r}: duplicate id (also defined in {other.source})"
                )
            slot = (template.role, template.scenario)
            if (other := by_slot.get(slot)) is not None:
                raise PromptError(
                    f"{template.source}: template {template.id!r}: a second {template.role} template for scenario "
                    f"{template.scenario!r} (template {other.id!r} in {other.source} has it already); "
                    "use another scenario name, or a separate file passed as templates="
                )
            by_id[template.id] = template
            by_slot[slot] = template

    def __iter__(self) -> Iterator[PromptTemplate]:
        return iter(self.templates)

    def __len__(self) -> int:
        return len(self.templates)

    def ids(self) -> list[str]:
        """The template ids, sorted."""
        return sorted(template.id for template in self.templates)

    def scenarios(self) -> list[str]:
        """Every scenario that has at least one template, sorted."""
        return sorted({template.scenario for template in self.templates})

    def get(self, template_id: str) -> PromptTemplate:
        """The template with this id.

        Raises:
            ValueError: unknown id; the message lists the ids of the set.
        """
        for template in self.templates:
            if template.id == template_id:
                return template
        raise PromptError(f"unknown template id {template_id!r}; templates: {', '.join(self.ids())}")

    def find(self, role: str, scenario: str) -> PromptTemplate:
        """The template rendered for ``role`` under ``scenario``.

        A role whose ``RoleSpec.generic_fallback`` is set (``label``) uses its ``generic`` template
        when the scenario has none of its own.

        Raises:
            ValueError: unknown role or scenario, or no template for the pair; the message lists
                the valid choices.
        """
        spec = get_role(role)
        if scenario not in self.scenarios():
            raise PromptError(f"unknown scenario {scenario!r}; scenarios: {', '.join(self.scenarios())}")
        candidates = [scenario, "generic"] if spec.generic_fallback else [scenario]
        for name in candidates:
            for template in self.templates:
                if template.role == role and template.scenario == name:
                    return template
        having = sorted({t.scenario for t in self.templates if t.role == role})
        raise PromptError(
            f"no {role} template for scenario {scenario!r}; scenarios with a {role} template: "
            f"{', '.join(having) or 'none'}"
        )


def _parse_file(file: str | PathLike[str] | Traversable, source: str | None = None) -> list[PromptTemplate]:
    data, source = read_toml(file, source)
    check_keys(data, required={"template"}, where=f"{source}: top level (a template file holds [[template]] tables)")
    entries = data["template"]
    if not isinstance(entries, list) or not entries or not all(isinstance(entry, dict) for entry in entries):
        raise PromptError(f"{source}: 'template' must be one or more [[template]] tables")
    templates: list[PromptTemplate] = []
    for number, entry in enumerate(entries, start=1):
        template_id: Any = entry.get("id")
        where = (
            f"{source}: template {template_id!r}" if isinstance(template_id, str) else f"{source}: template #{number}"
        )
        check_keys(entry, required=_FIELDS, where=where)
        templates.append(PromptTemplate(**entry, source=source))
    return templates


def load_templates(*files: str | PathLike[str], include_defaults: bool = False) -> TemplateSet:
    """Load and validate template files (the format and the rules are in this module's docstring).

    Args:
        *files: paths of TOML template files, read in order.
        include_defaults: put the shipped templates first, so a file only adds new scenarios
            (a shipped id or (role, scenario) pair defined again is an error).

    Returns:
        One validated set holding every template of every file.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: no file given, invalid TOML, or a rule broken; the message names the file, the
            template id and the problem.

    Example:
        >>> import pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder, "mine.toml")
        ...     _ = path.write_text('''
        ... [[template]]
        ... id = "support-kitchen"
        ... role = "support"
        ... scenario = "kitchen"
        ... version = 1
        ... text = 'This video shows the action "{label}". Describe the utensils.'
        ... ''')
        ...     mine = load_templates(path, include_defaults=True)
        >>> mine.scenarios(), mine.get("support-kitchen").source.endswith("mine.toml")
        (['appearance', 'generic', 'kitchen', 'temporal'], True)
    """
    if not files and not include_defaults:
        raise PromptError("load_templates needs at least one file (or include_defaults=True)")
    templates = list(default_templates()) if include_defaults else []
    for file in files:
        templates.extend(_parse_file(file))
    return TemplateSet(tuple(templates))


@functools.cache
def default_templates() -> TemplateSet:
    """The templates shipped in ``fsar_prompts/templates/*.toml`` (loaded once, validated like user files)."""
    templates: list[PromptTemplate] = []
    for file in shipped_folder("templates"):
        templates.extend(_parse_file(file, f"{PACKAGE}/templates/{file.name}"))
    return TemplateSet(tuple(templates))


def list_templates(templates: TemplateSet | None = None) -> list[str]:
    """Template ids of ``templates`` (default: the shipped set), sorted.

    Example:
        >>> list_templates()[:3]
        ['label-generic', 'query-appearance', 'query-generic']
    """
    return (default_templates() if templates is None else templates).ids()


def list_scenarios(templates: TemplateSet | None = None) -> list[str]:
    """Scenarios of ``templates`` (default: the shipped set), sorted.

    Example:
        >>> list_scenarios()
        ['appearance', 'generic', 'temporal']
    """
    return (default_templates() if templates is None else templates).scenarios()
