"""``python -m chexviz.cli``: the ``chexviz`` command (also under ``torchrun``)."""

import sys

from chexviz.cli import main

sys.exit(main())
