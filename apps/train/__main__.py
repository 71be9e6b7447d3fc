"""`uv run apps/train`: the main job of fsar (see fsar_apps.cli). Absolute imports only: uv runs this
folder as a script."""

import sys

from fsar_apps.cli import main

sys.exit(main())
