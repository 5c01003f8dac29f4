"""``python -m validation.dmc``: see ``validation.dmc.experiment``."""

import sys

from validation.dmc.experiment import main

if __name__ == "__main__":
    sys.exit(main())
