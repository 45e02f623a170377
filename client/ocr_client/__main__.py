"""``python -m ocr_client``: the ``ocr-client`` command."""

import sys

from .cli import main

sys.exit(main())
