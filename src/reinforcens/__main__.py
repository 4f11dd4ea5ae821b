import sys

from reinforcens.cli import main

sys.exit(main())
