"""Write failures of a run (full disk, quota, permissions) as one sentence.

A checkpoint save, a summary flush, a grid or config.json on a full disk
fails deep inside TensorFlow or Python's I/O. `describe` recognises such a
failure and names the path and the reason; `message` adds the last good
checkpoint (kept) and what to do. train.py prints it and exits 2.
"""

import errno
import os
import re
from typing import Optional

import tensorflow as tf

from bigbigan_tf import checkpoints

_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM,
           errno.EROFS)
# How TensorFlow's file systems spell those errnos in their messages
# (local files; GCS says 'Permission denied' / 'quota').
_REASONS = tuple(os.strerror(e) for e in _ERRNOS)
_PATH = re.compile(r'((?:[a-zA-Z][a-zA-Z0-9+.-]*://|/)[^\s;\'",]+)')


def _causes(error: BaseException):
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def describe(error: BaseException, workdir: str = ''
             ) -> Optional[tuple[str, str]]:
  """(path, reason) if `error` is a failed write to storage, else None.

  Args:
    error: the exception that ended the run (its causes are looked at too).
    workdir: preferred prefix when a message names several paths.
  """
  for e in _causes(error):
    if isinstance(e, OSError) and e.errno in _ERRNOS:
      return (e.filename or e.filename2 or 'a file (the error names none)',
              os.strerror(e.errno))
    if isinstance(e, tf.errors.OpError):
      text = e.message or str(e)
      reason = next((r for r in _REASONS if r.lower() in text.lower()), None)
      if reason is None and isinstance(e, tf.errors.PermissionDeniedError):
        reason = os.strerror(errno.EACCES)
      if reason is None:
        # A ResourceExhaustedError without one of those texts is memory.
        continue
      paths = [p.rstrip('.') for p in _PATH.findall(text)]
      mine = [p for p in paths if workdir and p.startswith(workdir)]
      return (mine or paths or ['a file (the error names none)'])[0], reason
  return None


def message(error: BaseException, workdir: str) -> Optional[str]:
  """The one line train.py prints for a write failure, or None if not one."""
  found = describe(error, workdir)
  if found is None:
    return None
  path, reason = found
  try:
    last = checkpoints.latest_readable(
        os.path.join(workdir, checkpoints.CHECKPOINT_DIR))
  except (checkpoints.UnreadableCheckpointError, tf.errors.OpError, OSError):
    last = None
  kept = (f'The last good checkpoint, {last}, is kept.' if last else
          'No checkpoint was written yet.')
  fix = ('free space' if reason in (os.strerror(errno.ENOSPC),
                                    os.strerror(errno.EDQUOT))
         else 'make it writable')
  return (f'cannot write {path}: {reason}. {kept} Fix the cause ({fix} in '
          f'{workdir}), then re-run the same command to resume.')
