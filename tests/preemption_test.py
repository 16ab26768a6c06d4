"""SIGTERM against train.py as users run it: answered during tracing and
inside a loop call, the checkpoint kept intact and resumable."""

import glob
import os
import signal
import subprocess
import sys
import threading
import time

import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What preempted VMs get (GCE / TPU VMs: about 30 s); the behaviour tested.
ANSWER_S = 10
# One loop call far longer than any test: only a stop inside it can end it.
LONG_LOOP = ['--config.num_train_steps=100000',
             '--config.train.steps_per_loop=1000',
             '--config.train.log_every=1000',
             '--config.train.checkpoint_every=1000',
             '--config.train.grid_every=1000']


class _Train:
  """train.py with the tiny config in a subprocess; its output read live."""

  def __init__(self, workdir, *args):
    cmd = [sys.executable, os.path.join(REPO, 'train.py'),
           f'--workdir={workdir}', '--config=' + os.path.join(
               REPO, 'bigbigan_tf', 'configs', 'tiny.py'), *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
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
      time.sleep(0.1)
    raise AssertionError(f'{text!r} not logged:\n' + self.output()[-3000:])

  def signal_and_wait(self, sig):
    """Sends `sig`; returns (exit code, seconds until the process ended)."""
    sent = time.time()
    self.proc.send_signal(sig)
    try:
      code = self.proc.wait(timeout=120)
    finally:
      self.proc.kill()
    self._reader.join(timeout=10)
    return code, time.time() - sent

  def output(self):
    return ''.join(self.lines)


def _checkpoint_steps(workdir):
  paths = glob.glob(os.path.join(workdir, 'checkpoints', 'ckpt-*.index'))
  return sorted(int(p.split('ckpt-')[1].split('.')[0]) for p in paths)


def _read_all(workdir, step):
  """Reads every tensor of ckpt-STEP (fails on a truncated or torn one)."""
  reader = tf.train.load_checkpoint(
      os.path.join(workdir, 'checkpoints', f'ckpt-{step}'))
  names = list(reader.get_variable_to_shape_map())
  for name in names:
    reader.get_tensor(name)
  return reader, len(names)


class PreemptionTest(tf.test.TestCase):

  def test_sigterm_while_tracing_then_inside_a_long_loop_call(self):
    # One workdir, two runs (each trace of the tiny step costs ~20 s): a
    # SIGTERM during the first trace, then a resume and a SIGTERM inside a
    # 1000-step loop call.
    workdir = self.create_tempdir().full_path
    run = _Train(workdir, *LONG_LOOP)
    run.wait_for('tracing and compiling the loop')
    code, seconds = run.signal_and_wait(signal.SIGTERM)
    output = run.output()
    self.assertEqual(code, 128 + 15, output[-3000:])
    self.assertLess(seconds, ANSWER_S, output[-3000:])
    self.assertIn('nothing new to save', output)
    self.assertNotIn('compiled and running', output)
    self.assertEqual(_checkpoint_steps(workdir), [0])
    _, n = _read_all(workdir, 0)
    self.assertGreater(n, 100)

    # The kept step-0 checkpoint restores; then a stop inside the loop call.
    run = _Train(workdir, *LONG_LOOP)
    run.wait_for('The training loop is compiled and running')
    time.sleep(1)  # several steps into the 1000-step call
    code, seconds = run.signal_and_wait(signal.SIGTERM)
    output = run.output()
    self.assertIn('Resumed from', output)
    self.assertEqual(code, 128 + 15, output[-3000:])
    self.assertLess(seconds, ANSWER_S, output[-3000:])
    self.assertIn('Received SIGTERM: saved', output)
    steps = _checkpoint_steps(workdir)
    self.assertGreater(steps[-1], 0)
    reader, _ = _read_all(workdir, steps[-1])
    self.assertEqual(reader.get_tensor('step/.ATTRIBUTES/VARIABLE_VALUE'),
                     steps[-1])


if __name__ == '__main__':
  tf.test.main()
