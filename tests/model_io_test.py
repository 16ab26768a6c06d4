"""The networks' seeded noise and stated inputs (quick, TensorFlow backend).

The same behaviour on JAX and PyTorch is checked by keras_export_test.py's
backend subprocesses.
"""

import os
import tempfile
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from bigbigan_tf import models

Z = 8
R = 32


def _encoder(seed=0, **kwargs):
  e = models.Encoder(z_dim=Z, blocks_per_stage=(1, 1),
                     width_multiplier=0.0625, resolution=R, seed=seed,
                     **kwargs)
  e.build_from_config(e.get_build_config())
  return e


def _np(a):
  return keras.ops.convert_to_numpy(a)


class SeededNoiseTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.x = np.random.default_rng(0).uniform(
        -1, 1, (4, R, R, 3)).astype(np.float32)
    self.dir = tempfile.mkdtemp()

  def test_stream_follows_seed_and_given_noise_wins(self):
    a, b, c = _encoder(seed=3), _encoder(seed=3), _encoder(seed=4)
    b.set_weights(a.get_weights())
    c.set_weights(a.get_weights())
    first = _np(a(self.x)['z_sample'])
    self.assertAllEqual(first, _np(b(self.x)['z_sample']))
    self.assertNotAllClose(first, _np(c(self.x)['z_sample']))
    # The stream moves on; inference outputs do not depend on it.
    second = a(self.x)
    self.assertNotAllClose(first, _np(second['z_sample']))
    self.assertAllEqual(_np(second['z_mean']), _np(b(self.x)['z_mean']))
    noise = np.ones((4, Z), np.float32)
    given = a(self.x, noise=noise)
    self.assertAllClose(_np(given['z_sample']),
                        _np(given['z_mean']) + _np(given['z_stdev']))

  def test_keras_file_keeps_seed_and_stream_position(self):
    e = _encoder(seed=5)
    e(self.x)
    e(self.x)
    path = os.path.join(self.dir, 'e.keras')
    e.save(path)
    loaded = keras.saving.load_model(path)
    self.assertEqual(loaded.get_config()['seed'], 5)
    self.assertAllEqual(_np(loaded.noise_seed.state), _np(e.noise_seed.state))
    self.assertAllEqual(_np(loaded(self.x)['z_sample']),
                        _np(e(self.x)['z_sample']))

  def test_file_without_seed_state_loads(self):
    # As written before the stream's position was saved: Keras' own layout.
    e = _encoder(seed=2)
    e(self.x)
    path = os.path.join(self.dir, 'old.keras')
    with mock.patch.object(models.Encoder, 'save_own_variables',
                           keras.Model.save_own_variables):
      e.save(path)
    loaded = keras.saving.load_model(path)
    self.assertAllEqual(_np(loaded.noise_seed.state), [2, 0])
    self.assertAllEqual(_np(loaded(self.x)['z_mean']), _np(e(self.x)['z_mean']))

  def test_tf_checkpoint_leaves_the_seed_state_out(self):
    # So checkpoints written before the encoder had one restore unchanged
    # (training passes its own noise and never reads the stream).
    e = _encoder()
    prefix = tf.train.Checkpoint(encoder=e).save(os.path.join(self.dir, 'c'))
    names = [n for n, _ in tf.train.list_variables(prefix)]
    self.assertNotEmpty([n for n in names if 'moving_mean' in n])
    self.assertEmpty([n for n in names if 'seed' in n])
    again = _encoder()
    tf.train.Checkpoint(encoder=again).restore(
        prefix).assert_existing_objects_matched()
    self.assertAllEqual(_np(again(self.x, noise=np.zeros((4, Z)))['z_mean']),
                        _np(e(self.x, noise=np.zeros((4, Z)))['z_mean']))


class StatedInputsTest(tf.test.TestCase):

  def test_encoder_states_and_enforces_its_resolution(self):
    e = _encoder()
    config = e.get_build_config()
    self.assertEqual(config['resolution'], R)
    self.assertEqual(config['input_shape'], [None, R, R, 3])
    shapes = e.compute_output_shape((None, R, R, 3))
    self.assertEqual(shapes['avepool_feat'], (None, e.feature_dim))
    self.assertEqual(shapes['z_sample'], (None, Z))
    with self.assertRaisesRegex(ValueError, f'built for {R}x{R}.*Resize'):
      e(np.zeros((1, 2 * R, 2 * R, 3), np.float32))
    with self.assertRaisesRegex(ValueError, 'Resize'):
      e(keras.Input((2 * R, 2 * R, 3)))
    # Functional graphs built from the shapes; outputs float32.
    out = e(keras.Input((R, R, 3)))
    self.assertEqual(tuple(out['bn_crelu_feat'].shape),
                     (None, 2 * e.feature_dim))
    self.assertEqual(out['z_mean'].dtype, 'float32')

  def test_encoder_without_resolution_takes_any_size(self):
    e = models.Encoder(z_dim=Z, blocks_per_stage=(1, 1),
                       width_multiplier=0.0625)
    self.assertIsNone(e.resolution)
    for r in (32, 64):
      self.assertEqual(
          e(np.zeros((1, r, r, 3), np.float32))['z_mean'].shape, (1, Z))

  def test_generator_and_discriminator_state_their_inputs(self):
    g = models.Generator(resolution=32, z_dim=Z, ch=4)
    g.build_from_config({'z_dim': Z})
    self.assertEqual(g.get_build_config(),
                     {'z_dim': Z, 'resolution': 32, 'input_shape': [None, Z]})
    self.assertEqual(g.compute_output_shape((None, Z)), (None, 32, 32, 3))
    with self.assertRaisesRegex(ValueError, 'incompatible'):
      g(np.zeros((1, Z + 1), np.float32))
    d = models.Discriminator(resolution=32, ch=4, attention_resolution=0,
                             h_width=8, h_depth=1, j_width=8, j_depth=1)
    d.build_from_config({'z_dim': Z})
    self.assertEqual(d.get_build_config()['input_shape'],
                     [[None, 32, 32, 3], [None, Z]])
    self.assertEqual(
        d.compute_output_shape((None, 32, 32, 3), (None, Z))['score_xz'],
        (None,))
    with self.assertRaisesRegex(ValueError, 'built for 32x32'):
      d(np.zeros((1, 64, 64, 3), np.float32), np.zeros((1, Z), np.float32))


if __name__ == '__main__':
  tf.test.main()
