"""IS / FID / KID against NumPy references, the pipeline, Inception loading."""

import math
import os
import socket
import time
from unittest import mock

import numpy as np
import scipy.linalg
import tensorflow as tf

from bigbigan_tf import tfgan_compat
from bigbigan_tf.evaluation import metrics


def _softmax(logits):
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def _numpy_inception_score(logits, num_splits):
  scores = []
  for split in np.array_split(logits, num_splits):
    p = _softmax(split)
    marginal = p.mean(axis=0)
    kl = np.sum(p * (np.log(p) - np.log(marginal)), axis=1)
    scores.append(np.exp(kl.mean()))
  return np.mean(scores)


def _numpy_frechet(x, y):
  mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
  cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  sqrt_product = scipy.linalg.sqrtm(cov_x @ cov_y).real
  return (np.sum((mu_x - mu_y)**2) +
          np.trace(cov_x + cov_y - 2.0 * sqrt_product))


def _numpy_kid_block(x, y):
  dim = x.shape[1]
  kernel = lambda a, b: (a @ b.T / dim + 1.0)**3
  k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
  m, n = len(x), len(y)
  return ((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) +
          (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1)) - 2.0 * k_xy.mean())


def _block_bounds(n, num_blocks):
  # TF-GAN's split: the first blocks get n // num_blocks rows, the last
  # n % num_blocks blocks one more.
  small = n // num_blocks
  sizes = ([small] * (num_blocks - n % num_blocks) +
           [small + 1] * (n % num_blocks))
  return np.concatenate([[0], np.cumsum(sizes)])


def _numpy_kid(x, y, max_block_size):
  num_blocks = math.ceil(max(len(x), len(y)) / max_block_size)
  bx, by = _block_bounds(len(x), num_blocks), _block_bounds(len(y), num_blocks)
  return np.mean([
      _numpy_kid_block(x[bx[i]:bx[i + 1]], y[by[i]:by[i + 1]])
      for i in range(num_blocks)
  ])


def _random_activations(rng, n, dim, shift=0.0):
  mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
  return rng.normal(size=(n, dim)) @ mixing + shift


class TfganCompatTest(tf.test.TestCase):

  def test_import_is_idempotent(self):
    tfgan = tfgan_compat.import_tfgan()
    estimator = tf.estimator
    self.assertIs(tfgan_compat.import_tfgan(), tfgan)
    self.assertIs(tf.estimator, estimator)  # No second stub installed.
    self.assertIs(tf.compat.v1.estimator, estimator)
    self.assertTrue(tfgan_compat.estimator_is_stub())
    self.assertTrue(callable(
        tfgan.eval.frechet_classifier_distance_from_activations))

  def test_stub_classes_cannot_be_instantiated(self):
    tfgan_compat.import_tfgan()
    with self.assertRaisesRegex(NotImplementedError, 'removed in TensorFlow'):
      tf.estimator.Estimator()


class DistanceTest(tf.test.TestCase):

  def test_frechet_distance_matches_scipy(self):
    rng = np.random.default_rng(0)
    real = _random_activations(rng, 400, 16)
    fake = _random_activations(rng, 300, 16, shift=0.3)
    expected = _numpy_frechet(real, fake)
    self.assertGreater(expected, 1.0)
    self.assertAllClose(metrics.frechet_distance(real, fake), expected,
                        rtol=1e-6)
    # float32 inputs and tensors are accepted too (computed in float64).
    self.assertAllClose(
        metrics.frechet_distance(tf.constant(real, tf.float32),
                                 fake.astype(np.float32)), expected, rtol=1e-4)
    self.assertAllClose(metrics.frechet_distance(real, real), 0.0, atol=1e-6)

  def test_inception_score_matches_numpy(self):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(250, 10)) * 3.0
    for num_splits in (1, 10):
      self.assertAllClose(
          np.mean(metrics.inception_score_splits(logits,
                                                 num_splits=num_splits)),
          _numpy_inception_score(logits, num_splits), rtol=1e-9)
    splits = metrics.inception_score_splits(logits, num_splits=10)
    self.assertEqual(splits.shape, (10,))
    self.assertTrue(np.all((splits >= 1.0) & (splits <= 10.0)))
    # One-hot-like confident predictions spread over 10 classes: IS near 10.
    confident = np.eye(10)[np.arange(200) % 10] * 50.0
    self.assertAllClose(metrics.inception_score_splits(confident, num_splits=2),
                        [10.0, 10.0], rtol=1e-3)

  def test_inception_score_rejects_too_many_splits(self):
    with self.assertRaisesRegex(ValueError, r'num_splits must be in \[1, 5\]'):
      metrics.inception_score_splits(np.zeros((5, 3)), num_splits=10)

  def test_kernel_distance_matches_numpy(self):
    rng = np.random.default_rng(2)
    real = _random_activations(rng, 300, 8)
    fake = _random_activations(rng, 200, 8, shift=0.5)
    # One block, then TF-GAN's block estimator (3 blocks).
    for max_block_size in (1024, 100):
      self.assertAllClose(
          metrics.kernel_distance(real, fake, max_block_size=max_block_size),
          _numpy_kid(real, fake, max_block_size), rtol=1e-9)
    self.assertGreater(metrics.kernel_distance(real, fake), 0.05)

  def test_dimension_mismatch(self):
    with self.assertRaisesRegex(ValueError, 'same dimension'):
      metrics.frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))


def _random_conv_classifier():
  """A fixed random conv + average-pool net: 16 features, 10 logits."""
  kernel = tf.random.stateless_normal([3, 3, 3, 16], seed=[1, 2])
  dense = tf.random.stateless_normal([16, 10], seed=[3, 4])

  def classifier_fn(images):
    hidden = tf.nn.relu(tf.nn.conv2d(images, kernel, 1, 'SAME'))
    pooled = tf.reduce_mean(hidden, axis=[1, 2])
    return {'logits': pooled @ dense, 'pool_3': pooled[:, None, None, :]}

  return classifier_fn


def _batches(images, batch_size):
  return [images[i:i + batch_size] for i in range(0, len(images), batch_size)]


class PipelineTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(3)
    # Smooth random images: low-resolution noise upsampled to 16x16.
    low = rng.uniform(-1, 1, size=(256, 4, 4, 3)).astype(np.float32)
    self.images = tf.image.resize(low, [16, 16]).numpy()
    self.classifier_fn = _random_conv_classifier()

  def test_compute_activations_truncates_and_flattens(self):
    activations = metrics.compute_activations(
        _batches(self.images, 32), self.classifier_fn, num_examples=100,
        progress=False)
    self.assertEqual(activations['logits'].shape, (100, 10))
    self.assertEqual(activations['pool_3'].shape, (100, 16))
    expected = self.classifier_fn(self.images[:100])['logits']
    self.assertAllClose(activations['logits'], expected, rtol=1e-5, atol=1e-5)

  def test_compute_activations_from_dataset(self):
    dataset = tf.data.Dataset.from_tensor_slices(self.images).batch(50)
    activations = metrics.compute_activations(
        dataset, self.classifier_fn, num_examples=256, progress=True)
    self.assertEqual(activations['pool_3'].shape, (256, 16))

  def test_compute_activations_short_iterator(self):
    with self.assertRaisesRegex(ValueError, 'ran out after 64 of'):
      metrics.compute_activations(
          _batches(self.images[:64], 32), self.classifier_fn,
          num_examples=100, progress=False)

  def test_distances_of_identical_vs_shifted_images(self):
    # The path evaluate_lib takes: classifier outputs of real and generated
    # batches, then the distances and the split scores.
    def activations(images):
      return metrics.compute_activations(
          _batches(images, 64), self.classifier_fn, num_examples=256,
          progress=False)

    real = activations(self.images)
    same = activations(self.images)
    shifted = activations(np.clip(self.images + 0.5, -1, 1))
    fid_same = metrics.frechet_distance(real['pool_3'], same['pool_3'])
    fid_shifted = metrics.frechet_distance(real['pool_3'], shifted['pool_3'])
    self.assertAllClose(fid_same, 0.0, atol=1e-4)
    self.assertGreater(fid_shifted, 100 * max(fid_same, 1e-4))
    self.assertGreater(
        metrics.kernel_distance(real['pool_3'], shifted['pool_3']),
        metrics.kernel_distance(real['pool_3'], same['pool_3']) + 1e-3)
    scores = metrics.inception_score_splits(same['logits'], num_splits=10)
    self.assertTrue(np.all((scores >= 1.0) & (scores <= 10.0)))


class _FakeInception(tf.Module):
  """Interface of TF-GAN's Inception SavedModel (as in TF-GAN's own tests).

  Its logits report the input height, so tests can see the 299 resize.
  """

  @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.float32)])
  def __call__(self, x):
    batch = tf.shape(x)[0]
    height = tf.cast(tf.shape(x)[1], tf.float32)
    return {'logits': tf.fill([batch, 1008], height),
            'pool_3': tf.ones([batch, 1, 1, 2048]) * tf.reduce_mean(x)}


class LoadInceptionTest(tf.test.TestCase):

  def _assert_unavailable_quickly(self, location):
    start = time.time()
    with self.assertRaises(metrics.ClassifierUnavailableError) as context:
      metrics.load_inception(location)
    self.assertLess(time.time() - start, 30.0)
    message = str(context.exception)
    self.assertIn(f'Inception weights could not be loaded from {location}',
                  message)
    self.assertIn('--inception=PATH', message)
    self.assertIn('tar -xzf', message)
    self.assertIn('hub.resolve', message)
    return message

  def test_missing_local_path(self):
    path = os.path.join(self.get_temp_dir(), 'no_such_inception')
    message = self._assert_unavailable_quickly(path)
    self.assertIn('no such file or directory', message)

  def test_directory_without_saved_model(self):
    message = self._assert_unavailable_quickly(self.get_temp_dir())
    self.assertIn('no saved_model.pb', message)

  def test_remote_handle_offline(self):
    if metrics._probe(metrics.INCEPTION_HANDLE, 5.0) is None:
      self.skipTest('TF Hub is reachable; this test needs no network.')
    # An empty cache directory, so a previously downloaded copy is not used.
    with mock.patch.dict(os.environ,
                         {'TFHUB_CACHE_DIR': self.create_tempdir().full_path}):
      self._assert_unavailable_quickly(metrics.INCEPTION_HANDLE)

  def test_probe_gives_up_on_a_silent_server(self):
    # A server that accepts connections but never answers, as behind a
    # firewall that swallows requests: the probe must return within its
    # timeout instead of hanging like hub.load.
    with socket.socket() as server:
      server.bind(('127.0.0.1', 0))
      server.listen(1)
      url = f'http://127.0.0.1:{server.getsockname()[1]}/inception'
      start = time.time()
      with mock.patch.dict(os.environ, {'no_proxy': '127.0.0.1'}):
        reason = metrics._probe(url, 1.0)
      self.assertLess(time.time() - start, 5.0)
    self.assertIsNotNone(reason)
    self.assertRegex(reason, 'no answer within 1 s|timed out')

  def test_local_saved_model_with_tfgan_interface(self):
    path = os.path.join(self.get_temp_dir(), 'fake_inception')
    tf.saved_model.save(_FakeInception(), path)
    classifier_fn = metrics.load_inception(path)
    images = np.full((3, 32, 32, 3), 0.5, np.float64)
    outputs = classifier_fn(images)
    self.assertEqual(outputs['logits'].shape, (3, 1008))
    self.assertEqual(outputs['pool_3'].shape, (3, 2048))
    self.assertAllEqual(outputs['logits'], np.full((3, 1008), 299.0))
    self.assertAllClose(outputs['pool_3'], np.full((3, 2048), 0.5))

  def test_local_saved_model_with_default_signature(self):
    module = tf.Module()
    module.v = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])])
    def default(images):
      batch = tf.shape(images)[0]
      return {'logits': tf.zeros([batch, 1008]),
              'pool_3': tf.fill([batch, 2048], module.v)}

    path = os.path.join(self.get_temp_dir(), 'signature_inception')
    tf.saved_model.save(module, path, signatures={'default': default})
    outputs = metrics.load_inception(path)(np.zeros((2, 8, 8, 3)))
    self.assertAllClose(outputs['pool_3'], np.full((2, 2048), 2.0))


if __name__ == '__main__':
  tf.test.main()
