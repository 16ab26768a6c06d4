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


# ------------------------------------------------------------- in-process


def tiny_config(**overrides):
  """The tiny config with 'section.field' overrides, e.g. optim.d_lr=1e-3."""
  config = tiny.get_config()
  with config.unlocked():
    for key, value in overrides.items():
      section, field = key.split('.')
      config[section][field] = value
  return config


def tiny_batch(config):
  """One training batch of `config`'s data at E's resolution (seed 0)."""
  from bigbigan_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  return next(iter(data_lib.make_dataset(
      config.data, image_size=config.model.encoder_resolution,
      batch_size=config.batch_size, training=True, seed=0)))


def assert_hub_contract(test, signatures, *, z_dim, res, res_e, feat):
  """`signatures` follow DESIGN.md 3.1: names, inputs, shapes, dtypes."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  expected = {
      'generate': ({'z': [None, z_dim]},
                   {'default': [None, res, res, 3],
                    'upsampled': [None, 2 * res, 2 * res, 3]}),
      'encode': ({'x': [None, res_e, res_e, 3]},
                 {'default': [None, z_dim], 'z_mean': [None, z_dim],
                  'z_stdev': [None, z_dim], 'z_sample': [None, z_dim],
                  'avepool_feat': [None, feat],
                  'bn_crelu_feat': [None, 2 * feat]}),
      'discriminate': ({'x': [None, res, res, 3], 'z': [None, z_dim]},
                       {'score_x': [None], 'score_z': [None],
                        'score_xz': [None]}),
      'serving_default': ({'x': [None, res_e, res_e, 3]},
                          {'default': [None, z_dim]}),
  }
  test.assertCountEqual(signatures.keys(), expected)
  for name, (inputs, outputs) in expected.items():
    with test.subTest(signature=name):
      args, kwargs = signatures[name].structured_input_signature
      test.assertEqual(args, ())
      test.assertEqual({k: s.shape.as_list() for k, s in kwargs.items()},
                       inputs)
      out = signatures[name].structured_outputs
      test.assertEqual({k: s.shape.as_list() for k, s in out.items()},
                       outputs)
      test.assertTrue(all(s.dtype == tf.float32
                          for s in list(kwargs.values()) + list(out.values())))


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
