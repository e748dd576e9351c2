"""`python -m dalib.data list | validate [DIR] | build NAME --split S -n N` (see `dalib.data.cli`)."""
import sys

from dalib.data.cli import main

sys.exit(main())
