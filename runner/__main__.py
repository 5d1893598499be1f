import sys

from runner._cli._main import main

sys.exit(main())
