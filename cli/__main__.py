"""`python -m cli`: the `sms-relay` console script."""

import sys

from cli.main import main

sys.exit(main())
