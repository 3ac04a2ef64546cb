"""``python -m strongticket`` is the ``strongticket`` command."""

import sys

from .cli import main

sys.exit(main())
