"""Runs docs/finetuning.md's Keras 3 blocks as written and measures them.

Backend-neutral (never imports TensorFlow): keras_export_test.py calls it in
process on TensorFlow and, through backend_checks.py, in one subprocess per
other backend (JAX, PyTorch). The blocks load 'E/keras/encoder.keras'
relative to the working directory, so they run in a directory where `E` is
the export.
"""

import contextlib
import os
import re

import keras
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, 'docs', 'finetuning.md')
ROUTES = ('functional', 'subclassed')


def doc_blocks() -> dict[str, str]:
  """The first two ```python blocks of docs/finetuning.md, by route."""
  with open(DOC) as f:
    blocks = re.findall(r'```python\n(.*?)```', f.read(), re.S)
  return dict(zip(ROUTES, blocks[:2]))


@contextlib.contextmanager
def _cwd(path: str):
  old = os.getcwd()
  os.chdir(path)
  try:
    yield
  finally:
    os.chdir(old)


def _numpy(variables) -> list[np.ndarray]:
  return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def _moving_stats(model) -> list[np.ndarray]:
  return _numpy([v for v in model.weights if 'moving_' in v.path])


def _max_change(a, b) -> float:
  return max(float(np.abs(u - v).max()) for u, v in zip(a, b))


def run_doc(workdir: str) -> dict:
  """Runs both blocks in one namespace in `workdir`; returns facts per route.

  For each route: the loss per epoch, and how far the fit moved E's
  trainable weights and moving statistics from the file's; that `predict`
  leaves the statistics alone; how much an example's prediction depends on
  its batch.
  """
  keras.utils.set_random_seed(0)
  namespace, out = {'__name__': '__doc__'}, {}
  path = os.path.join(workdir, 'E', 'keras', 'encoder.keras')
  original = keras.saving.load_model(path)
  # The doc's `os.environ.setdefault('KERAS_BACKEND', 'jax')` must neither
  # pick another backend here nor leak into this process's environment (its
  # later subprocesses, e.g. train.py, would start Keras on JAX).
  saved_env = dict(os.environ)
  os.environ['KERAS_BACKEND'] = keras.backend.backend()
  try:
    for route, code in doc_blocks().items():
      with _cwd(workdir):
        exec(compile(code, f'{DOC}:{route}', 'exec'), namespace)  # pylint: disable=exec-used
      _collect(route, namespace, original, out)
  finally:
    os.environ.clear()
    os.environ.update(saved_env)
  return out


def _collect(route, namespace, original, out):
  """The facts of one route, after its block ran."""
  encoder, model, x = namespace['encoder'], namespace['model'], namespace['x']
  stats = _moving_stats(encoder)
  batch = model.predict(x[:8], batch_size=8, verbose=0)
  single = np.concatenate([model.predict(x[i:i + 1], verbose=0)
                           for i in range(8)])
  out[route] = {
      'loss': [float(v) for v in namespace['history'].history['loss']],
      'weights_change': _max_change(_numpy(original.trainable_weights),
                                    _numpy(encoder.trainable_weights)),
      'stats_change_fit': _max_change(_moving_stats(original), stats),
      'stats_change_predict': _max_change(stats, _moving_stats(encoder)),
      'batch_dependence': float(np.abs(batch - single).max()),
  }
