"""``python -m cmamae``: the same as the ``cmamae`` command."""

import sys

from cmamae.cli import main

sys.exit(main())
