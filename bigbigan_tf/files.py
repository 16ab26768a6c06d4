"""Atomic file writes through `tf.io.gfile` (local paths and gs://).

Every file the project writes for a reader to pick up later (config.json,
hardware.json, evaluation results, PNG grids) goes through `write_atomic`:
the bytes go to a uniquely named temporary file beside the destination,
which is then renamed over it, so a run killed mid-write never leaves a
truncated file, and two writers never share a temporary file.
"""

import json
import os
from typing import Any, Callable, Optional, Union
import uuid

import tensorflow as tf

from bigbigan_tf import write_faults


def write_atomic(path: str, content: Union[str, bytes]) -> str:
  """Writes `content` to `path` atomically; creates missing parent dirs.

  Args:
    path: destination file (local or gs://).
    content: text (written as UTF-8) or bytes.

  Returns:
    `path`.

  Raises:
    write_faults.WriteFailed: storage refused (full, quota, permission).
  """
  # A full disk, a quota or a permission here is a failed write of `path`.
  with write_faults.writing(path):
    parent = os.path.dirname(path)
    if parent:
      tf.io.gfile.makedirs(parent)
    temp_path = f'{path}.tmp-{uuid.uuid4().hex}'
    try:
      with tf.io.gfile.GFile(temp_path,
                             'wb' if isinstance(content, bytes) else 'w') as f:
        f.write(content)
      tf.io.gfile.rename(temp_path, path, overwrite=True)
    finally:
      # Only left behind if the write or the rename failed.
      if tf.io.gfile.exists(temp_path):
        tf.io.gfile.remove(temp_path)
  return path


def write_json(path: str, content: Any, *, sort_keys: bool = True,
               default: Optional[Callable[[Any], Any]] = None) -> str:
  """Writes `content` as indented JSON (and a final newline), atomically.

  Args:
    path: destination file (local or gs://).
    content: anything `json.dumps` takes.
    sort_keys: sort the keys of every dict.
    default: `json.dumps`'s fallback for values it cannot serialise.

  Returns:
    `path`.
  """
  return write_atomic(path, json.dumps(content, indent=2, sort_keys=sort_keys,
                                       default=default) + '\n')
