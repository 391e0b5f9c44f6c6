"""`python -m adapterkit` = the `adapterkit` command."""

import sys

from .cli import main

sys.exit(main())
