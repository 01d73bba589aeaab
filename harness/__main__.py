"""``python -m ssl_bench.harness`` is ``bench``."""

import sys

from ssl_bench.harness.cli import main

sys.exit(main())
