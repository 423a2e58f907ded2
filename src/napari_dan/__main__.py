"""``python -m napari_dan``: the same command as ``napari-dan``."""

import sys

from .cli import main

sys.exit(main())
