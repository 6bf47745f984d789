"""``python -m adaptwin`` is the same as the ``adaptwin`` command."""

import sys

from adaptwin.cli import main

sys.exit(main())
