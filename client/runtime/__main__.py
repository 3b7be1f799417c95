"""`python -m client.runtime`: a site's node (see node.py)."""

import sys

from client.runtime.node import main

sys.exit(main())
