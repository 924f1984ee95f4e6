"""`python -m sync.refcloud --db X --port P --admin-token T`."""

import sys

from sync.refcloud.server import main

sys.exit(main())
