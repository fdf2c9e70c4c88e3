"""`python -m helium.cli` is `helium`."""

import sys

from helium.cli import main

sys.exit(main())
