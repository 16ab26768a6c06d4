"""Exponential moving average of a network's weights, kept in a twin network.

BigGAN samples from an EMA of G's weights (decay 0.9999); BigBiGAN's released
modules do the same for E. Keeping the average in a second instance of the
same Keras model (rather than loose variables) lets samples, reconstructions
and export call it like the live network.
"""

import keras
import tensorflow as tf


class EMA:
  """Pairs a live network with its EMA twin (same architecture, built)."""

  def __init__(self, live: keras.Model, average: keras.Model):
    live_vars, avg_vars = live.trainable_variables, average.trainable_variables
    if [v.shape for v in live_vars] != [v.shape for v in avg_vars]:
      raise ValueError(f'EMA twin of {live.name} has different weights.')
    self.live, self.average = live, average
    self._pairs = list(zip(live_vars, avg_vars))
    self._state_pairs = list(zip(live.non_trainable_variables,
                                 average.non_trainable_variables))

  def update(self, decay: tf.Tensor):
    """average = decay * average + (1 - decay) * live; decay 0 copies."""
    decay = tf.cast(decay, tf.float32)
    for w, a in self._pairs:
      a.assign(decay * a + (1.0 - decay) * tf.cast(w, a.dtype))

  def copy_state(self):
    """Copies non-trainable state (BN moving statistics, SN vectors).

    The average's own batch-norm statistics are never trained; the live
    network's are the usual stand-in (export can recompute them).
    """
    for w, a in self._state_pairs:
      a.assign(w)

  def copy_all(self):
    for w, a in self._pairs + self._state_pairs:
      a.assign(w)
