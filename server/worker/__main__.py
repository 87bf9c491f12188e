"""`python -m server.worker [task|merge]`."""

import sys

from server.worker.main import main

sys.exit(main())
