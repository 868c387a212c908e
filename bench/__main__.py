"""`python -m bench`: the same as the `bench` command (bench/entry.py), node commands included."""

import sys

from bench.entry import main

sys.exit(main())
