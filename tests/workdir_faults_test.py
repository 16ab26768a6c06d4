"""One writer per workdir, write failures and set-up signals, as users meet them.

train.py runs in subprocesses (exit codes, signals and locks are a process's);
the reading of write errors is tested in-process (the lease itself:
tests/lease_test.py).
"""

import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile

import pytest
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf import write_faults
import testing

TINY = testing.TINY
# What a preempted VM gets (about 30 s); the behaviour tested.
ANSWER_S = 10
LONG_LOOP = testing.LONG_LOOP
# train.py's main as `python train.py` runs it, with one write failing as on
# a full disk (the path in argv[1]'s basename): the real error, raised where
# files.write_atomic would write it.
_INJECTED = r'''
import errno, os, sys
from absl import app
from bigbigan_tf import files
import train
failing = sys.argv.pop(1)
real = files.write_atomic
def write_atomic(path, content):
  if os.path.basename(path) == failing:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
  return real(path, content)
files.write_atomic = write_atomic
sys.argv[0] = train.__file__
app.run(train.main, flags_parser=train._parse_flags)
'''


def _listing(root):
  return sorted(os.path.relpath(os.path.join(d, n), root)
                for d, dirs, names in os.walk(root) for n in dirs + names)


def _check_nothing_half_written(test, workdir):
  with open(os.path.join(workdir, 'config.json')) as f:
    json.load(f)
  test.assertFalse(glob.glob(os.path.join(workdir, '**', '*.tmp-*'),
                             recursive=True))
  test.assertFalse(glob.glob(os.path.join(workdir, 'checkpoints', '*_temp')))
  for index in glob.glob(os.path.join(workdir, 'checkpoints', '*.index')):
    test.assertIsNone(checkpoints.checkpoint_problem(index[:-len('.index')]))


class WriteFaultsTest(tf.test.TestCase):
  """write_faults on real errors: /dev/full is a device that is always full."""

  def test_real_full_device_errors_are_named(self):
    if not os.path.exists('/dev/full'):
      self.skipTest('no /dev/full on this system')
    try:
      with open('/dev/full', 'w') as f:
        f.write('x')
    except OSError as e:
      # Python's write errors name no file.
      self.assertEqual(write_faults.describe(e),
                       ('a file (the error names none)',
                        os.strerror(errno.ENOSPC)))
    try:
      with write_faults.writing('/dev/full'):
        with tf.io.gfile.GFile('/dev/full', 'w') as f:
          f.write('x' * 100_000)
      self.fail('writing /dev/full did not fail')
    except write_faults.WriteFailed as e:
      self.assertIsInstance(e.__cause__, tf.errors.OpError)
      # The path is the operation's, not parsed from TensorFlow's message.
      self.assertEqual(write_faults.describe(e),
                       ('/dev/full', os.strerror(errno.ENOSPC)))
    memory = tf.errors.ResourceExhaustedError(None, None, 'OOM when '
                                              'allocating tensor')
    self.assertIsNone(write_faults.describe(memory))
    workdir = self.create_tempdir().full_path
    message = write_faults.message(
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT),
                os.path.join(workdir, 'config.json')), workdir)
    self.assertEqual(
        message, f'cannot write {workdir}/config.json: Disk quota exceeded. '
        'No checkpoint was written yet. Fix the cause (free space in '
        f'{workdir}), then re-run the same command to resume.')


@pytest.mark.slow
class WorkdirFaultsTest(tf.test.TestCase):
  """train.py on one workdir: a live run, a second trainer, a SIGKILL, a
  write failure, a SIGTERM during set-up; in that order."""

  def test_busy_workdir_kill_write_failure_and_set_up_signal(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'w')
    first = testing.train_process(workdir, *LONG_LOOP)
    try:
      first.wait_for('tracing and compiling the loop')  # ckpt-0 is saved
      before = _listing(workdir)
      second = testing.train_process(workdir, *LONG_LOOP)
      self.assertEqual(second.wait(), 2, second.output()[-3000:])
      self.assertLen(second.error_lines(), 1, second.output()[-3000:])
      self.assertRegex(second.error_lines()[0],
                       rf'^error: --workdir={workdir} is in use by another '
                       rf'training run \(pid {first.proc.pid} on host .*, '
                       r'started .*\)\. Wait for it to finish, stop that '
                       'run, or pass another --workdir.$')
      self.assertEqual(_listing(workdir), before)  # Nothing written.
      self.assertIsNone(first.proc.poll())  # Not disturbed.
    finally:
      first.proc.kill()  # SIGKILL: no cleanup, the lock dies with it.
      first.wait()
    # As a SIGKILL (or a full disk) during a save leaves it.
    temp = os.path.join(workdir, 'checkpoints', 'ckpt-7_temp')
    os.makedirs(temp)
    with open(os.path.join(temp, 'part-00000-of-00001.index'), 'w') as f:
      f.write('partial')

    # The next run proceeds, and a full disk at hardware.json is one line.
    failing = testing.LiveRun('hardware.json', f'--workdir={workdir}',
                              f'--config={TINY}', *LONG_LOOP, code=_INJECTED)
    self.assertEqual(failing.wait(), 2, failing.output()[-3000:])
    self.assertIn(f'Removed {temp}, the unfinished part of a checkpoint save',
                  failing.output())
    ckpt0 = os.path.join(workdir, 'checkpoints', 'ckpt-0')
    self.assertEqual(failing.error_lines(), [
        f'error: cannot write {workdir}/hardware.json: No space left on '
        f'device. The last good checkpoint, {ckpt0}, is kept. Fix the cause '
        f'(free space in {workdir}), then re-run the same command to '
        'resume.\n'])
    self.assertFalse(os.path.exists(temp))

    # SIGTERM during set-up (after the lease, before the loop).
    last = testing.train_process(workdir, *LONG_LOOP)
    last.wait_for('Holding the lock')
    code, seconds = last.signal_and_wait(signal.SIGTERM)
    output = last.output()
    self.assertEqual(code, 128 + 15, output[-3000:])
    self.assertLess(seconds, ANSWER_S, output[-3000:])
    self.assertIn('Received SIGTERM during set-up, before training started: '
                  'nothing half-written. Re-run the same command to start or '
                  'resume.', output)
    self.assertNotIn('Traceback', output)
    _check_nothing_half_written(self, workdir)
    self.assertEqual(checkpoints.latest_readable(
        os.path.join(workdir, 'checkpoints')), ckpt0)


@pytest.mark.slow
class FullDiskTest(tf.test.TestCase):
  """A real full file system: a 7 MB tmpfs; the tiny config's checkpoints are
  2.8 MB, so the third (ckpt-4) does not fit."""

  def test_full_disk_stops_with_the_last_good_checkpoint_then_resumes(self):
    if os.geteuid() != 0:
      self.skipTest('mounting a small tmpfs needs root')
    mount = tempfile.mkdtemp()
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=7m', 'tmpfs',
                             mount], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
      shutil.rmtree(mount, ignore_errors=True)
      self.skipTest(f'cannot mount a tmpfs here: {result.stderr.strip()}')
    try:
      workdir = os.path.join(mount, 'w')
      run = testing.train_process(workdir, '--config.num_train_steps=100',
                   '--config.train.log_every=100',
                   '--config.train.grid_every=100')
      self.assertEqual(run.wait(), 2, run.output()[-3000:])
      self.assertLen(run.error_lines(), 1, run.output()[-3000:])
      line = run.error_lines()[0]
      last = checkpoints.latest_readable(os.path.join(workdir, 'checkpoints'))
      self.assertIsNotNone(last)
      self.assertRegex(line, rf'^error: cannot write {workdir}/\S+: No space '
                       'left on device. ')
      self.assertIn(f'The last good checkpoint, {last}, is kept. Fix the '
                    f'cause (free space in {workdir}), then re-run the same '
                    'command to resume.', line)
      self.assertNotIn('Traceback', run.output())
      # An unfinished save is left; space freed, the next start removes it
      # (as train.py does, tested above) and resumes from the last good one.
      temps = glob.glob(os.path.join(workdir, 'checkpoints', '*_temp'))
      self.assertNotEmpty(temps)
      subprocess.run(['mount', '-o', 'remount,size=64m', mount], check=True)
      self.assertEqual(checkpoints.remove_stale_temps(
          os.path.join(workdir, 'checkpoints')), temps)
      _check_nothing_half_written(self, workdir)
    finally:
      subprocess.run(['umount', '-l', mount], check=False)
      shutil.rmtree(mount, ignore_errors=True)


if __name__ == '__main__':
  tf.test.main()
