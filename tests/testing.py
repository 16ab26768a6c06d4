"""Helpers shared by the tests (imported as `testing`; tests/ is on sys.path)."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

from bigbigan_tf import train_lib
from bigbigan_tf.configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, 'bigbigan_tf', 'configs', 'tiny.py')
# One loop call far longer than any test: only a stop inside it can end it.
LONG_LOOP = ['--config.num_train_steps=100000',
             '--config.train.steps_per_loop=1000',
             '--config.train.log_every=1000',
             '--config.train.checkpoint_every=1000',
             '--config.train.grid_every=1000']


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


# ------------------------------------------------------------- subprocesses


class LiveRun:
  """A python process (train.py by default); its output read live.

  stdout and stderr are read together into `lines` as the process writes.
  """

  def __init__(self, *args, script='train.py', code=None):
    cmd = [sys.executable] + (['-c', code] if code else
                              [os.path.join(REPO, script)]) + list(args)
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
    self.proc = subprocess.Popen(cmd, cwd=REPO, env=env,
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    self.lines = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.append(line)

  def wait_for(self, text, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
      if any(text in line for line in self.lines):
        return
      if self.proc.poll() is not None:
        break
      time.sleep(0.05)
    raise AssertionError(f'{text!r} not logged:\n' + self.output()[-3000:])

  def wait(self, timeout=600):
    try:
      code = self.proc.wait(timeout=timeout)
    finally:
      self.proc.kill()
    self._reader.join(timeout=10)
    return code

  def signal_and_wait(self, sig):
    """Sends `sig`; returns (exit code, seconds until the process ended)."""
    sent = time.time()
    self.proc.send_signal(sig)
    code = self.wait(timeout=120)
    return code, time.time() - sent

  def output(self):
    return ''.join(self.lines)

  def error_lines(self):
    return [line for line in self.lines if line.startswith('error: ')]


def train_process(workdir: str, *args) -> LiveRun:
  """train.py with the tiny config in `workdir`, in a subprocess."""
  return LiveRun(f'--workdir={workdir}', f'--config={TINY}', *args)
