"""`python -m dalib.train ...` (and `torchrun -m dalib.train ...`): see `dalib.train.cli`."""
import sys

from dalib.train.cli import main

sys.exit(main())
