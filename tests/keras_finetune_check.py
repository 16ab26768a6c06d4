"""Backend-neutral checks on a loaded .keras encoder (no TensorFlow import).

Used in process by keras_export_test.py on TensorFlow and, in one subprocess,
on JAX (and PyTorch where installed): fine-tuning with Adam on real digits.
"""

import keras
import numpy as np
from sklearn import datasets


def digits(resolution: int, n: int = 128):
  """scikit-learn's 8x8 digits as [n, R, R, 3] in [-1, 1], and labels."""
  d = datasets.load_digits()
  x = d.images[:n].astype(np.float32) / 8.0 - 1.0  # 0..16 -> [-1, 1]
  rep = resolution // 8
  x = np.repeat(np.repeat(x, rep, axis=1), rep, axis=2)
  return np.repeat(x[..., None], 3, axis=-1), d.target[:n].astype(np.int32)


class Classifier(keras.Model):
  """A loaded encoder's avepool_feat and a softmax layer."""

  def __init__(self, encoder, classes: int, **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.head = keras.layers.Dense(classes, activation='softmax')

  def call(self, x, training=False):
    # The noise only feeds z_sample, unused here; passing it keeps unseeded
    # random draws out of JAX's traced training step.
    noise = keras.ops.zeros((keras.ops.shape(x)[0], self.encoder.z_dim))
    out = self.encoder(x, training=training, noise=noise)
    return self.head(out['avepool_feat'])


def _moving_stats(model):
  return [keras.ops.convert_to_numpy(v).copy() for v in model.weights
          if 'moving_' in v.path]


def finetune(encoder_path: str, resolution: int, epochs: int = 3) -> dict:
  """Fits encoder + softmax head with Adam; returns the measured facts."""
  keras.utils.set_random_seed(0)
  encoder = keras.saving.load_model(encoder_path)
  x, y = digits(resolution)
  stats0 = _moving_stats(encoder)
  weights0 = [keras.ops.convert_to_numpy(v).copy()
              for v in encoder.trainable_weights]
  model = Classifier(encoder, 10)
  model.compile(keras.optimizers.Adam(1e-3),
                'sparse_categorical_crossentropy')
  # Inference alone leaves the moving statistics as they are.
  first = model.predict(x[:8], batch_size=8, verbose=0)
  stats_after_predict = _moving_stats(encoder)
  history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=True,
                      verbose=0)
  stats1 = _moving_stats(encoder)
  weights1 = [keras.ops.convert_to_numpy(v)
              for v in encoder.trainable_weights]
  batch = model.predict(x[:8], batch_size=8, verbose=0)
  single = np.concatenate([model.predict(x[i:i + 1], verbose=0)
                           for i in range(8)])
  del first
  return {
      'loss': [float(v) for v in history.history['loss']],
      'weights_change': max(float(np.abs(a - b).max())
                            for a, b in zip(weights0, weights1)),
      'stats_change_predict': max(
          float(np.abs(a - b).max())
          for a, b in zip(stats0, stats_after_predict)),
      'stats_change_fit': max(float(np.abs(a - b).max())
                              for a, b in zip(stats0, stats1)),
      'batch_dependence': float(np.abs(batch - single).max()),
  }
