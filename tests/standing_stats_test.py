"""Standing statistics (bigbigan_tf/standing_stats.py) on small networks."""

import keras
import numpy as np
import tensorflow as tf

from bigbigan_tf import standing_stats
from bigbigan_tf.models import encoder as enc_lib
from bigbigan_tf.models import generator as gen_lib


def _z(n, dim, seed=0):
  return np.random.default_rng(seed).standard_normal((n, dim)).astype(
      np.float32)


def _x(n, size, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(
      np.float32)


class StandingStatisticsTest(tf.test.TestCase):
  """apply_standing_statistics on small networks, against hand computation."""

  def _encoder(self):
    e = enc_lib.Encoder(z_dim=4, blocks_per_stage=(1, 1, 1, 1),
                        width_multiplier=0.0625, head_depth=0)
    e(_x(2, 32), noise=np.zeros((2, 4), np.float32))
    return e

  def test_average_of_batch_statistics(self):
    e = self._encoder()
    batches = [_x(4, 32, seed=s) for s in range(3)]
    noise = np.zeros((4, 4), np.float32)
    count = standing_stats.apply_standing_statistics(
        e, batches, lambda x: e(x, training=True, noise=noise))
    self.assertEqual(count, 3)
    # The first batch norm reads the max-pooled stem output.
    first = e.blocks[0].bn1
    self.assertIn(first, standing_stats.batch_norm_layers(e))
    h = [keras.ops.max_pool(e.stem(x), 3, 2, 'same').numpy() for x in batches]
    self.assertAllClose(first.moving_mean,
                        np.mean([a.mean((0, 1, 2)) for a in h], 0), atol=1e-5)
    self.assertAllClose(first.moving_variance,
                        np.mean([a.var((0, 1, 2)) for a in h], 0), atol=1e-5)
    self.assertEqual(first.momentum, 0.99)

  def test_one_batch_makes_inference_mode_equal_training_mode(self):
    e = self._encoder()
    x, noise = _x(8, 32, seed=4), np.zeros((8, 4), np.float32)
    standing_stats.apply_standing_statistics(
        e, [x], lambda b: e(b, training=True, noise=noise))
    # (Training mode also moves the statistics: compare it last.)
    inference = e(x, training=False, noise=noise)
    training = e(x, training=True, noise=noise)
    for key in ('avepool_feat', 'bn_crelu_feat', 'z_mean'):
      self.assertAllClose(inference[key], training[key], atol=1e-4, msg=key)

  def test_generator_keeps_its_other_state(self):
    g = gen_lib.Generator(resolution=32, z_dim=8, ch=4, embed_dim=2)
    g(_z(2, 8))
    bns = standing_stats.batch_norm_layers(g)
    self.assertLen(bns, 2 * len(g.blocks) + 1)  # two per block, then out_bn
    stats = {id(v) for bn in bns for v in (bn.moving_mean,
                                           bn.moving_variance)}
    others = [(v, v.numpy()) for v in g.non_trainable_variables
              if id(v) not in stats]
    self.assertNotEmpty(others)  # spectral-norm vectors
    before = [bn.moving_variance.numpy() for bn in bns]
    standing_stats.generator_standing_statistics(g, z_dim=8, num_batches=2,
                                                 batch_size=16)
    for v, value in others:
      self.assertAllEqual(v, value, msg=v.path)
    for bn, old in zip(bns, before):
      self.assertNotAllClose(bn.moving_variance, old)
      self.assertEqual(bn.momentum, 0.99)

  def test_failure_leaves_the_model_unchanged(self):
    e = self._encoder()
    before = [v.numpy() for v in e.non_trainable_variables]
    with self.assertRaisesRegex(ValueError, 'at least one batch'):
      standing_stats.apply_standing_statistics(e, [], lambda x: e(x))
    for v, value in zip(e.non_trainable_variables, before):
      self.assertAllEqual(v, value)


if __name__ == '__main__':
  tf.test.main()
