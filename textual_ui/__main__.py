import sys

from textual_ui.cli import main

sys.exit(main())
