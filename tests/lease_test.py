"""The workdir lease: flock on local disks, compare-and-swap on gs://.

Lock mode runs on this machine's disk (flock's failure, ENOLCK, is simulated:
no local file system here lacks locks). gcs mode runs against fake-gcs-server
through tests/gcs_emulator.py, whose front injects delays and logs every
request: contenders in threads, a heartbeat stalled by a jumped clock, a
lease overwritten behind its holder, holders in subprocesses SIGKILLed or
SIGSTOPped, and train.py itself stalled past its expiry (slow tier).
"""

import errno
import json
import os
import random
import re
import signal
import textwrap
import threading
import time
from unittest import mock
import uuid

import pytest
import tensorflow as tf

from bigbigan_tf import lease
from bigbigan_tf import write_faults
import testing


def _listing(directory):
  return sorted(os.listdir(directory))


class LockLeaseTest(tf.test.TestCase):
  """Lock mode (local paths): flock on W/lease.json."""

  def test_second_holder_refused_and_holder_of(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'w')
    self.assertIsNone(lease.holder_of(workdir))
    self.assertFalse(os.path.exists(workdir))  # holder_of creates nothing
    with lease.hold(workdir, mode='lock') as holder:
      info = holder.info
      self.assertEqual(holder.mode, 'lock')
      holder.check()
      holder.verify()  # the kernel holds it: nothing to ask
      self.assertEqual(lease.holder_of(workdir)['pid'], os.getpid())
      before = _listing(workdir)
      # flock locks of two opens conflict, even in one process.
      with self.assertRaisesRegex(
          lease.LeaseHeldError,
          rf'^--workdir={re.escape(workdir)} is in use by another training '
          rf'run \(pid {info["pid"]} on host .*, started .*\)\. Wait for it '
          r'to finish, stop that run, or pass another --workdir\.$'):
        with lease.hold(workdir, mode='auto'):
          pass
      with self.assertRaisesRegex(
          lease.LeaseHeldError, rf'^{re.escape(workdir)} is in use by '
          r'another evaluator \(pid .*\)\. Wait for it to finish or stop '
          r'it\.$'):
        with lease.hold(workdir, mode='file', what='evaluator'):
          pass
      self.assertEqual(_listing(workdir), before)
    self.assertIsNone(lease.holder_of(workdir))
    with lease.hold(workdir):  # released: the next holder gets it
      pass

  def test_no_usable_flock_refuses_in_one_line(self):
    import fcntl  # pylint: disable=g-import-not-at-top
    workdir = self.create_tempdir().full_path
    with lease.hold(workdir):  # leaves lease.json, for holder_of's probe
      pass

    def no_locks(fd, op):
      del fd, op
      raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    with mock.patch.object(fcntl, 'flock', no_locks):
      for mode in ('auto', 'lock', 'file'):
        with self.assertRaisesRegex(
            lease.LeaseError,
            rf'^{re.escape(workdir)}: flock on {re.escape(workdir)}/'
            r'lease\.json failed \(ENOLCK: No locks available\): this file '
            r'system gives no usable locks, so nothing stops a second run '
            r'from writing it too\. Use a local workdir .* or gs://\.$'):
          with lease.hold(workdir, mode=mode):
            pass
      with self.assertRaises(lease.LeaseError):
        lease.holder_of(workdir)
    self.assertEqual(_listing(workdir), ['lease.json'])

  def test_modes_resolve_by_scheme(self):
    self.assertEqual(
        lease.resolve_mode('gs://b/w', 'auto'),
        ('gcs', "gs://: compare-and-swap on gs://b/w/lease.json's "
         'generation'))
    self.assertEqual(lease.resolve_mode('/d/w', 'auto')[0], 'lock')
    mode, why = lease.resolve_mode('gs://b/w/', 'file')
    self.assertEqual(mode, 'gcs')
    self.assertStartsWith(why, "'file', an older config's value, means the "
                          "store's own lock; gs://")
    self.assertEqual(lease.resolve_mode('/d/w', 'file')[0], 'lock')
    with self.assertRaisesRegex(
        lease.LeaseError, r'^s3://b/w: no mutual exclusion is available on '
        r's3:// .* Use a gs:// or a local workdir\.$'):
      lease.resolve_mode('s3://b/w', 'auto')
    with self.assertRaisesRegex(lease.LeaseError, "'lock' needs a local"):
      lease.resolve_mode('gs://b/w', 'lock')
    with self.assertRaisesRegex(lease.LeaseError, "'gcs' needs a gs://"):
      lease.resolve_mode('/d/w', 'gcs')
    with self.assertRaises(ValueError):
      lease.resolve_mode('/d/w', 'tickets')

  def test_a_non_chief_holder_never_raises(self):
    holder = lease.Holder({}, 'none')
    holder.check()
    holder.verify()


@pytest.mark.slow  # a holder in a subprocess
class LockLeaseProcessTest(tf.test.TestCase):

  def test_sigkilled_holders_lock_is_freed(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'w')
    holder = testing.LiveRun(code=textwrap.dedent(f'''
        import time
        from bigbigan_tf import lease
        with lease.hold({workdir!r}):
          print('held', flush=True)
          time.sleep(600)
        '''))
    try:
      holder.wait_for('held', timeout=60)
      self.assertEqual(lease.holder_of(workdir)['pid'], holder.proc.pid)
      with self.assertRaisesRegex(lease.LeaseHeldError,
                                  f'pid {holder.proc.pid} '):
        with lease.hold(workdir):
          pass
    finally:
      holder.proc.kill()
      holder.wait()
    self.assertIsNone(lease.holder_of(workdir))
    with lease.hold(workdir):
      pass


# ---------------------------------------------------------------- gs://


def _emulator():
  """The shared emulator with its environment applied (else SkipTest)."""
  import gcs_emulator  # pylint: disable=g-import-not-at-top
  emu = gcs_emulator.require_emulator()
  emu.apply()
  return emu


def _bucket():
  from google.cloud import storage  # pylint: disable=g-import-not-at-top
  return storage.Client().bucket(_emulator().bucket)


def _put(directory, info):
  """Writes `directory`'s lease object as another run would have."""
  blob = _bucket().blob(directory.split('/', 3)[3] + '/lease.json')
  blob.upload_from_string(json.dumps(info))
  return blob.generation


def _foreign(**changes):
  """A lease of a run on another host."""
  now = time.time()
  return dict({'host': 'elsewhere', 'pid': 7, 'start': now - 60,
               'what': 'training run', 'token': uuid.uuid4().hex,
               'nonce': uuid.uuid4().hex, 'renewed': now, 'expires': now + 60,
               'boot_id': 'b', 'pid_ns': 'p', 'proc_start': '1'}, **changes)


def _lease_requests(emu):
  return [r for r in emu.requests() if 'lease.json' in r.path or
          'uploadType=multipart' in r.path]


def _wait(condition, timeout=20.0):
  deadline = time.time() + timeout
  while not condition():
    if time.time() > deadline:
      raise AssertionError('timed out')
    time.sleep(0.02)


class _EmulatorTestCase(tf.test.TestCase):
  """A test on the emulator: its environment applied around each test (the
  front refuses every other host, which other tests may not expect)."""

  def setUp(self):
    super().setUp()
    self.emu = _emulator()
    self.emu.clear()
    self.addCleanup(self.emu.unapply)
    self.addCleanup(self.emu.clear)
    self.dir = self.emu.url(f'lease-{uuid.uuid4().hex[:8]}/run')


@pytest.mark.slow  # the emulator
class GcsLeaseTest(_EmulatorTestCase):
  """gcs mode on the emulator, in this process."""

  def _contend(self, n=8, delays=None):
    """`n` threads start `hold` at once; returns (holders, refusals)."""
    start, done = threading.Barrier(n), threading.Barrier(n)
    held, refused, failed = [], [], []

    def run():
      start.wait()
      try:
        with lease.hold(self.dir, expiry_s=30) as h:
          held.append(h)
          done.wait()  # hold until every contender has decided
          h.verify()
      except lease.LeaseHeldError as e:
        refused.append(str(e))
        done.wait()
      except Exception as e:  # pylint: disable=broad-except
        failed.append(repr(e))
        done.abort()

    if delays:
      delays()
    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
      t.start()
    for t in threads:
      t.join(timeout=120)
    self.emu.clear()
    self.assertEqual(failed, [])
    return held, refused

  def test_eight_contenders_one_holder_each_round(self):
    for _ in range(50):
      held, refused = self._contend()
      self.assertLen(held, 1, refused)
      self.assertLen(refused, 7)
    self.assertRegex(refused[0], r'is in use by another training run \(pid '
                     rf'{os.getpid()} on host .*its lease expires at')
    self.assertIsNone(lease.holder_of(self.dir))  # released

  def test_delayed_lease_requests_still_one_holder(self):
    rng = random.Random(0)

    def delays():
      # Some of the reads or the writes held back, so that contenders
      # judge and write in every order.
      for _ in range(3):
        self.emu.delay(rng.uniform(0.01, 0.3),
                       method=rng.choice(['GET', 'POST']),
                       times=rng.randint(1, 6))

    for _ in range(25):
      held, refused = self._contend(delays=delays)
      self.assertLen(held, 1, refused)
      self.assertLen(refused, 7)

  def test_expired_lease_taken_over_at_once_live_one_refused(self):
    _put(self.dir, _foreign(expires=time.time() - 6))  # expiry 30: S = 3
    started = time.time()
    with self.assertLogs(level='WARNING') as logs:
      with lease.hold(self.dir, expiry_s=30) as h:
        self.assertLess(time.time() - started, 5)
        self.assertEqual(lease.holder_of(self.dir)['token'], h.info['token'])
    self.assertRegex('\n'.join(logs.output), 'Taking over the expired lease '
                     r'of pid 7 on host elsewhere, .* \(gs://.*/run/'
                     r'lease\.json\)')
    # A live lease of another host, dead or not, blocks until its expiry.
    _put(self.dir, _foreign())
    self.assertEqual(lease.holder_of(self.dir)['host'], 'elsewhere')
    with self.assertRaisesRegex(
        lease.LeaseHeldError, r'^--workdir=gs://\S+ is in use by another '
        r'training run \(pid 7 on host elsewhere, started .*; its lease '
        r'expires at .* unless renewed\)\. Wait for it to finish, stop that '
        r'run, or pass another --workdir\.$'):
      with lease.hold(self.dir, expiry_s=30):
        pass
    # A lease that is not JSON is stale only once old enough.
    _bucket().blob(self.dir.split('/', 3)[3] + '/lease.json'
                   ).upload_from_string(b'{"half')
    with self.assertRaises(lease.LeaseHeldError):
      with lease.hold(self.dir, expiry_s=30):
        pass

  def test_stalled_heartbeat_loses_without_io(self):
    lost = []
    real_now = lease._now  # pylint: disable=protected-access
    with lease.hold(self.dir, expiry_s=3, on_lost=lost.append) as a:
      a.verify()
      self.emu.clear_log()
      # The process sleeps past its expiry (SIGSTOP, a paused VM): its next
      # beat (every second) must write nothing, and no check may pass.
      with mock.patch.object(lease, '_now', lambda: real_now() + 100):
        _wait(lambda: lost)
        with self.assertRaises(lease.LeaseLostError):
          a.check()
        with self.assertRaises(lease.LeaseLostError):
          a.verify()
      self.assertEqual(_lease_requests(self.emu), [])
      self.assertRegex(
          str(lost[0]), rf'^lost the lease on {re.escape(self.dir)}: this run '
          r'last renewed it \d+ s ago \(lease expiry 3 s\); a checkpoint save '
          r'already under way when this run stalled may still have landed '
          r'\(it started no new write after the lease was lost\)\.$')
      time.sleep(1.5)  # no beat after the loss
    self.assertEqual(_lease_requests(self.emu), [])  # no release either
    self.assertLen(lost, 1)
    # Its lease, not renewed, expires and is taken over.
    _wait(lambda: lease.holder_of(self.dir, expiry_s=3) is None)
    with lease.hold(self.dir, expiry_s=3):
      pass

  def test_overwritten_lease_is_lost_at_verify_and_heartbeat(self):
    lost = []
    with lease.hold(self.dir, expiry_s=30, on_lost=lost.append) as a:
      a.check()
      # Another run took it (e.g. a host whose clock ran ahead): the next
      # verify() sees the generation change; check() cannot know yet.
      _put(self.dir, _foreign())
      a.check()
      self.emu.clear_log()
      with self.assertRaisesRegex(
          lease.LeaseLostError, rf'^lost the lease on {re.escape(self.dir)} '
          r'to pid 7 on host elsewhere, started .*: this run last renewed'):
        a.verify()
      self.assertLen(lost, 1)
      with self.assertRaises(lease.LeaseLostError):
        a.check()
      self.emu.clear_log()
    self.assertEqual(_lease_requests(self.emu), [])  # released nothing
    self.assertEqual(lease.holder_of(self.dir)['host'], 'elsewhere')
    # The heartbeat's conditional renewal fails the same way.
    lost = []
    with lease.hold(self.dir + '2', expiry_s=3, on_lost=lost.append) as b:
      _put(self.dir + '2', _foreign())
      _wait(lambda: lost)
      self.assertRegex(str(lost[0]), 'to pid 7 on host elsewhere')
      with self.assertRaises(lease.LeaseLostError):
        b.verify()
    self.assertLen(lost, 1)

  def test_renewal_keeps_it_and_release_frees_it(self):
    with lease.hold(self.dir, expiry_s=3) as h:
      first = (h.generation, h.expires)
      _wait(lambda: h.generation != first[0], timeout=5)  # a beat: 1 s
      self.assertGreater(h.expires, first[1])
      h.verify()
      self.assertEqual(lease.holder_of(self.dir)['generation'], h.generation)
      # A write whose answer was lost, retried: the retry's precondition
      # fails on this holder's own write, which the token tells.
      self.emu.inject(503, method='POST', times=1)
      time.sleep(1.2)
      h.verify()
    self.assertIsNone(lease.holder_of(self.dir))


_HOLDER = r'''
import os, sys, time
from bigbigan_tf import lease
directory, out, expiry = sys.argv[1], sys.argv[2], float(sys.argv[3])
def on_lost(error):
  print(f'error: {error}', file=sys.stderr, flush=True)
  os._exit(2)
try:
  with lease.hold(directory, expiry_s=expiry, on_lost=on_lost) as h:
    print('held', flush=True)
    for i in range(10**6):  # a "run" writing a file every 50 ms
      (h.verify if i % 10 == 0 else h.check)()
      with open(os.path.join(out, f'{i:07d}'), 'w'):
        pass
      time.sleep(0.05)
except lease.LeaseLostError as e:  # as train.py: the main thread knew first
  on_lost(e)
'''


@pytest.mark.slow  # holders in subprocesses
class GcsLeaseProcessTest(_EmulatorTestCase):

  def test_killed_holder_is_taken_over_at_once_on_its_host(self):
    out = self.create_tempdir().full_path
    a = testing.LiveRun(self.dir, out, '300', code=_HOLDER)
    try:
      a.wait_for('held', timeout=60)
      self.assertEqual(lease.holder_of(self.dir)['pid'], a.proc.pid)
      with self.assertRaises(lease.LeaseHeldError):
        with lease.hold(self.dir):
          pass
    finally:
      a.proc.kill()
      a.wait()
    # Its 300 s lease is unexpired, but its process is gone from this host.
    started = time.time()
    self.assertIsNone(lease.holder_of(self.dir))
    with self.assertLogs(level='WARNING') as logs:
      with lease.hold(self.dir):
        self.assertLess(time.time() - started, 5)
    self.assertRegex('\n'.join(logs.output), rf'Taking over the lease of pid '
                     rf'{a.proc.pid} on host .*, a process of this machine '
                     'that has ended')

  def test_sigstopped_holder_resumes_exits_2_and_writes_nothing_more(self):
    out = self.create_tempdir().full_path
    a = testing.LiveRun(self.dir, out, '3', code=_HOLDER)
    try:
      a.wait_for('held', timeout=60)
      time.sleep(0.5)
      a.proc.send_signal(signal.SIGSTOP)
      # Stopped, not dead: it holds until its expiry (+ margin), then B
      # takes over.
      with self.assertRaises(lease.LeaseHeldError):
        with lease.hold(self.dir, expiry_s=3):
          pass
      _wait(lambda: lease.holder_of(self.dir, expiry_s=3) is None)
      with lease.hold(self.dir, expiry_s=3) as b:
        b.verify()
      written = set(os.listdir(out))
      self.emu.clear_log()
      continued = time.time()
      a.proc.send_signal(signal.SIGCONT)
      self.assertEqual(a.wait(timeout=30), 2, a.output())
      errors = a.error_lines()
      self.assertLen(errors, 1, a.output())
      self.assertRegex(errors[0], rf'^error: lost the lease on '
                       rf'{re.escape(self.dir)}: this run last renewed it '
                       r'\d+ s ago \(lease expiry 3 s\); a checkpoint save '
                       'already under way when this run stalled may still '
                       'have landed')
      # Woken past its expiry, it did no lease I/O and wrote no new file.
      self.assertEqual(_lease_requests(self.emu), [])
      new = set(os.listdir(out)) - written
      self.assertFalse([n for n in new if os.path.getmtime(
          os.path.join(out, n)) > continued], new)
    finally:
      a.proc.kill()


@pytest.mark.slow  # training on gs://
class TrainingVerifiesTheLeaseTest(_EmulatorTestCase):
  """train_lib asks the store before each checkpoint save (gcs mode)."""

  def test_a_lease_taken_behind_the_run_stops_its_first_save(self):
    from bigbigan_tf import train_lib  # pylint: disable=g-import-not-at-top
    workdir = self.dir
    config = testing.tiny_config(**{'train.lease_expiry_s': 300})
    stop = threading.Event()

    def take_over_once_held():
      # Another run takes the lease (a host whose clock runs ahead, say)
      # while this one sets up; its heartbeat (every 100 s) cannot tell in
      # time, only verify() before the step-0 save.
      while not stop.is_set():
        if lease.holder_of(workdir) is not None:
          _put(workdir, _foreign())
          return
        time.sleep(0.02)

    taker = threading.Thread(target=take_over_once_held)
    taker.start()
    lost = []
    try:
      with self.assertRaisesRegex(lease.LeaseLostError,
                                  'to pid 7 on host elsewhere'):
        train_lib.train_and_evaluate(config, workdir, on_lost=lost.append)
    finally:
      stop.set()
      taker.join()
    self.assertLen(lost, 1)
    self.assertEqual(
        [b.name for b in _bucket().list_blobs(
            prefix=workdir.split('/', 3)[3] + '/checkpoints/ckpt-')], [])


@pytest.mark.slow  # two train.py on gs://
class TrainStalledPastItsLeaseTest(_EmulatorTestCase):
  """train.py SIGSTOPped past its lease: its successor trains; woken, the
  first exits 2 and nothing of its own lands in the workdir."""

  def test_stalled_trainer_is_fenced(self):
    workdir = self.dir
    bucket = _bucket()
    prefix = workdir.split('/', 3)[3] + '/'

    def objects():
      return {b.name: b.generation for b in bucket.list_blobs(prefix=prefix)}

    a = testing.train_process(workdir, '--config.train.lease_expiry_s=6')
    try:
      a.wait_for('train.lease auto -> gcs (gs://: compare-and-swap on '
                 f"{workdir}/lease.json's generation)", timeout=300)
      # Stopped while it builds its networks (config.json written, the
      # step-0 checkpoint not yet): no write of its own under way.
      a.wait_for('device: ', timeout=300)
      a.proc.send_signal(signal.SIGSTOP)
      _wait(lambda: lease.holder_of(workdir, expiry_s=6) is None, timeout=30)
      # The successor: its step-0 checkpoint and grids, then done.
      b = testing.train_process(workdir, '--config.train.lease_expiry_s=6',
                                '--config.num_train_steps=0')
      self.assertEqual(b.wait(timeout=300), 0, b.output()[-3000:])
      before = objects()
      self.assertIn(prefix + 'checkpoints/ckpt-0.index', before)
      a.proc.send_signal(signal.SIGCONT)
      self.assertEqual(a.wait(timeout=120), 2, a.output()[-3000:])
      self.assertLen(a.error_lines(), 1, a.output()[-3000:])
      self.assertRegex(a.error_lines()[0], rf'^error: lost the lease on '
                       rf'{re.escape(workdir)}: this run last renewed it \d+ '
                       r's ago \(lease expiry 6 s\); a checkpoint save already '
                       'under way when this run stalled may still have '
                       r'landed \(it started no new write after the lease '
                       r'was lost\)\.$')
      # Nothing written, replaced or deleted since the continue.
      self.assertEqual(objects(), before)
    finally:
      a.proc.kill()


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
    self.assertEqual(
        write_faults.message(caught.exception, 'gs://b/w',
                             last_checkpoint='gs://b/w/checkpoints/ckpt-4'),
        'cannot write gs://b/w/train: quota or rate limit exceeded (HTTP '
        '429). The last good checkpoint, gs://b/w/checkpoints/ckpt-4, is '
        'kept. Fix the cause (wait a few minutes, or raise the storage quota '
        'of the project that owns gs://b/w), then re-run the same command to '
        'resume.')
    # Memory is not storage.
    with self.assertRaises(tf.errors.ResourceExhaustedError):
      with write_faults.writing('gs://b/w/train'):
        raise tf.errors.ResourceExhaustedError(None, None, 'OOM when '
                                               'allocating tensor')


if __name__ == '__main__':
  tf.test.main()
