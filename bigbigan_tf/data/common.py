"""What every data source shares: the error type, `data.name` and `Source`.

`DataError` is the one error of bad data configs; `parse_data_name` splits a
`data.name`; a `Source` is the undecoded examples of one data source, which
`pipeline` shuffles, decodes and preprocesses.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE

DATA_NAME_FORMS = ("'mnist'", "'tfds:NAME'", "'folder:PATH'")


class DataError(ValueError):
  """The data a config asks for cannot be read; the message says why."""


def parse_data_name(name: str) -> tuple[str, str]:
  """Splits a `data.name` into its kind and argument.

  Args:
    name: 'mnist', 'tfds:NAME' or 'folder:PATH'.

  Returns:
    ('mnist', ''), ('tfds', NAME) or ('folder', PATH).

  Raises:
    DataError: `name` has none of the three forms, or NAME / PATH is empty.
  """
  if name == 'mnist':
    return 'mnist', ''
  kind, sep, arg = name.partition(':')
  if sep and kind in ('tfds', 'folder'):
    if not arg:
      what = 'a TFDS dataset name' if kind == 'tfds' else 'a folder path'
      raise DataError(f'data.name={name!r} is missing {what} after '
                      f"'{kind}:'; e.g. 'tfds:imagenet2012' or "
                      "'folder:/data/images'.")
    return kind, arg
  raise DataError(
      f'Unknown data.name {name!r}; use one of {", ".join(DATA_NAME_FORMS)}, '
      "e.g. --config.data.name=tfds:cifar10 or "
      '--config.data.name=folder:/path/to/images.')


class Source(NamedTuple):
  """Undecoded examples of one data source.

  Attributes:
    dataset: elements (raw, label); `raw` is whatever `decode` takes.
    decode: raw -> (valid bool [], image [H, W, C] of any dtype). Invalid
      examples are dropped after decoding.
    may_fail: whether `decode` can return valid=False (else no filter).
    sharded: whether `dataset` already holds only this input pipeline's shard.
  """
  dataset: tf.data.Dataset
  decode: Callable[[Any], tuple[tf.Tensor, tf.Tensor]]
  may_fail: bool = False
  sharded: bool = False
