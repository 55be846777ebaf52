"""`python -m cluster.batch --input IN --output OUT`: see `cluster.batch.entrypoint`."""

import sys

from cluster.batch.entrypoint import main

sys.exit(main())
