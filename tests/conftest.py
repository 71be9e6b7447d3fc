"""Environment set-up for every test folder: standard library and pytest only.

This file must stay importable without torch, so that ``pytest tests/prompts`` runs in an
environment with only fsar-prompts, and ``pytest tests/metric`` with only fsar-metric.
"""

import os

# No network in tests: a hub lookup fails at once instead of after retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
