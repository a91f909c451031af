"""``python -m fog_appliance`` works like the ``fog-appliance`` console script."""

import sys

from fog_appliance.cli import main

sys.exit(main())
