"""`python -m cli` is the `wac` command."""

import sys

from cli.main import main

sys.exit(main())
