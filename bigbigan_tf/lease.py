"""One writer per workdir: the lease train.py's chief holds for a whole run.

A second trainer on a workdir in use would interleave its checkpoints and
summaries with the first's. `hold` refuses it with `LeaseHeldError` before it
writes anything, naming the holder (host, pid, start time).

Two kinds of lease, both in W/lease.json (the holder's host, pid, start and,
for the second kind, expiry):
- local file systems: an OS lock (fcntl.flock) on that file. The kernel drops
  it when the holding process dies, even by SIGKILL, so a dead run never
  blocks the next one.
- gs:// and other remote file systems (no OS locks): the file itself is the
  lease. A heartbeat thread renews its expiry every third of
  `config.train.lease_expiry_s`; a holder that died stops renewing, and the
  lease is free once its expiry has passed. The refusal says when that is.

Readers (export.py, eval/) take no lease.
"""

import contextlib
import datetime
import json
import os
import socket
import threading
import time
from typing import Iterator, Optional
import uuid

from absl import logging
import tensorflow as tf

from bigbigan_tf import files

LEASE_FILENAME = 'lease.json'
MODES = ('auto', 'lock', 'file')


class LeaseHeldError(RuntimeError):
  """Another live run holds the workdir's lease."""


def _is_remote(path: str) -> bool:
  return '://' in path


def _when(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds).astimezone().strftime(
      '%Y-%m-%d %H:%M:%S %Z')


def _holder_text(info: dict) -> str:
  return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, "
          f"started {_when(info['start']) if 'start' in info else '?'}")


def _refusal(workdir: str, info: dict, expires: Optional[float],
             what: str = 'training run') -> str:
  until = (f'; its lease expires at {_when(expires)} unless renewed'
           if expires is not None else '')
  return (f'--workdir={workdir} is in use by another {what} '
          f'({_holder_text(info)}{until}). Wait for it to finish, stop that '
          'run, or pass another --workdir.')


def _read(path: str) -> dict:
  try:
    with tf.io.gfile.GFile(path) as f:
      info = json.load(f)
    return info if isinstance(info, dict) else {}
  except (tf.errors.NotFoundError, ValueError, OSError):
    return {}


@contextlib.contextmanager
def hold(workdir: str, *, expiry_s: float = 300.0, mode: str = 'auto',
         what: str = 'training run') -> Iterator[dict]:
  """Holds the workdir's lease while the `with` block runs.

  Args:
    workdir: the run's workdir (created if missing).
    expiry_s: lease-file mode: how long a lease lasts unless renewed.
    mode: 'lock' (fcntl.flock, local paths), 'file' (lease file with a
      heartbeat, for remote file systems), or 'auto' (= 'file' for paths with
      '://', else 'lock').
    what: who holds it, for messages ('training run', 'evaluator').

  Yields:
    This run's holder info (host, pid, start[, expires]).

  Raises:
    LeaseHeldError: another live run holds the lease; nothing was written.
  """
  if mode not in MODES:
    raise ValueError(f'lease mode {mode!r}: use one of {MODES}')
  if mode == 'auto':
    mode = 'file' if _is_remote(workdir) else 'lock'
  info = {'host': socket.gethostname(), 'pid': os.getpid(),
          'start': time.time()}
  path = os.path.join(workdir, LEASE_FILENAME)
  if mode == 'lock':
    with _locked(workdir, path, info, what):
      yield info
  else:
    with _leased(workdir, path, info, expiry_s, what):
      yield info


@contextlib.contextmanager
def _locked(workdir: str, path: str, info: dict, what: str
            ) -> Iterator[None]:
  import fcntl  # pylint: disable=g-import-not-at-top
  if os.path.isdir(workdir):
    # A busy workdir exists: test the lock without creating anything.
    try:
      probe = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
      probe = None
    if probe is not None:
      try:
        fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
      except BlockingIOError:
        raise LeaseHeldError(_refusal(workdir, _read(path), None, what)) from None
      finally:
        os.close(probe)
  os.makedirs(workdir, exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      # Lost a race with another starting run.
      raise LeaseHeldError(_refusal(workdir, _read(path), None, what)) from None
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + '\n').encode())
    logging.info('Holding the lock on %s (released when this process ends).',
                 path)
    yield
  finally:
    # Closing the descriptor releases the lock; the file stays (removing it
    # could let two runs lock two different files).
    os.close(fd)


@contextlib.contextmanager
def _leased(workdir: str, path: str, info: dict, expiry_s: float,
            what: str) -> Iterator[None]:
  current = _read(path)
  now = time.time()
  if current.get('expires', 0) > now:
    raise LeaseHeldError(_refusal(workdir, current, current['expires'], what))
  if current:
    logging.warning('Taking over the expired lease %s of %s.', path,
                    _holder_text(current))
  info = dict(info, token=uuid.uuid4().hex, expires=now + expiry_s)
  files.write_atomic(path, json.dumps(info) + '\n')
  # Remote stores offer no compare-and-swap: two runs starting at the same
  # moment both write; the one whose write landed last keeps the lease.
  time.sleep(min(1.0, expiry_s / 10))
  winner = _read(path)
  if winner.get('token') != info['token']:
    raise LeaseHeldError(_refusal(workdir, winner, winner.get('expires'), what))
  logging.info('Holding the lease %s (expires %s, renewed every %.0f s).',
               path, _when(info['expires']), expiry_s / 3)
  stop = threading.Event()

  def heartbeat():
    while not stop.wait(expiry_s / 3):
      try:
        files.write_atomic(path, json.dumps(
            dict(info, expires=time.time() + expiry_s)) + '\n')
      except (tf.errors.OpError, OSError) as e:
        logging.warning('Could not renew the lease %s (%s); retrying.',
                        path, e)

  thread = threading.Thread(target=heartbeat, name='lease_heartbeat',
                            daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()
    if _read(path).get('token') == info['token']:
      tf.io.gfile.remove(path)
