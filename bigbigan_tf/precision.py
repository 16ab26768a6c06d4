"""Keras' global dtype policy, set for a block and restored after it.

Keras 3 networks take their compute dtype from the global dtype policy
current when their layers are built: 'float32', or 'mixed_bfloat16' /
'mixed_float16' (float32 variables, low-precision compute). Training builds
its networks under config.train.precision; export and evaluation rebuild
them in float32 (checkpointed weights are float32 either way).
"""

import contextlib
from typing import Iterator

import keras


@contextlib.contextmanager
def dtype_policy(policy: str) -> Iterator[None]:
  """Sets Keras' global dtype policy inside the block, then restores it.

  Networks take their precision from the policy current when they are built
  ('float32', 'mixed_bfloat16', ...); the previous policy comes back even if
  the block raises.
  """
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(policy)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)
