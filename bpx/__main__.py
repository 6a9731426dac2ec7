import sys

from bpx.cli import main

sys.exit(main())
