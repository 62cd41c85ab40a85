"""`python -m cli`: the same as the `tokentree` command."""

import sys

from cli.main import main

sys.exit(main())
