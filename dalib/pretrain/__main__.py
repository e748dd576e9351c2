"""`python -m dalib.pretrain ...`: see `dalib.pretrain.cli`."""
import sys

from dalib.pretrain.cli import main

sys.exit(main())
