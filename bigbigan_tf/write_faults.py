"""Write failures of a run (full disk, quota, permissions) as one sentence.

A checkpoint save, a summary flush, a grid or config.json on a full disk
fails deep inside TensorFlow or Python's I/O. Failures are classified by the
operation that failed, never by the message alone: the run's writes go
through `writing(path)`, which marks a storage failure there as a
`WriteFailed` naming that path. A read failure (a 403 on a dataset file) is
never called a write. `describe` gives (path, reason); `message` adds the last
good checkpoint (kept; the caller names it) and what to do. train.py prints it
and exits 2.
"""

import contextlib
import errno
import os
from typing import Iterator, Optional

import tensorflow as tf

# Errnos that only a write can cause: recognised even outside `writing`.
_WRITE_ONLY_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
_PERMISSION_ERRNOS = (errno.EACCES, errno.EPERM)
_NO_SPACE = tuple(os.strerror(e) for e in (errno.ENOSPC, errno.EDQUOT))
QUOTA = 'quota or rate limit exceeded (HTTP 429)'
# How GCS (and TensorFlow's GCS file system) spell a 429.
_QUOTA_MARKS = ('ratelimitexceeded', 'rate limit', 'too many requests',
                'response code 429', 'quotaexceeded', 'quota exceeded')
_NAMES_NONE = 'a file (the error names none)'


class WriteFailed(OSError):
  """A storage failure while writing `path` (the cause is chained).

  An OSError, so code that handles a failed write as one still does.
  """

  def __init__(self, path: str, reason: str):
    super().__init__(f'cannot write {path}: {reason}')
    self.path, self.reason = path, reason


def _causes(error: BaseException):
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _reason(error: BaseException, *, writing_: bool) -> Optional[str]:
  """Why storage refused, if `error` is such a failure, else None.

  Permission errors count only when the failed operation is a write
  (`writing_`); the errnos of `_WRITE_ONLY_ERRNOS` always do.
  """
  if isinstance(error, OSError) and error.errno is not None:
    if error.errno in _WRITE_ONLY_ERRNOS or (
        writing_ and error.errno in _PERMISSION_ERRNOS):
      return os.strerror(error.errno)
    return None
  if not isinstance(error, tf.errors.OpError):
    return None
  text = (error.message or str(error)).lower()
  if any(mark in text for mark in _QUOTA_MARKS) or (
      'quota' in text and 'disk quota' not in text):
    return QUOTA if writing_ else None
  for e in _WRITE_ONLY_ERRNOS:
    if os.strerror(e).lower() in text:
      return os.strerror(e)
  if writing_ and (isinstance(error, tf.errors.PermissionDeniedError) or
                   'permission denied' in text):
    return os.strerror(errno.EACCES)
  # Anything else (a ResourceExhaustedError without those texts is memory).
  return None


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
  """Marks a storage failure inside the block as a failed write of `path`.

  Raises:
    WriteFailed: from the original error, if storage refused the write;
      other errors pass through unchanged.
  """
  try:
    yield
  except (tf.errors.OpError, OSError) as e:
    reason = _reason(e, writing_=True)
    if reason is None:
      raise
    raise WriteFailed(path, reason) from e


def describe(error: BaseException) -> Optional[tuple[str, str]]:
  """(path, reason) if `error` is a failed write to storage, else None.

  Args:
    error: the exception that ended the run (its causes are looked at too).
  """
  for e in _causes(error):
    if isinstance(e, WriteFailed):
      return e.path, e.reason
  for e in _causes(error):
    reason = _reason(e, writing_=False)
    if reason is not None:
      # Full disk / read-only outside `writing`: the path if the error has
      # one in a structured field.
      path = (getattr(e, 'filename', None) or getattr(e, 'filename2', None)
              or _NAMES_NONE)
      return str(path), reason
  return None


def message(error: BaseException, workdir: str, *,
            last_checkpoint: Optional[str] = None) -> Optional[str]:
  """The one line train.py prints for a write failure, or None if not one.

  Args:
    error: the exception that ended the run.
    workdir: the run's workdir.
    last_checkpoint: the newest readable checkpoint (kept), or None if there
      is none (the caller finds it: this module knows no checkpoint layout).
  """
  found = describe(error)
  if found is None:
    return None
  path, reason = found
  last = last_checkpoint
  kept = (f'The last good checkpoint, {last}, is kept.' if last else
          'No checkpoint was written yet.')
  if reason in _NO_SPACE:
    fix = f'free space in {workdir}'
  elif reason == QUOTA:
    fix = ('wait a few minutes, or raise the storage quota of the project '
           f'that owns {workdir}')
  else:
    fix = f'make it writable in {workdir}'
  return (f'cannot write {path}: {reason}. {kept} Fix the cause ({fix}), '
          'then re-run the same command to resume.')
