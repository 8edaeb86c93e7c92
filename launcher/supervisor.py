"""`python -m launcher.supervisor SWEEP_DIR`: the local executor under the name it started with.

Sweeps already running were started as this module, and a supervisor started by hand, a
script or an older `launch` may still use the name; launcher/local/supervisor.py is the code.
"""

import sys

from launcher.local.supervisor import main

if __name__ == "__main__":
    sys.exit(main())
