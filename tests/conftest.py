"""pytest set-up shared by all tests."""

import os
import sys

# Quieter TF logs; tests read their own output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags  # pylint: disable=g-import-not-at-top

# absl flags must be parsed before any code reads them (train.py / eval/ entry
# points imported by tests define flags).
flags.FLAGS(sys.argv[:1], known_only=True)
