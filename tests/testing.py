"""Helpers shared by the tests (imported as `testing`; tests/ is on sys.path)."""

import json
import os
import subprocess
import sys
import textwrap

from bigbigan_tf import train_lib
from bigbigan_tf.configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, timeout: float = 120) -> dict:
  """Runs `code` in a fresh Python; returns its last stdout line as JSON.

  Logical CPU devices can only be configured before TensorFlow initialises,
  which in this pytest process has long happened. The code must print one
  JSON object as its last line of stdout; it is returned.
  """
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
      [sys.executable, '-c', textwrap.dedent(code)], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=timeout, check=False)
  if result.returncode != 0:
    raise AssertionError(f'subprocess failed ({result.returncode}):\n'
                         f'{result.stderr[-4000:]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


def train_tiny(workdir: str, *, steps: int = 2) -> dict:
  """A few-step run of the tiny config (offline digits) in `workdir`."""
  config = tiny.get_config()
  with config.unlocked():
    config.num_train_steps = steps
  return train_lib.train_and_evaluate(config, workdir)
