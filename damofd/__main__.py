import sys

from damofd.cli.main import main

sys.exit(main())
