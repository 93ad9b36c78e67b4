"""``python -m jaxgen ...``: the same as the ``jaxgen`` command."""

import sys

from jaxgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
