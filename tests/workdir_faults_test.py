"""One writer per workdir, write failures and set-up signals, as users meet them.

train.py runs in subprocesses (exit codes, signals and locks are a process's);
the lease itself and the reading of write errors are tested in-process.
"""

import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time

import pytest
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf import lease
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


class LeaseTest(tf.test.TestCase):
  """lease.hold in both modes, without training."""

  @pytest.mark.slow  # a holder in a subprocess
  def test_lock_refuses_while_held_and_dies_with_its_process(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'w')
    with lease.hold(workdir, mode='lock') as holder:
      info = holder.info
      before = _listing(workdir)
      # flock locks of two opens conflict, even in one process.
      with self.assertRaisesRegex(
          lease.LeaseHeldError,
          rf'is in use by another training run \(pid {info["pid"]} on host '
          r'.*, started .*\)\. Wait for it to finish, stop that run, or '
          'pass another --workdir'):
        with lease.hold(workdir, mode='lock'):
          pass
      self.assertEqual(_listing(workdir), before)
    # Released: the next holder gets it.
    with lease.hold(workdir, mode='lock'):
      pass
    # A holder SIGKILLed: the kernel drops its lock.
    holder = testing.LiveRun(code=textwrap.dedent(f'''
        import time
        from bigbigan_tf import lease
        with lease.hold({workdir!r}):
          print('held', flush=True)
          time.sleep(600)
        '''))
    holder.wait_for('held', timeout=120)
    with self.assertRaisesRegex(lease.LeaseHeldError,
                                f'pid {holder.proc.pid} '):
      with lease.hold(workdir):
        pass
    holder.proc.kill()
    holder.wait()
    with lease.hold(workdir):
      pass

  def test_lease_file_heartbeat_expiry_and_release(self):
    # The gs:// mode, on a local path (the protocol: tests/lease_test.py).
    workdir = self.create_tempdir().full_path
    lease_dir = os.path.join(workdir, lease.LEASE_DIRNAME)
    with lease.hold(workdir, mode='file', expiry_s=3) as holder:
      path = holder.path
      self.assertEqual(os.listdir(lease_dir), [os.path.basename(path)])
      with open(path) as f:
        first = json.load(f)
      with self.assertRaisesRegex(lease.LeaseHeldError,
                                  r'its lease expires at .* unless renewed'):
        with lease.hold(workdir, mode='file', expiry_s=3):
          pass
      # The heartbeat renews it (every second here).
      deadline = time.time() + 30
      while time.time() < deadline:
        with open(path) as f:
          renewed = json.load(f)
        if renewed['expires'] > first['expires']:
          break
        time.sleep(0.2)
      self.assertGreater(renewed['expires'], first['expires'])
    self.assertEqual(os.listdir(lease_dir), [])  # Released.
    # A dead holder's ticket (no heartbeat) blocks only until it expires
    # (plus the clock-skew margin, 0.3 s here).
    dead = dict(first, pid=first['pid'] + 1, expires=time.time() + 1.0)
    with open(path, 'w') as f:
      json.dump(dead, f)
    with self.assertRaises(lease.LeaseHeldError):
      with lease.hold(workdir, mode='file', expiry_s=3):
        pass
    time.sleep(1.5)
    with self.assertLogs(level='WARNING') as logs:
      with lease.hold(workdir, mode='file', expiry_s=3):
        pass
    self.assertRegex('\n'.join(logs.output), 'Taking over the expired lease')


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
class LeaseFileTrainingTest(tf.test.TestCase):
  """--config.train.lease=file end to end: a holder SIGSTOPped past its
  expiry loses to its successor, and exits 2 on SIGCONT writing nothing."""

  def test_stalled_trainer_gives_up_while_its_successor_trains(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'w')
    args = ['--config.train.lease=file', '--config.train.lease_expiry_s=3',
            '--config.num_train_steps=100000',
            '--config.train.grid_every=1000'] + [
                f'--config.train.{f}=10' for f in ('steps_per_loop',
                                                   'log_every',
                                                   'checkpoint_every')]
    a = testing.train_process(workdir, *args)
    b = None
    try:
      a.wait_for('step 10/')
      a.proc.send_signal(signal.SIGSTOP)
      time.sleep(3.5)  # past its expiry and the clock-skew margin
      b = testing.train_process(workdir, *args)
      b.wait_for('Holding the lease')
      taken = time.time()
      a.proc.send_signal(signal.SIGCONT)
      self.assertEqual(a.wait(timeout=60), 2, a.output()[-3000:])
      self.assertLen(a.error_lines(), 1, a.output()[-3000:])
      self.assertRegex(a.error_lines()[0], rf'^error: lost the lease on '
                       rf'{workdir} to pid {b.proc.pid} on host .*: this '
                       r"run's renewals stopped for \d+ s \(lease expiry 3 "
                       r's\); it wrote nothing after that\.$')
      # A's summaries (its pid in the name) and any checkpoint: nothing
      # written since the takeover (B is still setting up).
      events = glob.glob(os.path.join(workdir, 'train',
                                      f'*.{a.proc.pid}.*'))
      self.assertNotEmpty(events)
      for path in events + glob.glob(os.path.join(workdir, 'checkpoints',
                                                  'ckpt-*')):
        self.assertLess(os.path.getmtime(path), taken, path)
      b.wait_for('step 20/')  # the successor trains
      self.assertIsNone(b.proc.poll())
    finally:
      for run in (a, b):
        if run is not None:
          run.proc.kill()
          run.wait()


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
