"""SIGTERM against train.py as users run it: answered during tracing and
inside a loop call, the checkpoint kept intact and resumable."""

import glob
import os
import signal
import time

import pytest
import tensorflow as tf

import testing

# What preempted VMs get (GCE / TPU VMs: about 30 s); the behaviour tested.
ANSWER_S = 10
# One loop call far longer than any test: only a stop inside it can end it.
LONG_LOOP = testing.LONG_LOOP


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


@pytest.mark.slow  # train.py subprocesses and signals
class PreemptionTest(tf.test.TestCase):

  def test_sigterm_while_tracing_then_inside_a_long_loop_call(self):
    # One workdir, two runs (each trace of the tiny step costs ~20 s): a
    # SIGTERM during the first trace, then a resume and a SIGTERM inside a
    # 1000-step loop call.
    workdir = self.create_tempdir().full_path
    run = testing.train_process(workdir, *LONG_LOOP)
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
    run = testing.train_process(workdir, *LONG_LOOP)
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
