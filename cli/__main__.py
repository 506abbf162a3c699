"""`python -m cli ARGS`: the `quhao` command with this interpreter."""

import sys

from cli.main import main

sys.exit(main())
