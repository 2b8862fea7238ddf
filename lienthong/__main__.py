"""``python -m lienthong`` runs the command line."""

import sys

from lienthong.cli import main

sys.exit(main())
