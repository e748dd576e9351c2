"""`python -m dalib.pseudo_label ...` (see `dalib.pseudo_label.cli`)."""
import sys

from dalib.pseudo_label.cli import main

sys.exit(main())
