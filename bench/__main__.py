"""``python -m bench`` (``make bench``)."""

import sys

from bench.runner import main

sys.exit(main())
