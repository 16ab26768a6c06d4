"""pytest set-up shared by all tests."""

import os
import sys

# Quieter TF logs; tests read their own output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# pytest-xdist runs N worker processes: by default each TensorFlow would
# use every core for one op (intra-op threads), N times over-subscribing the
# machine. One core's share per worker instead; read by TensorFlow at start,
# and inherited by the train.py / export.py subprocesses the tests start.
_WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
if _WORKERS > 1:
  os.environ.setdefault('TF_NUM_INTRAOP_THREADS',
                        str(max(1, (os.cpu_count() or 1) // _WORKERS)))

from absl import flags  # pylint: disable=g-import-not-at-top

# absl flags must be parsed before any code reads them (train.py / eval/ entry
# points imported by tests define flags).
flags.FLAGS(sys.argv[:1], known_only=True)
