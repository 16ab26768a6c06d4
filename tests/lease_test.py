"""The workdir lease's 'file' mode (gs:// and shared file systems) on a local disk.

Short expiries (2-3 s). Contention runs holders in threads with every write
delayed beyond any settle time, and again with renames turned into copy +
delete (as on GCS); stalls are a heartbeat blocked mid-renewal in-process,
and a real SIGSTOP/SIGCONT of a holding process (slow tier).
"""

import errno
import json
import os
import random
import re
import signal
import threading
import time
from unittest import mock

import pytest
import tensorflow as tf

from bigbigan_tf import files
from bigbigan_tf import lease
from bigbigan_tf import write_faults
import testing


def _contend(directory, n=4, expiry_s=3.0):
  """`n` threads start `hold` at once; returns (holders, refusals)."""
  start, done = threading.Barrier(n), threading.Barrier(n)
  held, refused = [], []

  def run():
    start.wait()
    try:
      with lease.hold(directory, mode='file', expiry_s=expiry_s) as h:
        held.append(h)
        done.wait()  # hold until every contender has decided
        h.check()
    except lease.LeaseHeldError as e:
      refused.append(str(e))
      done.wait()

  threads = [threading.Thread(target=run) for _ in range(n)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  return held, refused


def _slow_write(real, seconds=0.6, written=None):
  def write_atomic(path, content):
    if written is not None:
      written.append(os.path.basename(path))
    # Longer than the old 0.3 s settle time, before and after the write.
    time.sleep(random.uniform(0, seconds))
    out = real(path, content)
    time.sleep(random.uniform(0, seconds))
    return out
  return write_atomic


def _copy_then_delete(src, dst, overwrite=False):
  """GCS's rename: the destination is written (here in two halves, readable
  half-done) and the source deleted afterwards."""
  del overwrite
  with open(src, 'rb') as f:
    data = f.read()
  with open(dst, 'wb') as f:
    f.write(data[:len(data) // 2])
    f.flush()
    time.sleep(0.1)
    f.write(data[len(data) // 2:])
  time.sleep(0.1)
  os.remove(src)


class FileLeaseTest(tf.test.TestCase):

  def test_simultaneous_starts_with_slow_writes_one_holds(self):
    directory = self.create_tempdir().full_path
    written = []
    with mock.patch.object(files, 'write_atomic',
                           _slow_write(files.write_atomic, written=written)):
      for _ in range(2):
        held, refused = _contend(directory)
        self.assertLen(held, 1, refused)
        self.assertLen(refused, 3)
        # Several contended for real (wrote tickets), not just the first.
        self.assertGreater(len({n for n in written
                                if n.startswith('ticket-')}), 1)
        del written[:]
        for text in refused:
          self.assertRegex(text, r'is in use by another training run \(pid '
                           rf'{os.getpid()} on host .*its lease expires at')
    self.assertEqual(os.listdir(os.path.join(directory, 'lease')), [])

  def test_simultaneous_starts_on_a_copy_and_delete_store_one_holds(self):
    directory = self.create_tempdir().full_path
    written = []
    with mock.patch.object(files, 'write_atomic',
                           _slow_write(files.write_atomic, 0.3, written)), \
        mock.patch.object(tf.io.gfile, 'rename', _copy_then_delete):
      held, refused = _contend(directory)
    self.assertLen(held, 1, refused)
    self.assertLen(refused, 3)
    self.assertGreater(len({n for n in written if n.startswith('ticket-')}),
                       1)

  def test_a_stalled_holder_loses_to_its_successor_and_stops(self):
    directory = self.create_tempdir().full_path
    real = files.write_atomic
    gate, stalled = threading.Event(), threading.Event()
    a_token = []

    def write_atomic(path, content):
      if a_token and a_token[0] in path and os.path.basename(
          path).startswith('ticket-'):
        stalled.set()
        gate.wait()  # A's VM is paused mid-renewal
      return real(path, content)

    lost = []
    with mock.patch.object(files, 'write_atomic', write_atomic):
      with lease.hold(directory, mode='file', expiry_s=2,
                      on_lost=lost.append) as a:
        a_token.append(a.info['token'])
        self.assertTrue(stalled.wait(10))
        time.sleep(2.3)  # past A's expiry and the margin
        with lease.hold(directory, mode='file', expiry_s=2) as b:
          self.assertGreater(b.path, a.path)  # a higher ticket number
          gate.set()  # A wakes: its late renewal lands, then it gives up
          deadline = time.time() + 10
          while not lost and time.time() < deadline:
            time.sleep(0.05)
          self.assertLen(lost, 1)
          self.assertRegex(
              str(lost[0]), rf'^lost the lease on {re.escape(directory)} to '
              rf'pid {os.getpid()} on host .*, started .*: this run\'s '
              r'renewals stopped for \d+ s \(lease expiry 2 s\); it wrote '
              r'nothing after that\.$')
          with self.assertRaises(lease.LeaseLostError):
            a.check()
          time.sleep(2)  # B renews twice over A's late write
          b.check()
          names = os.listdir(os.path.join(directory, 'lease'))
          self.assertEqual(names, [os.path.basename(b.path)])
    self.assertLen(lost, 1)  # on_lost once

  def test_a_killed_runs_expired_claims_do_not_block(self):
    directory = self.create_tempdir().full_path
    lease_dir = os.path.join(directory, 'lease')
    os.makedirs(lease_dir)
    dead = {'host': 'h', 'pid': 1, 'start': 0, 'what': 'training run',
            'expires': time.time() - 1}
    for name in ('ticket-000000000007-' + 'a' * 32 + '.json',
                 'choosing-' + 'b' * 32 + '.json'):
      with open(os.path.join(lease_dir, name), 'w') as f:
        json.dump(dead, f)
    with open(os.path.join(lease_dir, 'ticket-000000000005-' + 'c' * 32 +
                           '.json'), 'w') as f:
      f.write('{"half-cop')  # unreadable and old: judged by its mtime
    os.utime(f.name, (time.time() - 60, time.time() - 60))
    # A writer killed between write_atomic's write and its rename.
    with open(os.path.join(lease_dir, 'ticket-000000000006-' + 'd' * 32 +
                           '.json.tmp-' + 'e' * 32), 'w') as f:
      f.write('{}')
    os.utime(f.name, (time.time() - 60, time.time() - 60))
    with self.assertLogs(level='WARNING') as logs:
      with lease.hold(directory, mode='file', expiry_s=3) as h:
        # Numbers only grow, expired ones counted.
        self.assertStartsWith(os.path.basename(h.path), 'ticket-000000000008-')
        self.assertEqual(os.listdir(lease_dir), [os.path.basename(h.path)])
    self.assertRegex('\n'.join(logs.output),
                     'Taking over the expired lease of pid 1 on host h')

  def test_renewal_failures_are_retried_and_too_many_lose_the_lease(self):
    directory = self.create_tempdir().full_path
    real, failures = files.write_atomic, []

    def write_atomic(path, content):
      if failures and failures[0] > 0:
        failures[0] -= 1
        raise OSError(errno.EIO, os.strerror(errno.EIO), path)
      return real(path, content)

    lost = []
    with mock.patch.object(files, 'write_atomic', write_atomic):
      with lease.hold(directory, mode='file', expiry_s=3,
                      on_lost=lost.append) as h:
        first = h.expires
        failures.append(1)  # the next renewal fails, the one after works
        time.sleep(2.6)
        h.check()
        self.assertGreater(h.expires, first)
        self.assertEqual(failures, [0])
        failures[0] = 1000  # the store is gone
        time.sleep(3.5)
        self.assertLen(lost, 1)
        self.assertIn('(it expired; no new holder yet): this run\'s renewals '
                      'stopped for', str(lost[0]))
        with self.assertRaises(lease.LeaseLostError):
          h.check()

  def test_lock_and_file_modes_exclude_each_other(self):
    directory = self.create_tempdir().full_path
    with lease.hold(directory, mode='lock'):
      with self.assertRaises(lease.LeaseHeldError):
        with lease.hold(directory, mode='file', expiry_s=3):
          pass
    self.assertEqual(os.listdir(os.path.join(directory, 'lease')), [])
    with lease.hold(directory, mode='file', expiry_s=3, what='evaluator'):
      with self.assertRaisesRegex(
          lease.LeaseHeldError, rf'^{re.escape(directory)} is in use by '
          r'another evaluator \(.*\)\. Wait for it to finish or stop it\.$'):
        with lease.hold(directory, mode='lock', what='evaluator'):
          pass

  def test_an_old_style_lease_file_refuses_until_it_expires(self):
    directory = self.create_tempdir().full_path
    with open(os.path.join(directory, lease.LEASE_FILENAME), 'w') as f:
      json.dump({'host': 'h', 'pid': 3, 'start': 0,
                 'expires': time.time() + 60}, f)
    with self.assertRaisesRegex(lease.LeaseHeldError, 'pid 3 on host h'):
      with lease.hold(directory, mode='file', expiry_s=3):
        pass

  def test_flock_without_locks_auto_falls_back_and_lock_says_what_to_do(self):
    import fcntl  # pylint: disable=g-import-not-at-top
    directory = self.create_tempdir().full_path

    def no_locks(fd, op):
      raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    with mock.patch.object(fcntl, 'flock', no_locks):
      with self.assertLogs(level='WARNING') as logs:
        with lease.hold(directory, mode='auto', expiry_s=3) as h:
          self.assertEqual(h.mode, 'file')
          self.assertLen(os.listdir(os.path.join(directory, 'lease')), 1)
      self.assertRegex('\n'.join(logs.output),
                       r'No OS locks on .* \(flock: No locks available\): '
                       'using the lease file')
      with self.assertRaisesRegex(
          lease.LeaseError, r'no usable OS locks \(flock: No locks '
          r'available\)\. Use the lease file instead: '
          '--config.train.lease=file'):
        with lease.hold(directory, mode='lock'):
          pass
    self.assertEqual(lease.resolve_mode('gs://b/w', 'auto'),
                     ('file', 'gs:// has no OS locks'))


class TrainingChecksTheLeaseTest(tf.test.TestCase):
  """train_lib asks the lease before each write (not only the heartbeat)."""

  def test_a_lost_lease_stops_the_next_save(self):
    from bigbigan_tf import train_lib  # pylint: disable=g-import-not-at-top
    workdir = os.path.join(self.get_temp_dir(), 'w')
    config = testing.tiny_config(**{
        'train.lease': 'file', 'train.lease_expiry_s': 30,
        'train.checkpoint_every': 1, 'train.log_every': 1})
    with config.unlocked():
      config.num_train_steps = 2
    first = os.path.join(workdir, 'checkpoints', 'ckpt-0.index')
    real_now = lease._now  # pylint: disable=protected-access

    def now():
      # Once step 0 is saved, the clock jumps past the expiry (a stall),
      # before the heartbeat's next beat (every 10 s) can tell.
      return real_now() + (1000 if os.path.exists(first) else 0)

    lost = []
    with mock.patch.object(lease, '_now', now):
      with self.assertRaisesRegex(lease.LeaseLostError, 'lost the lease'):
        train_lib.train_and_evaluate(config, workdir, on_lost=lost.append)
    names = os.listdir(os.path.join(workdir, 'checkpoints'))
    self.assertIn('ckpt-0.index', names)
    self.assertFalse([n for n in names if n.startswith('ckpt-1')], names)


class WriteFaultsTest(tf.test.TestCase):

  def test_a_read_permission_error_is_not_a_write(self):
    read = tf.errors.PermissionDeniedError(
        None, None, 'Error executing an HTTP request: HTTP response code 403 '
        'with body ... when reading gs://b/tensorflow_datasets/mnist/3.0.1/'
        'mnist-train.tfrecord-00000-of-00001 (shard 2/3)')
    self.assertIsNone(write_faults.describe(read))
    self.assertIsNone(write_faults.message(read, 'gs://b/w'))
    self.assertIsNone(write_faults.describe(
        OSError(errno.EACCES, os.strerror(errno.EACCES), '/data/x.png')))
    # The same error from a write names the path written, never "2/3".
    with self.assertRaises(write_faults.WriteFailed) as caught:
      with write_faults.writing('gs://b/w/checkpoints'):
        raise read
    self.assertEqual(write_faults.describe(caught.exception),
                     ('gs://b/w/checkpoints', 'Permission denied'))

  def test_quota_and_rate_limit_errors_say_retry_or_raise_quota(self):
    error = tf.errors.ResourceExhaustedError(
        None, None, 'Error executing an HTTP request: HTTP response code 429 '
        'with body \'{"error": {"code": 429, "errors": [{"reason": '
        '"rateLimitExceeded"}]}}\' when uploading gs://b/w/train/events 2/3')
    self.assertIsNone(write_faults.describe(error))  # not known as a write
    with self.assertRaises(write_faults.WriteFailed) as caught:
      with write_faults.writing('gs://b/w/train'):
        raise error
    self.assertEqual(
        write_faults.message(caught.exception, 'gs://b/w'),
        'cannot write gs://b/w/train: quota or rate limit exceeded (HTTP '
        '429). No checkpoint was written yet. Fix the cause (wait a few '
        'minutes, or raise the storage quota of the project that owns '
        'gs://b/w), then re-run the same command to resume.')
    # Memory is not storage.
    with self.assertRaises(tf.errors.ResourceExhaustedError):
      with write_faults.writing('gs://b/w/train'):
        raise tf.errors.ResourceExhaustedError(None, None, 'OOM when '
                                               'allocating tensor')


_HOLDER = r'''
import os, sys, time
from bigbigan_tf import lease
directory, out = sys.argv[1], sys.argv[2]
def on_lost(error):
  print(f'error: {error}', file=sys.stderr, flush=True)
  os._exit(2)
try:
  with lease.hold(directory, mode='file', expiry_s=2, on_lost=on_lost) as h:
    print('held', flush=True)
    for i in range(10**6):  # a "run" writing a file every 50 ms
      h.check()
      with open(os.path.join(out, f'{i:07d}'), 'w'):
        pass
      time.sleep(0.05)
except lease.LeaseLostError as e:  # as train.py: when the main thread knows first
  on_lost(e)
'''


@pytest.mark.slow
class StallTest(tf.test.TestCase):

  def test_sigstopped_holder_resumes_exits_2_and_writes_nothing_more(self):
    directory = self.create_tempdir().full_path
    out = self.create_tempdir().full_path
    a = testing.LiveRun(directory, out, code=_HOLDER)
    try:
      a.wait_for('held', timeout=120)
      time.sleep(0.5)
      a.proc.send_signal(signal.SIGSTOP)
      time.sleep(2.5)  # past its expiry and the margin
      with lease.hold(directory, mode='file', expiry_s=2) as b:
        taken = time.time()
        written = set(os.listdir(out))
        a.proc.send_signal(signal.SIGCONT)
        self.assertEqual(a.wait(timeout=30), 2, a.output())
        errors = [l for l in a.lines if l.startswith('error: ')]
        self.assertLen(errors, 1, a.output())
        self.assertRegex(errors[0], rf'^error: lost the lease on '
                         rf'{re.escape(directory)} to pid {os.getpid()} ')
        new = set(os.listdir(out)) - written
        self.assertFalse([n for n in new if os.path.getmtime(
            os.path.join(out, n)) > taken], new)
        b.check()
    finally:
      a.proc.kill()


if __name__ == '__main__':
  tf.test.main()
