"""One writer per directory: the lease a trainer (or an evaluator) holds.

A second trainer on a workdir in use would interleave its checkpoints and
summaries with the first's. `hold` refuses it with `LeaseHeldError` before it
writes anything, naming the holder (host, pid, start time). Mutual exclusion
comes only from the store's own primitive (docs/scaling.md, "Workdir lease"):

- 'lock' (local and NFSv4 paths): fcntl.flock on DIR/lease.json. The kernel
  (or the NFSv4 server) drops it when its process dies, even by SIGKILL.
  Where flock fails other than "held" (ENOLCK, ENOSYS, EOPNOTSUPP: NFS
  without server locks, some FUSE mounts), `hold` refuses.
- 'gcs' (gs:// paths): one object DIR/lease.json, written only through
  generation preconditions (google-cloud-storage), as Terraform's GCS backend
  locks its state: acquire = create-if-absent; renew = overwrite if the
  generation is still this run's last write; take over an expired (or
  released, or same-host dead) lease = overwrite if the generation is still
  the one judged. The generation is the fencing token: a failed precondition
  means the lease is another's. A heartbeat renews it every third of
  `expiry_s`; a holder that finds it lost (stalled past its expiry, or
  overwritten) does no more lease I/O and is told through `on_lost`,
  `Holder.check()` and `Holder.verify()`.

'auto' (and 'file', an older config's value) picks 'gcs' on gs:// and 'lock'
on local paths; other schemes (s3://, hdfs://, ...) are refused: no mutual
exclusion is available there.

Expiry is judged with a margin S = min(5 s, expiry_s / 10): others take a
lease as expired only at expires + S, its holder gives up at expires - S, so
host clocks may disagree by up to S.
"""

import contextlib
import datetime
import errno
import json
import os
import socket
import threading
import time
from typing import Callable, Iterator, NamedTuple, Optional
import uuid

from absl import logging

LEASE_FILENAME = 'lease.json'
MODES = ('auto', 'lock', 'gcs', 'file')
# flock's "held by another" errnos; any other error means no usable locks.
_HELD_ERRNOS = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)
# How often acquire re-judges after losing a race to another contender's
# write before it gives up (each loss means the lease changed hands).
_ACQUIRE_ATTEMPTS = 5
# The clock; tests replace it to emulate skew or a stall.
_now = time.time


class LeaseError(RuntimeError):
  """The lease cannot be held (no usable primitive, a store error, ...)."""


class LeaseHeldError(LeaseError):
  """Another live run holds the lease; nothing was written."""


class LeaseLostError(LeaseError):
  """This holder lost its lease (it stalled, or another overwrote it)."""


def margin(expiry_s: float) -> float:
  """S, the clock skew between hosts that the gcs lease tolerates."""
  return min(5.0, expiry_s / 10)


def _scheme(directory: str) -> Optional[str]:
  return directory.split('://', 1)[0] if '://' in directory else None


def lease_path(directory: str) -> str:
  """Where `directory`'s lease lives (a local file or a gs:// object)."""
  return directory.rstrip('/') + '/' + LEASE_FILENAME


def resolve_mode(directory: str, mode: str) -> tuple[str, str]:
  """('lock' or 'gcs', why) for `mode` on `directory`.

  Raises:
    ValueError: `mode` is not one of MODES.
    LeaseError: no mutual exclusion is available on `directory` in `mode`
      (another scheme than gs://, 'lock' on gs://, 'gcs' on a local path).
  """
  if mode not in MODES:
    raise ValueError(f'lease mode {mode!r}: use one of {MODES}')
  scheme = _scheme(directory)
  if mode in ('auto', 'file'):
    if scheme not in (None, 'gs'):
      raise LeaseError(
          f'{directory}: no mutual exclusion is available on {scheme}:// '
          '(this project only uses the lock primitives of local/NFSv4 '
          'directories and of gs://), so a second run could write it too. '
          'Use a gs:// or a local workdir.')
    resolved = 'gcs' if scheme == 'gs' else 'lock'
  else:
    resolved = mode
    if mode == 'lock' and scheme is not None:
      raise LeaseError(f"{directory}: lease mode 'lock' needs a local path "
                       f'(flock); {scheme}:// has none. Use '
                       "--config.train.lease=auto.")
    if mode == 'gcs' and scheme != 'gs':
      raise LeaseError(f"{directory}: lease mode 'gcs' needs a gs:// path. "
                       'Use --config.train.lease=auto.')
  if resolved == 'gcs':
    why = f"gs://: compare-and-swap on {lease_path(directory)}'s generation"
  else:
    why = (f'a local path: flock on {lease_path(directory)}, dropped when '
           'the process dies')
  if mode == 'file':
    why = f"'file', an older config's value, means the store's own lock; {why}"
  return resolved, why


def _when(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds).astimezone().strftime(
      '%Y-%m-%d %H:%M:%S %Z')


def _holder_text(info: dict) -> str:
  start = info.get('start')
  return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, "
          f"started {_when(start) if isinstance(start, (int, float)) else '?'}")


def _refusal(directory: str, info: dict, expires: Optional[float],
             what: str) -> str:
  until = (f'; its lease expires at {_when(expires)} unless renewed'
           if isinstance(expires, (int, float)) else '')
  if what == 'training run':
    return (f'--workdir={directory} is in use by another {what} '
            f'({_holder_text(info)}{until}). Wait for it to finish, stop '
            'that run, or pass another --workdir.')
  return (f'{directory} is in use by another {what} ({_holder_text(info)}'
          f'{until}). Wait for it to finish or stop it.')


# ------------------------------------------------------- this machine's run


def _read_text(path: str) -> Optional[str]:
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return None


def _proc_start(pid: int) -> Optional[str]:
  """The start time of process `pid` (clock ticks since boot), None if gone."""
  stat = _read_text(f'/proc/{pid}/stat')
  if not stat:
    return None
  # Field 22; the command name (field 2) may hold spaces and parentheses.
  return stat.rsplit(')', 1)[-1].split()[19]


def _identity() -> dict:
  """Who this run is: enough for another run on this machine to tell it died.

  The pid namespace is part of it: two containers of one host can share the
  hostname and the boot id while their pids mean different processes.
  """
  pid = os.getpid()
  try:
    pid_ns = os.readlink('/proc/self/ns/pid')
  except OSError:
    pid_ns = None
  return {'host': socket.gethostname(), 'pid': pid, 'start': _now(),
          'boot_id': _read_text('/proc/sys/kernel/random/boot_id'),
          'pid_ns': pid_ns, 'proc_start': _proc_start(pid)}


def _dead_here(info: dict) -> bool:
  """True if `info`'s run was on this machine (same boot) and has ended."""
  me = _identity()
  if not me['boot_id'] or not me['pid_ns'] or any(
      info.get(k) != me[k] for k in ('host', 'boot_id', 'pid_ns')):
    return False
  pid = info.get('pid')
  if not isinstance(pid, int):
    return False
  started = _proc_start(pid)
  # Gone, or the pid now names another process (reused).
  return started is None or started != info.get('proc_start')


# -------------------------------------------------------------- the holders


class Holder:
  """What `hold` yields: this holder's info, its mode, check() and verify().

  The base class is a lease that cannot be lost: lock mode (the kernel holds
  it until the process ends), and the non-chief workers of a multi-worker
  run, which take none.
  """

  def __init__(self, info: dict, mode: str):
    self.info, self.mode = info, mode

  def check(self) -> None:
    """Raises LeaseLostError if the lease is known lost; no I/O.

    Call before each cheap write (summaries, grids): the local clock against
    this holder's expiry, and the heartbeat's verdict.
    """

  def verify(self) -> None:
    """Raises LeaseLostError unless the store still holds this run's lease.

    Call before each checkpoint save: `check()`, then (gcs mode) a metadata
    read of the lease object, whose generation must be this run's last write.
    """


@contextlib.contextmanager
def hold(directory: str, *, expiry_s: float = 300.0, mode: str = 'auto',
         what: str = 'training run',
         on_lost: Optional[Callable[[LeaseLostError], None]] = None
         ) -> Iterator[Holder]:
  """Holds `directory`'s lease while the `with` block runs.

  Args:
    directory: the directory to own (a local one is created if missing): a
      workdir, or WORKDIR/eval for an evaluator.
    expiry_s: gcs mode: how long the lease lasts unless renewed.
    mode: 'auto' (= 'gcs' on gs://, 'lock' on local paths), 'lock', 'gcs',
      or 'file' (an older config's value; = 'auto').
    what: who holds it, for messages ('training run', 'evaluator').
    on_lost: gcs mode: called once when the lease is found lost, by the
      heartbeat thread or by the `check()`/`verify()` that found it (e.g.
      print and exit). `check()` and `verify()` raise either way.

  Yields:
    This run's `Holder`.

  Raises:
    LeaseHeldError: another live holder has it; nothing was written.
    LeaseError: no mutual exclusion on `directory` (another scheme; flock
      unsupported), google-cloud-storage missing, or the store refused.
  """
  resolved, why = resolve_mode(directory, mode)
  if resolved == 'lock':
    with _locked(directory, what) as holder:
      yield holder
    return
  holder = _GcsHolder(directory, expiry_s, what, on_lost, why)
  holder.acquire()
  try:
    yield holder
  finally:
    holder.release()


def holder_of(directory: str, *, mode: str = 'auto',
              expiry_s: float = 300.0) -> Optional[dict]:
  """The info of a live holder of `directory`'s lease, or None.

  Creates nothing. Lock mode: a shared non-blocking flock on an existing
  lease.json; gcs: the lease object, None if absent, released, expired (at
  expires + S) or held by a run of this machine that has ended.

  Args:
    directory: a workdir (or WORKDIR/eval).
    mode: as for `hold` (the run's config.train.lease).
    expiry_s: as for `hold` (the margin S depends on it).

  Returns:
    The holder's info (host, pid, start, what, ...; never empty: 'lease'
    names the lease file or object), or None if no live run holds it.

  Raises:
    LeaseError: it cannot be told (no usable flock, another scheme,
      google-cloud-storage missing, the store refused the read).
  """
  resolved, _ = resolve_mode(directory, mode)
  if resolved == 'lock':
    return _probe_lock(directory)
  store = _GcsLease(directory)
  current = store.read()
  if current is None or _free(current, expiry_s, store) is not None:
    return None
  return dict(current.info, lease=store.url, generation=current.generation)


# ---------------------------------------------------------------- lock mode


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      info = json.load(f)
    return info if isinstance(info, dict) else {}
  except (ValueError, OSError):
    return {}


def _no_locks(directory: str, error: OSError) -> LeaseError:
  reason = os.strerror(error.errno) if error.errno else str(error)
  name = errno.errorcode.get(error.errno, '?')
  return LeaseError(
      f'{directory}: flock on {lease_path(directory)} failed ({name}: '
      f'{reason}): this file system gives no usable locks, so nothing stops '
      'a second run from writing it too. Use a local workdir (or an NFSv4 '
      'mount with server locks) or gs://.')


def _probe_lock(directory: str) -> Optional[dict]:
  """The lock holder's info if a live run holds the lock, else None.

  Creates nothing: no lock file, no lock (a shared lock, at once released).

  Raises:
    LeaseError: flock fails other than "held".
  """
  import fcntl  # pylint: disable=g-import-not-at-top
  path = lease_path(directory)
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:  # no lock file (or no directory): nobody holds the lock
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno in _HELD_ERRNOS:
      return dict(_read_json(path), lease=path)
    raise _no_locks(directory, e) from None
  finally:
    os.close(fd)  # also drops the shared lock, if taken
  return None


@contextlib.contextmanager
def _locked(directory: str, what: str) -> Iterator[Holder]:
  import fcntl  # pylint: disable=g-import-not-at-top
  path = lease_path(directory)
  # A busy directory exists: test the lock without creating anything.
  held = _probe_lock(directory)
  if held is not None:
    raise LeaseHeldError(_refusal(directory, held, None, what))
  os.makedirs(directory, exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in _HELD_ERRNOS:
        raise LeaseHeldError(_refusal(directory, _read_json(path), None,
                                      what)) from None
      raise _no_locks(directory, e) from None
    info = dict(_identity(), what=what)
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + '\n').encode())
    logging.info('Holding the lock on %s (released when this process ends).',
                 path)
    yield Holder(info, 'lock')
  finally:
    # Closing the descriptor releases the lock; the file stays (removing it
    # could let two runs lock two different files).
    os.close(fd)


# ----------------------------------------------------------------- gcs mode


class _Object(NamedTuple):
  generation: int
  info: dict  # {} if the content is not a JSON object
  parsed: bool


class _Conflict(Exception):
  """A write's precondition failed and the object is not this run's."""

  def __init__(self, current: Optional[_Object]):
    super().__init__('precondition failed')
    self.current = current


_clients = {}
_clients_lock = threading.Lock()


def _storage():
  """google.cloud.storage and the errors to catch, imported on first use."""
  try:
    # pylint: disable=g-import-not-at-top
    from google.api_core import exceptions
    import google.auth.exceptions
    from google.cloud import storage
    import requests
    # pylint: enable=g-import-not-at-top
  except ImportError as e:
    raise LeaseError(
        f'cannot import google.cloud.storage: module {e.name!r} is not '
        'installed (the gs:// lease needs it). Fix: pip install '
        'google-cloud-storage.') from None
  errors = (exceptions.GoogleAPICallError, exceptions.RetryError,
            google.auth.exceptions.GoogleAuthError,
            requests.exceptions.RequestException, OSError)
  return storage, exceptions, errors


def _client():
  """One client per process (per emulator), as TensorFlow's GCS file system:
  Application Default Credentials (anonymous under STORAGE_EMULATOR_HOST)."""
  storage, _, _ = _storage()
  import google.auth.exceptions  # pylint: disable=g-import-not-at-top
  key = os.environ.get('STORAGE_EMULATOR_HOST')
  with _clients_lock:
    if key not in _clients:
      try:
        _clients[key] = storage.Client()
      except google.auth.exceptions.DefaultCredentialsError as e:
        raise LeaseError(
            'the gs:// lease found no Google Cloud credentials '
            f'({str(e).splitlines()[0]}). Run `gcloud auth application-'
            'default login`, or use a VM whose service account may write '
            'the bucket.') from None
    return _clients[key]


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return (text.splitlines()[0] if text else type(error).__name__)[:300]


class _GcsLease:
  """DIR/lease.json on GCS: conditional reads and writes."""

  def __init__(self, directory: str):
    self.storage, self.exceptions, self.errors = _storage()
    rest = directory[len('gs://'):].strip('/')
    bucket, _, prefix = rest.partition('/')
    if not bucket:
      raise LeaseError(f'{directory}: no bucket name; use gs://BUCKET/PATH.')
    self.name = (prefix + '/' if prefix else '') + LEASE_FILENAME
    self.url = f'gs://{bucket}/{self.name}'
    self.bucket = _client().bucket(bucket)

  def _limits(self, seconds: float) -> dict:
    """Per-request timeout and retry deadline: at most `seconds` (>= 1 s).

    google-cloud-storage retries conditional requests; a retried write whose
    first attempt landed fails its precondition, which `write` tells apart by
    the token. The deadline keeps a holder from retrying past its expiry.
    """
    seconds = max(seconds, 1.0)
    return {'timeout': min(seconds, 60.0),
            'retry': self.storage.retry.DEFAULT_RETRY.with_timeout(seconds)}

  def read(self, seconds: float = 60.0) -> Optional[_Object]:
    """The object (generation and content), or None if there is none."""
    blob = self.bucket.blob(self.name)
    try:
      data = blob.download_as_bytes(**self._limits(seconds))
    except self.exceptions.NotFound:
      return None
    try:
      info = json.loads(data)
      parsed = isinstance(info, dict)
    except ValueError:
      info, parsed = {}, False
    return _Object(int(blob.generation), info if parsed else {}, parsed)

  def generation(self, seconds: float) -> Optional[int]:
    """The object's generation (a metadata read), None if there is none."""
    blob = self.bucket.get_blob(self.name, **self._limits(seconds))
    return None if blob is None else int(blob.generation)

  def age(self, seconds: float = 60.0) -> Optional[float]:
    """Seconds since the object was last written, None if there is none."""
    blob = self.bucket.get_blob(self.name, **self._limits(seconds))
    if blob is None or blob.updated is None:
      return None
    return _now() - blob.updated.timestamp()

  def write(self, info: dict, generation: int, seconds: float) -> _Object:
    """Writes `info` if the object's generation is `generation` (0: absent).

    Returns:
      The object now stored: `info` at its new generation, or an earlier
      write of the same holder (same token) whose landing went unseen.

    Raises:
      _Conflict: the precondition failed and the object is not `info`'s
        holder's (another token).
    """
    blob = self.bucket.blob(self.name)
    try:
      # A multipart upload (under 8 MiB), whose precondition the emulator
      # enforces too.
      blob.upload_from_string(json.dumps(info) + '\n',
                              content_type='application/json',
                              if_generation_match=generation,
                              **self._limits(seconds))
      return _Object(int(blob.generation), info, True)
    except self.exceptions.PreconditionFailed:
      current = self.read(seconds)
      if current is not None and current.info.get('token') == info['token']:
        # This write (a retry's first attempt) or an earlier one of this
        # holder landed: nobody else wrote since.
        return current
      raise _Conflict(current) from None


def _free(current: _Object, expiry_s: float, store: _GcsLease
          ) -> Optional[str]:
  """Why `current` may be taken over (a log line), or None if it is live."""
  info = current.info
  if not current.parsed:
    # Not this project's JSON (written by hand?): stale once old enough.
    age = store.age()
    if age is not None and age > expiry_s + margin(expiry_s):
      return f'an unreadable lease {age:.0f} s old'
    return None
  if 'released' in info:
    return 'released'
  expires = info.get('expires')
  if not isinstance(expires, (int, float)) or (
      _now() > expires + margin(expiry_s)):
    return f'the expired lease of {_holder_text(info)}'
  if _dead_here(info):
    return (f'the lease of {_holder_text(info)}, a process of this machine '
            'that has ended')
  return None


class _GcsHolder(Holder):
  """gcs mode: acquire, heartbeat with fencing, release."""

  def __init__(self, directory, expiry_s, what, on_lost, why):
    token = uuid.uuid4().hex
    super().__init__(dict(_identity(), what=what, token=token), 'gcs')
    self.directory, self.expiry_s, self.what = directory, expiry_s, what
    self.on_lost, self.token, self.why = on_lost, token, why
    self.store = _GcsLease(directory)
    self.margin = margin(expiry_s)
    self.generation = None  # of this run's last write
    self.expires = self.renewed = None
    self.lost = None  # the LeaseLostError, once decided
    self._lost_lock = threading.Lock()
    # verify() and the heartbeat's renewal one at a time: a renewal landed
    # but not yet recorded would look like another's write.
    self._io_lock = threading.Lock()
    self._stop = threading.Event()
    self._thread = None

  def _write(self, generation: int, *, release: bool = False) -> None:
    now = _now()
    # A unique nonce per write tells which write a later read shows.
    info = dict(self.info, nonce=uuid.uuid4().hex, renewed=now,
                expires=now if release else now + self.expiry_s)
    if release:
      info['released'] = now
    if self.expires is None:
      seconds = 60.0
    else:  # a holder retries only while its lease lasts
      seconds = self.expires - self.margin - now
    stored = self.store.write(info, generation, seconds)
    # What others judge by: an unseen earlier write may be what landed.
    self.generation, self.info = stored.generation, stored.info
    self.expires, self.renewed = stored.info['expires'], stored.info['renewed']

  def _fail(self, error: BaseException) -> LeaseError:
    return LeaseError(
        f'{self.directory}: cannot take the lease {self.store.url} '
        f'({type(error).__name__}: {_first_line(error)}). Check the bucket '
        'name, its permissions and the credentials.')

  # ---------------------------------------------------------------- acquire

  def _refusal(self, current: _Object) -> str:
    if current.parsed:
      return _refusal(self.directory, current.info,
                      current.info.get('expires'), self.what)
    return (f'{self.directory}: its lease {self.store.url} is not a lease '
            'this project wrote (not JSON); it counts as held until '
            f'{self.expiry_s + self.margin:g} s after its last write. Wait, '
            'or delete it if no run uses the directory.')

  def acquire(self) -> None:
    """Raises LeaseHeldError if a live run holds the lease; else holds it."""
    current = None
    for _ in range(_ACQUIRE_ATTEMPTS):
      try:
        current = self.store.read()
        why = None
        if current is not None:
          why = _free(current, self.expiry_s, self.store)
          if why is None:
            raise LeaseHeldError(self._refusal(current))
        self._write(0 if current is None else current.generation)
      except _Conflict as c:
        current = c.current  # another contender's write: judge again
        continue
      except self.store.errors as e:
        raise self._fail(e) from None
      if why is not None and why != 'released':
        logging.warning('Taking over %s (%s).', why, self.store.url)
      break
    else:
      raise LeaseHeldError(
          self._refusal(current) if current is not None else
          f'{self.directory}: the lease {self.store.url} changed hands '
          f'{_ACQUIRE_ATTEMPTS} times while this run tried to take it. Retry.')
    logging.info('Holding the lease %s (%s; generation %d, expires %s, '
                 'renewed every %.0f s).', self.store.url, self.why,
                 self.generation, _when(self.expires), self.expiry_s / 3)
    self._thread = threading.Thread(target=self._heartbeat,
                                    name='lease_heartbeat', daemon=True)
    self._thread.start()

  # -------------------------------------------------------------- heartbeat

  def _heartbeat(self) -> None:
    pause = self.expiry_s / 3
    while not self._stop.wait(pause):
      pause = self.expiry_s / 3
      with self._io_lock:
        if self.lost is not None or self._stop.is_set():
          return
        # Before any I/O: a holder woken (SIGCONT, a resumed VM) past its
        # expiry renews nothing; the lease may be another's by now.
        if _now() > self.expires - self.margin:
          lost = self._declare_lost()
        else:
          try:
            self._write(self.generation)
            continue
          except _Conflict as c:
            lost = self._declare_lost(c.current)
          except self.store.errors as e:
            logging.warning('Could not renew the lease %s (%s: %s); '
                            'retrying.', self.store.url, type(e).__name__,
                            _first_line(e))
            # Sooner than a beat: two missed beats leave a third of it.
            pause = min(pause, max(self.margin, 0.5))
            continue
      self._tell(lost)
      return

  def _declare_lost(self, current: Optional[_Object] = None
                    ) -> Optional[LeaseLostError]:
    """Decides the lease is lost; the error if this call decided it first."""
    with self._lost_lock:
      if self.lost is not None:
        return None
      to = (f' to {_holder_text(current.info)}' if current is not None and
            current.parsed and current.info.get('token') != self.token and
            'released' not in current.info else '')
      save = ('a checkpoint save' if self.what == 'training run' else
              'a write')
      when = 'this run stalled' if current is None else 'it was taken'
      self.lost = LeaseLostError(
          f'lost the lease on {self.directory}{to}: this run last renewed '
          f'it {_now() - self.renewed:.0f} s ago (lease expiry '
          f'{self.expiry_s:g} s); {save} already under way when {when} may '
          'still have landed (it started no new write after the lease was '
          'lost).')
      self._stop.set()
      return self.lost

  def _tell(self, first: Optional[LeaseLostError]) -> None:
    if first is not None and self.on_lost is not None:
      self.on_lost(first)

  def _raise_lost(self, current: Optional[_Object] = None) -> None:
    first = self._declare_lost(current)
    self._tell(first)
    raise self.lost

  def check(self) -> None:
    if self.lost is not None or _now() > self.expires - self.margin:
      self._raise_lost()

  def verify(self) -> None:
    self.check()
    with self._io_lock:
      self.check()
      seconds = self.expires - self.margin - _now()
      current = None
      try:
        ours = self.store.generation(seconds) == self.generation
        if not ours:
          current = self.store.read(seconds)
          if current is not None and current.info.get('token') == self.token:
            # A renewal whose answer was lost had landed: still ours.
            self.generation, self.info = current.generation, current.info
            self.expires = current.info['expires']
            self.renewed = current.info['renewed']
            ours, current = True, None
      except self.store.errors as e:
        # The store cannot be asked now: the local clock still bounds the
        # lease (check() below), as between beats.
        logging.warning('Could not read the lease %s (%s: %s); relying on '
                        'its expiry.', self.store.url, type(e).__name__,
                        _first_line(e))
        ours = True
      if not ours:
        self._raise_lost(current)
    self.check()

  # ---------------------------------------------------------------- release

  def release(self) -> None:
    self._stop.set()
    if self._thread not in (None, threading.current_thread()):
      self._thread.join()
    with self._io_lock:
      if self.lost is not None or _now() > self.expires - self.margin:
        return  # maybe another's by now: no I/O
      try:
        # An expired rewrite, not a delete: fake-gcs-server ignores delete
        # preconditions, and the next run overwrites it conditionally.
        self._write(self.generation, release=True)
      except _Conflict:
        logging.warning('The lease %s was not this run\'s anymore at its '
                        'end.', self.store.url)
      except self.store.errors as e:
        logging.warning('Could not release the lease %s (%s); it expires '
                        'by itself at %s.', self.store.url, _first_line(e),
                        _when(self.expires))
