"""`python -m chain serve --data-dir DIR [--port N]`: the embedded dev chain as a JSON-RPC node."""

import sys

from chain.server import main

sys.exit(main())
