"""One writer per directory: the lease a trainer (or an evaluator) holds.

A second trainer on a workdir in use would interleave its checkpoints and
summaries with the first's. `hold` refuses it with `LeaseHeldError` before it
writes anything, naming the holder (host, pid, start time). Two modes:

- 'lock': an OS lock (fcntl.flock) on DIR/lease.json, for a local disk. The
  kernel drops it when its process dies, even by SIGKILL.
- 'file': tickets in DIR/lease/, for gs:// and any file system whose locks
  are missing or local to one host (NFS, gcsfuse, sshfs). Such stores have no
  compare-and-swap, so contenders run a bakery protocol by listing the
  directory (docs/scaling.md, "Workdir lease"):
    choosing-TOKEN.json        "I am picking a number" (short-lived);
    ticket-NNNNNNNNNNNN-TOKEN.json   a claim with number N;
  each JSON with host, pid, start, token, what and expires. The lowest
  unexpired (N, TOKEN) holds. The holder's heartbeat renews its ticket every
  third of `expiry_s`, first checking that it still holds it (fencing); a
  holder that lost it (stalled past its expiry, partitioned) stops writing
  and is told through `Holder.check()` and the `on_lost` callback.
Expiry is judged with a margin S = min(5 s, expiry_s / 10): others take a
claim as expired only at expires + S, its holder gives up at expires - S, so
host clocks may disagree by up to S.
"""

import contextlib
import datetime
import errno
import json
import os
import re
import socket
import threading
import time
from typing import Callable, Iterator, NamedTuple, Optional
import uuid

from absl import logging
import tensorflow as tf

from bigbigan_tf import files

LEASE_FILENAME = 'lease.json'  # lock mode (and the old lease-file mode)
LEASE_DIRNAME = 'lease'  # file mode's tickets
MODES = ('auto', 'lock', 'file')
_TICKET = re.compile(r'^ticket-(\d{12})-([0-9a-f]{32})\.json$')
_CHOOSING = re.compile(r'^choosing-([0-9a-f]{32})\.json$')
# flock's "held by another" errnos; any other error means no usable locks.
_HELD_ERRNOS = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)
_IO_ERRORS = (tf.errors.OpError, OSError)
# The clock; tests replace it to emulate skew or a stall.
_now = time.time


class LeaseError(RuntimeError):
  """The lease cannot be held (e.g. 'lock' mode without OS locks)."""


class LeaseHeldError(LeaseError):
  """Another live run holds the lease; nothing was written."""


class LeaseLostError(LeaseError):
  """This holder lost its lease (it stalled or could not renew in time)."""


def margin(expiry_s: float) -> float:
  """S, the clock skew between hosts that the file lease tolerates."""
  return min(5.0, expiry_s / 10)


def resolve_mode(directory: str, mode: str) -> tuple[str, str]:
  """('lock' or 'file', why) for `mode` on `directory`."""
  if mode not in MODES:
    raise ValueError(f'lease mode {mode!r}: use one of {MODES}')
  if mode != 'auto':
    return mode, 'as asked'
  if '://' in directory:
    return 'file', f'{directory.split("://")[0]}:// has no OS locks'
  return 'lock', 'a local path: an OS lock, dropped when the process dies'


def _when(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds).astimezone().strftime(
      '%Y-%m-%d %H:%M:%S %Z')


def _holder_text(info: dict) -> str:
  return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, "
          f"started {_when(info['start']) if 'start' in info else '?'}")


def _refusal(directory: str, info: dict, expires: Optional[float],
             what: str) -> str:
  until = (f'; its lease expires at {_when(expires)} unless renewed'
           if expires is not None else '')
  if what == 'training run':
    return (f'--workdir={directory} is in use by another {what} '
            f'({_holder_text(info)}{until}). Wait for it to finish, stop '
            'that run, or pass another --workdir.')
  return (f'{directory} is in use by another {what} ({_holder_text(info)}'
          f'{until}). Wait for it to finish or stop it.')


def _read(path: str) -> dict:
  try:
    with tf.io.gfile.GFile(path) as f:
      info = json.load(f)
    return info if isinstance(info, dict) else {}
  except (ValueError, *_IO_ERRORS):
    return {}


def _remove(path: str) -> None:
  try:
    tf.io.gfile.remove(path)
  except tf.errors.NotFoundError:
    pass


class Holder:
  """What `hold` yields: this holder's info, its mode and `check()`."""

  def __init__(self, info: dict, mode: str):
    self.info, self.mode = info, mode

  def check(self) -> None:
    """Raises LeaseLostError if the lease is lost; call before each write.

    No I/O while the lease is held: the local clock against this holder's
    expiry, and the heartbeat's verdict. (Lock mode: never raises.)
    """


@contextlib.contextmanager
def hold(directory: str, *, expiry_s: float = 300.0, mode: str = 'auto',
         what: str = 'training run',
         on_lost: Optional[Callable[[LeaseLostError], None]] = None
         ) -> Iterator[Holder]:
  """Holds `directory`'s lease while the `with` block runs.

  Args:
    directory: the directory to own (created if missing): a workdir, or
      WORKDIR/eval for an evaluator.
    expiry_s: file mode: how long a claim lasts unless renewed.
    mode: 'lock', 'file', or 'auto' (= 'file' for paths with '://', else
      'lock', falling back to 'file' where flock is unsupported).
    what: who holds it, for messages ('training run', 'evaluator').
    on_lost: file mode: called once, from the heartbeat thread, when the
      lease is found lost (e.g. print and exit). `check()` raises either way.

  Yields:
    This run's `Holder`.

  Raises:
    LeaseHeldError: another live holder has it; nothing was written.
    LeaseError: mode 'lock' where the file system has no usable flock.
  """
  asked = mode
  mode, _ = resolve_mode(directory, mode)
  info = {'host': socket.gethostname(), 'pid': os.getpid(),
          'start': _now(), 'what': what}
  if mode == 'lock':
    try:
      with _locked(directory, info, what, expiry_s):
        yield Holder(info, 'lock')
      return
    except _NoLocks as e:
      if asked == 'lock':
        raise LeaseError(
            f'{directory}: this file system has no usable OS locks (flock: '
            f'{e.reason}). Use the lease file instead: '
            "--config.train.lease=file (lease.hold(mode='file')).") from None
      logging.warning('No OS locks on %s (flock: %s): using the lease file '
                      '%s/ instead.', directory, e.reason, LEASE_DIRNAME)
  holder = _TicketHolder(directory, info, expiry_s, what, on_lost)
  holder.acquire()
  try:
    yield holder
  finally:
    holder.release()


class _NoLocks(Exception):
  """flock failed other than "held" (ENOLCK, ENOSYS, EOPNOTSUPP, ...)."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


def _flock(fd: int, flags: int, directory: str, info: dict, what: str,
           path: str) -> None:
  import fcntl  # pylint: disable=g-import-not-at-top
  try:
    fcntl.flock(fd, flags | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno in _HELD_ERRNOS:
      raise LeaseHeldError(_refusal(directory, _read(path), None,
                                    what)) from None
    raise _NoLocks(os.strerror(e.errno) if e.errno else str(e)) from None


def _probe_lock(directory: str, info: dict, what: str) -> None:
  """Raises LeaseHeldError if a live run holds the OS lock on `directory`.

  Creates nothing: no lock file, no lock.
  """
  import fcntl  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, LEASE_FILENAME)
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:  # no lock file (or no directory): nobody holds the lock
    return
  try:
    _flock(fd, fcntl.LOCK_SH, directory, info, what, path)
  finally:
    os.close(fd)


@contextlib.contextmanager
def _locked(directory: str, info: dict, what: str, expiry_s: float
            ) -> Iterator[None]:
  import fcntl  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, LEASE_FILENAME)
  # A busy directory exists: test the lock without creating anything.
  _probe_lock(directory, info, what)
  os.makedirs(directory, exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    _flock(fd, fcntl.LOCK_EX, directory, info, what, path)
    # A run holding the lease file on this directory (file mode) excludes us
    # too: we hold the lock before looking, it wrote its ticket before
    # probing the lock, so one of the two sees the other.
    held = _Tickets(os.path.join(directory, LEASE_DIRNAME), expiry_s
                    ).unexpired_tickets()
    if held:
      raise LeaseHeldError(_refusal(directory, held[0].info,
                                    held[0].info.get('expires'), what))
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + '\n').encode())
    logging.info('Holding the lock on %s (released when this process ends).',
                 path)
    yield
  finally:
    # Closing the descriptor releases the lock; the file stays (removing it
    # could let two runs lock two different files).
    os.close(fd)


class _Entry(NamedTuple):
  kind: str  # 'ticket' or 'choosing'
  key: tuple  # (n, token); n = -1 for choosing
  token: str
  path: str
  info: dict  # {} if unreadable (e.g. half-copied)
  expired: bool


class _Tickets:
  """Listing and judging DIR/lease/ (file mode)."""

  def __init__(self, lease_dir: str, expiry_s: float):
    self.dir, self.expiry_s = lease_dir, expiry_s
    self.margin = margin(expiry_s)

  def scan(self) -> list[_Entry]:
    try:
      names = tf.io.gfile.listdir(self.dir)
    except tf.errors.NotFoundError:
      return []
    entries = []
    for name in names:
      ticket, choosing = _TICKET.match(name), _CHOOSING.match(name)
      if not (ticket or choosing):
        continue  # write_atomic's temporary files, and others'
      path = os.path.join(self.dir, name)
      info = _read(path)
      now = _now()
      if isinstance(info.get('expires'), (int, float)):
        expired = now > info['expires'] + self.margin
      else:
        # Unreadable (a copy under way on a copy+delete store): unexpired
        # while young.
        try:
          mtime = tf.io.gfile.stat(path).mtime_nsec / 1e9
        except tf.errors.NotFoundError:
          continue  # deleted since the listing
        expired = now > mtime + self.expiry_s + self.margin
        info = {}
      if ticket:
        token = ticket.group(2)
        entries.append(_Entry('ticket', (int(ticket.group(1)), token), token,
                              path, info, expired))
      else:
        token = choosing.group(1)
        entries.append(_Entry('choosing', (-1, token), token, path, info,
                              expired))
    return entries

  def remove_stale_temps(self) -> None:
    """Deletes write_atomic's temporaries that killed writers left."""
    for name in tf.io.gfile.listdir(self.dir):
      path = os.path.join(self.dir, name)
      with contextlib.suppress(tf.errors.NotFoundError):
        if '.json.tmp-' in name and _now() > tf.io.gfile.stat(
            path).mtime_nsec / 1e9 + self.expiry_s + self.margin:
          _remove(path)

  def unexpired_tickets(self, entries=None) -> list[_Entry]:
    entries = self.scan() if entries is None else entries
    return sorted((e for e in entries if e.kind == 'ticket' and not e.expired),
                  key=lambda e: e.key)


class _TicketHolder(Holder):
  """File mode: acquire, heartbeat with fencing, release."""

  def __init__(self, directory, info, expiry_s, what, on_lost):
    token = uuid.uuid4().hex
    super().__init__(dict(info, token=token), 'file')
    self.directory, self.expiry_s, self.what = directory, expiry_s, what
    self.on_lost, self.token = on_lost, token
    self.tickets = _Tickets(os.path.join(directory, LEASE_DIRNAME), expiry_s)
    self.margin = self.tickets.margin
    self.superseded = set()
    self.path = None  # my ticket
    self.lost = None  # the LeaseLostError, once decided
    self._lost_lock = threading.Lock()
    self._stop = threading.Event()
    self._thread = None

  # ---------------------------------------------------------------- acquire

  def _refuse(self, entry: _Entry) -> LeaseHeldError:
    return LeaseHeldError(_refusal(self.directory, entry.info,
                                   entry.info.get('expires'), self.what))

  def _others(self, entries):
    return [e for e in entries if e.token != self.token]

  def acquire(self) -> None:
    """The bakery protocol; raises LeaseHeldError if another holds it."""
    held = self._others(self.tickets.unexpired_tickets())
    if held:
      raise self._refuse(held[0])  # nothing written
    old = _read(os.path.join(self.directory, LEASE_FILENAME))
    if old.get('expires', 0) + self.margin > _now():
      # A holder of the lease-file mode before DIR/lease/ (one lease.json).
      raise LeaseHeldError(_refusal(self.directory, old, old['expires'],
                                    self.what))
    choosing = os.path.join(self.tickets.dir, f'choosing-{self.token}.json')
    self._write(choosing)
    try:
      numbers = [e.key[0] for e in self.tickets.scan() if e.kind == 'ticket']
      # Expired tickets count too, so numbers only grow.
      n = 1 + max(numbers, default=0)
      self.path = os.path.join(self.tickets.dir,
                               f'ticket-{n:012d}-{self.token}.json')
      self._write(self.path)
    finally:
      _remove(choosing)
    try:
      self._settle()
    except BaseException:
      _remove(self.path)
      raise
    logging.info('Holding the lease %s (ticket %d; expires %s, renewed every '
                 '%.0f s).', self.tickets.dir, n, _when(self.expires),
                 self.expiry_s / 3)
    self._thread = threading.Thread(target=self._heartbeat,
                                    name='lease_heartbeat', daemon=True)
    self._thread.start()

  def _settle(self) -> None:
    # Wait for every contender still choosing (their choice may be lower).
    poll = min(0.5, self.expiry_s / 30)
    while any(e.kind == 'choosing' and not e.expired
              for e in self._others(self.tickets.scan())):
      time.sleep(poll)
    entries = self.tickets.scan()
    held = self.tickets.unexpired_tickets(entries)
    if not held or held[0].token != self.token:
      raise (self._refuse(held[0]) if held else LeaseHeldError(
          f'{self.directory}: this run\'s lease ticket vanished while it '
          'started (another run removed it as expired: are the clocks of '
          'the hosts in sync?). Retry.'))
    if '://' not in self.directory:
      # A run holding the OS lock on this directory ('lock' mode).
      with contextlib.suppress(_NoLocks):
        _probe_lock(self.directory, self.info, self.what)
    for e in self._others(entries):
      if e.expired:
        self.superseded.add(e.token)
        logging.warning('Taking over the expired lease of %s (%s).',
                        _holder_text(e.info), os.path.basename(e.path))
        _remove(e.path)
    self.tickets.remove_stale_temps()

  def _write(self, path: str) -> None:
    now = _now()
    self.expires = now + self.expiry_s
    self.info['expires'] = self.expires
    self.renewed = now
    files.write_atomic(path, json.dumps(self.info) + '\n')

  # -------------------------------------------------------------- heartbeat

  def _heartbeat(self) -> None:
    while not self._stop.wait(self.expiry_s / 3):
      try:
        if self._renew():
          return
      except _IO_ERRORS as e:
        logging.warning('Could not renew the lease %s (%s); retrying.',
                        self.path, e)

  def _renew(self) -> bool:
    """One beat; True once the lease is lost (then on_lost was called)."""
    old_expires = self.expires
    if _now() > old_expires - self.margin:
      return self._lose()
    entries = self.tickets.scan()
    if not any(e.token == self.token and e.kind == 'ticket'
               for e in entries):
      return self._lose(entries)
    for e in self.tickets.unexpired_tickets(entries):
      if e.token == self.token:
        break
      if e.token in self.superseded:
        # A superseded holder's late renewal resurrected its ticket.
        _remove(e.path)
        continue
      return self._lose(entries)
    renewed_at = _now()
    info = dict(self.info, expires=renewed_at + self.expiry_s)
    files.write_atomic(self.path, json.dumps(info) + '\n')
    if _now() > old_expires - self.margin:
      return self._lose()  # completed too late: others may have taken over
    self.info, self.expires, self.renewed = info, info['expires'], renewed_at
    return False

  def _lose(self, entries=None) -> bool:
    error, first = self._declare_lost(entries)
    if first and self.on_lost is not None:
      self.on_lost(error)
    return True

  def _declare_lost(self, entries=None) -> tuple[LeaseLostError, bool]:
    with self._lost_lock:
      if self.lost is not None:
        return self.lost, False
      stalled = _now() - self.renewed
      if entries is None:
        try:
          entries = self.tickets.scan()
        except _IO_ERRORS:
          entries = []
      others = self._others(self.tickets.unexpired_tickets(entries))
      to = (f'to {_holder_text(others[0].info)}' if others and
            others[0].info else '(it expired; no new holder yet)')
      self.lost = LeaseLostError(
          f'lost the lease on {self.directory} {to}: this run\'s renewals '
          f'stopped for {stalled:.0f} s (lease expiry {self.expiry_s:g} s); '
          'it wrote nothing after that.')
      self._stop.set()
      _remove_quietly(self.path)
      return self.lost, True

  def check(self) -> None:
    if self.lost is None and _now() <= self.expires - self.margin:
      return
    raise self._declare_lost()[0]

  def release(self) -> None:
    self._stop.set()
    if self._thread not in (None, threading.current_thread()):
      self._thread.join()
    _remove_quietly(self.path)


def _remove_quietly(path: Optional[str]) -> None:
  # Best effort: the ticket holds this run's token, so no one else's.
  if path:
    try:
      _remove(path)
    except _IO_ERRORS as e:
      logging.warning('Could not remove %s (%s); it expires by itself.',
                      path, e)


def holder_of(directory: str, *, mode: str = 'auto',
              expiry_s: float = 300.0) -> Optional[dict]:
  """The live holder's info of `directory`'s lease, or None; creates nothing.

  Lock mode only (a shared non-blocking probe of the OS lock on
  DIR/lease.json); 'file' mode and gs:// answer None here.
  """
  del expiry_s  # file mode's; not read in lock mode
  if resolve_mode(directory, mode)[0] != 'lock':
    return None
  try:
    _probe_lock(directory, {}, 'training run')
  except LeaseHeldError:
    return _read(os.path.join(directory, LEASE_FILENAME)) or {}
  except _NoLocks:
    return None
  return None
