"""``python -m kvmrec``: the same as the ``kvmrec`` command."""

import sys

from kvmrec.cli.main import main

sys.exit(main())
