import sys

from fedhft.cli import main

sys.exit(main())
