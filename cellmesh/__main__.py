"""``python -m cellmesh``: the same as the ``cellmesh`` console script."""

import sys

from .cli import main

sys.exit(main())
