"""`python -m fusedrnn bench ...`: the same command line as the `fusedrnn` script."""

import sys

from .cli import main

sys.exit(main())
