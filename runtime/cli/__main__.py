"""``python -m driftline.runtime.cli``: the ``driftline`` command."""

import sys

from driftline.runtime.cli import main

sys.exit(main())
