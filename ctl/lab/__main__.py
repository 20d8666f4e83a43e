"""``python -m ctl.lab``: the warren-lab command line."""
import sys

from .main import main

sys.exit(main())
