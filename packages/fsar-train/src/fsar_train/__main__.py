"""``python -m fsar_train``: see ``fsar_train.cli``."""

from fsar_train.cli import main

raise SystemExit(main())
