"""`python -m tokentree.cli`: the same as the `tokentree` command."""

import sys

from tokentree.cli.main import main

sys.exit(main())
