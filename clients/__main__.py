"""``python -m clients``: the ``huleedu`` command line."""

import sys

from clients.cli import main

sys.exit(main())
