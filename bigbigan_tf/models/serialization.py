"""Native Keras 3 saving (`model.save('x.keras')`) for the three networks.

The networks are subclassed models whose layers are made in `__init__`, so a
`.keras` file needs only each model's constructor arguments (`get_config`)
and a way to create its weights before they are loaded (`build_from_config`
calls the model once on zeros). All classes are registered under the
package name `bigbigan_tf`, so after `import bigbigan_tf.models`,
`keras.saving.load_model(path)` needs no `custom_objects`.

`fast_ops` (fast_ops.py) is not part of the saved config: it only picks how
the same function is computed, and some of its tricks are TensorFlow-only. A
loaded model uses Keras' own operations, so it runs on every backend.
"""

from typing import Any, Optional, Sequence

import keras

PACKAGE = 'bigbigan_tf'

register = keras.saving.register_keras_serializable(package=PACKAGE)


class SavedArgs:
  """Mixin: `get_config` / `from_config` from recorded constructor arguments.

  Subclasses call `self._record_args(**kwargs)` in `__init__` with the
  (JSON-serialisable) arguments that rebuild the same architecture, and
  implement `_build_inputs(build_config)` returning the positional inputs
  (NumPy zeros) one call needs to create every weight.
  """

  def _record_args(self, **kwargs) -> None:
    # A plain dict of Python values; object.__setattr__ keeps Keras' tracking
    # from wrapping it.
    object.__setattr__(self, '_saved_args', {
        k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})

  def get_config(self) -> dict[str, Any]:
    fast_ops = getattr(self, 'fast_ops', None)
    if fast_ops is not None and fast_ops.in_use():
      # Their layers are other classes (e.g. FusedBatchNormalization), which
      # a plain model built from this config could not load.
      raise ValueError(
          f'{self.name} uses the speed tricks {fast_ops.in_use()} '
          '(fast_ops.py); only a plain network can be saved as .keras. Save '
          'bigbigan_tf.keras_export.plain_copy(model) instead.')
    return {'name': self.name, 'trainable': self.trainable,
            'dtype': keras.saving.serialize_keras_object(self.dtype_policy),
            **self._saved_args}

  @classmethod
  def from_config(cls, config: dict[str, Any]):
    config = dict(config)
    dtype = config.pop('dtype', None)
    if isinstance(dtype, dict):
      dtype = keras.saving.deserialize_keras_object(dtype)
    return cls(dtype=dtype, **config)

  def get_build_config(self) -> dict[str, Any]:
    return self._build_config()

  def build_from_config(self, config: dict[str, Any]) -> None:
    self(*self._build_inputs(config), training=False)


def check_image_size(name: str, resolution: Optional[int],
                     shape: Sequence[Optional[int]], what: str) -> None:
  """Refuses images [B, H, W, 3] of another size than `resolution`.

  The networks are fully convolutional: at another size they would run and
  give `what` (other features, other scores) rather than fail. A None
  resolution (a network built without one) or dimension passes.

  Raises:
    ValueError: naming the size and how to resize to it.
  """
  size = tuple(shape)[1:3]
  if resolution is None or all(d is None or d == resolution for d in size):
    return
  r = resolution
  raise ValueError(
      f'{name} was built for {r}x{r} images (its `resolution`) but got '
      f'{size[0]}x{size[1]} (input shape {tuple(shape)}). Resize the images '
      f'to {r}x{r}, e.g. keras.ops.image.resize(x, ({r}, {r})): the network '
      f'would run at another size but give {what}.')
