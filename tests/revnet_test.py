"""RevNet encoder: reversible gradient, inversion, and the tiny run end to end."""

import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from bigbigan_tf import checkpoints
from bigbigan_tf import export_lib
from bigbigan_tf import train_lib
from bigbigan_tf.configs import tiny
from bigbigan_tf.models import revnet


def _x(n, size, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(
      np.float32)


def _tiny_encoder():
  e = revnet.RevNetEncoder(z_dim=8, blocks_per_stage=(2, 2, 1, 1),
                           width_multiplier=0.0625, head_depth=1,
                           head_width=16)
  e(_x(2, 64), noise=np.zeros((2, 8), np.float32))
  return e


class ReversibleGradientTest(tf.test.TestCase):

  def test_custom_gradient_equals_autodiff(self):
    e = _tiny_encoder()
    x = _x(4, 64)
    noise = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    stats = [v.numpy() for v in e.non_trainable_weights]

    def grads(reversible):
      for v, s in zip(e.non_trainable_weights, stats):
        v.assign(s)
      e.reversible_grad = reversible
      with tf.GradientTape() as tape:
        out = e(x, training=True, noise=noise)
        loss = (tf.reduce_sum(out['z_sample'] ** 2)
                + tf.reduce_sum(out['bn_crelu_feat'] * out['avepool_feat'][
                    :, :1]))
      return tape.gradient(loss, e.trainable_weights)

    got, want = grads(True), grads(False)
    self.assertLen(got, len(e.trainable_weights))
    for w, g, r in zip(e.trainable_weights, got, want):
      self.assertIsNotNone(g, w.path)
      scale = max(float(np.max(np.abs(r))), 1e-3)
      self.assertAllClose(g / scale, r / scale, atol=1e-4, msg=w.path)

  def test_compiled_step_equals_autodiff_and_updates_stats_once(self):
    # In a tf.function the backward is the graph of the custom gradient (the
    # path training uses); BN's moving statistics must move once per step,
    # not again when the backward recomputes the blocks.
    e = _tiny_encoder()
    x = _x(4, 64, seed=3)
    noise = np.random.default_rng(4).standard_normal((4, 8)).astype(
        np.float32)
    stats = [v.numpy() for v in e.non_trainable_weights]

    def step_fn(reversible):
      @tf.function
      def step():
        e.reversible_grad = reversible
        with tf.GradientTape() as tape:
          out = e(x, training=True, noise=noise)
          loss = tf.reduce_sum(out['z_sample'] * out['z_mean'])
        return tape.gradient(loss, e.trainable_weights)
      return step

    results = {}
    for reversible in (True, False):
      for v, s in zip(e.non_trainable_weights, stats):
        v.assign(s)
      g = step_fn(reversible)()
      results[reversible] = (g, [v.numpy() for v in e.non_trainable_weights])
    (got, got_stats), (want, want_stats) = results[True], results[False]
    for w, g, r in zip(e.trainable_weights, got, want):
      self.assertIsNotNone(g, w.path)
      scale = max(float(np.max(np.abs(r))), 1e-3)
      self.assertAllClose(g / scale, r / scale, atol=1e-4, msg=w.path)
    block_stats = [i for i, v in enumerate(e.non_trainable_weights)
                   if 'stage' in v.path]
    self.assertNotEmpty(block_stats)
    for i in block_stats:
      path = e.non_trainable_weights[i].path
      self.assertGreater(float(np.max(np.abs(want_stats[i] - stats[i]))),
                         1e-6, path)
      self.assertAllClose(got_stats[i], want_stats[i], atol=1e-6, msg=path)

  def test_inverse_reconstructs_inputs(self):
    block = revnet.RevBlock(32, bn_epsilon=1e-5, bn_momentum=0.99)
    x = tf.constant(np.random.default_rng(2).standard_normal(
        (3, 8, 8, 32)).astype(np.float32))
    y = block(x, training=True)
    self.assertGreater(float(tf.reduce_max(tf.abs(y - x))), 0.1)
    self.assertAllClose(block.inverse(y), x, atol=1e-5)


@pytest.mark.slow  # trains a workdir, exports and loads it
class TinyRevNetRunTest(tf.test.TestCase):

  def test_trains_exports_and_loads(self):
    root = tempfile.mkdtemp()
    config = tiny.get_config()
    with config.unlocked():
      config.num_train_steps = 2
      config.model.encoder.kind = 'revnet'
    train_lib.train_and_evaluate(config, os.path.join(root, 'run'))
    config, state, _ = checkpoints.restore(os.path.join(root, 'run'))
    self.assertIsInstance(state.ema_encoder, revnet.RevNetEncoder)
    del state
    export_dir = os.path.join(root, 'export')
    export_lib.export(os.path.join(root, 'run'), export_dir,
                      standing_stats_batches=2)
    x = _x(3, config.model.encoder_resolution)
    module = hub.load(export_dir)  # kept: its variables die with it
    want = module.encode(x)
    feat = int(256 * config.model.encoder.width_multiplier * 8)
    self.assertEqual(want['avepool_feat'].shape, (3, feat))
    self.assertEqual(want['bn_crelu_feat'].shape, (3, 2 * feat))
    import tf_keras  # pylint: disable=g-import-not-at-top
    inputs = tf_keras.Input(shape=x.shape[1:])
    out = hub.KerasLayer(export_dir, signature='encode',
                         signature_outputs_as_dict=True)(inputs)
    got = tf_keras.Model(inputs, out['z_mean'])(x)
    self.assertAllClose(got, want['z_mean'], atol=1e-5)
    got = keras.layers.TFSMLayer(export_dir, call_endpoint='encode')(x)
    self.assertAllClose(got['avepool_feat'], want['avepool_feat'], atol=1e-5)


if __name__ == '__main__':
  tf.test.main()
