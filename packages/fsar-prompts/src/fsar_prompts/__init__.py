"""fsar-prompts: scenario-adaptive prompt templates as data, for MLLM-based few-shot action recognition.

Support videos get a label-aware prompt, query videos a label-free one, and the wording adapts to
the benchmark's scenario (``temporal`` for SSv2, ``appearance`` for Kinetics-100, UCF101, HMDB51).
Each rendered prompt carries the exact text and a stable id that the feature cache records.
Pure Python, no dependencies.

Example:
    >>> import fsar_prompts
    >>> fsar_prompts.list_families()
    ['llava-next-video', 'llava-onevision', 'qwen2-vl', 'video-llava']
    >>> scenario = fsar_prompts.scenario_for("ucf101")
    >>> prompt = fsar_prompts.render_prompt("qwen2-vl", "support", scenario, label="ApplyEyeMakeup")
    >>> prompt.template_id, prompt.label_text
    ('support-appearance', 'apply eye makeup')
"""

from fsar_prompts._errors import PromptError
from fsar_prompts._formats import ChatFormat, get_chat_format, list_families, register_chat_format
from fsar_prompts._labels import NormalizedLabel, normalize_label
from fsar_prompts._render import RenderedPrompt, render_prompt
from fsar_prompts._scenarios import list_benchmarks, scenario_for
from fsar_prompts._templates import (
    PLACEHOLDERS,
    PromptTemplate,
    Role,
    RoleSpec,
    TemplateSet,
    default_templates,
    get_role,
    list_roles,
    list_scenarios,
    list_templates,
    load_templates,
)

__version__ = "0.1.0"

__all__ = [
    "PLACEHOLDERS",
    "ChatFormat",
    "NormalizedLabel",
    "PromptError",
    "PromptTemplate",
    "RenderedPrompt",
    "Role",
    "RoleSpec",
    "TemplateSet",
    "default_templates",
    "get_chat_format",
    "get_role",
    "list_benchmarks",
    "list_families",
    "list_roles",
    "list_scenarios",
    "list_templates",
    "load_templates",
    "normalize_label",
    "register_chat_format",
    "render_prompt",
    "scenario_for",
]
