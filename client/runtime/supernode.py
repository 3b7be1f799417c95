"""`python -m client.runtime.supernode ARGS`: Flower's `flower-supernode ARGS` with its fixed waits capped
(flower_io.py, `run_supernode`). The site node (node.py) starts the SuperNode through this."""

import sys

from client.runtime.flower_io import run_supernode

if __name__ == "__main__":
    sys.exit(run_supernode(sys.argv[1:]))
