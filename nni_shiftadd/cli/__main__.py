"""``python -m nni_shiftadd.cli``: what the ``nni-shiftadd`` script runs (NNI's trial commands use this form)."""
import sys

from . import main

sys.exit(main())
