"""``python -m tinygrad_rnn``: the same command line as ``tinygrad-rnn``."""
import sys

from .cli import main

sys.exit(main())
