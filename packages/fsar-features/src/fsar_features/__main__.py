"""``python -m fsar_features`` runs the command line (see ``fsar_features._cli``)."""

import sys

from fsar_features._cli import main

sys.exit(main())
