"""The linear-probe protocol on synthetic features with known answers."""

import json

import numpy as np
import tensorflow as tf

from bigbigan_tf.evaluation import linear_probe


def _clusters(rng, centers, n):
  """n points around the given class centres (unit noise), with labels."""
  labels = rng.integers(0, len(centers), size=n)
  features = centers[labels] + rng.normal(size=(n, centers.shape[1]))
  return features.astype(np.float32), labels


class LinearProbeTest(tf.test.TestCase):

  def test_separable_clusters_reach_full_accuracy(self):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, 64)) * 1.5
    train_x, train_y = _clusters(rng, centers, 2000)
    eval_x, eval_y = _clusters(rng, centers, 1000)
    # Far-from-zero mean and large scale: standardisation must handle it.
    train_x, eval_x = train_x * 30.0 + 100.0, eval_x * 30.0 + 100.0
    result = linear_probe.linear_probe(
        train_x, train_y, eval_x, eval_y, num_classes=10, epochs=30)
    self.assertGreater(result['top1'], 0.98)
    self.assertGreater(result['top5'], 0.999)
    self.assertEqual(result['top5_k'], 5)
    self.assertIn(result['learning_rate'], linear_probe.PAPER_LEARNING_RATES)
    self.assertEqual([entry['learning_rate'] for entry in result['sweep']],
                     list(linear_probe.PAPER_LEARNING_RATES))
    selected = [e for e in result['sweep']
                if e['learning_rate'] == result['learning_rate']][0]
    self.assertEqual(result['train_val_top1'], selected['train_val_top1'])
    self.assertEqual(result['train_val_top1'],
                     max(e['train_val_top1'] for e in result['sweep']))
    self.assertBetween(result['epoch'], 1, 30)
    for entry in result['sweep']:
      self.assertBetween(entry['best_epoch'], 1, entry['epochs_run'])
    # 10000 > 20% of 2000: the held-out set is clamped to 400.
    self.assertEqual(result['num_train_val'], 400)
    self.assertEqual(result['num_train'], 1600)
    self.assertEqual(result['num_eval'], 1000)
    json.dumps(result)  # eval/ writes it as JSON.

  def test_noise_features_give_chance_accuracy(self):
    rng = np.random.default_rng(1)
    train_x = rng.normal(size=(3000, 256)).astype(np.float32)
    eval_x = rng.normal(size=(3000, 256)).astype(np.float32)
    train_y = rng.integers(0, 10, size=3000)
    eval_y = rng.integers(0, 10, size=3000)
    result = linear_probe.linear_probe(
        train_x, train_y, eval_x, eval_y, num_classes=10,
        train_val_size=0.2, epochs=20)
    # Standard error of an accuracy near 0.1 on 3000 examples: ~0.0055.
    self.assertAllClose(result['top1'], 0.1, atol=0.03)
    self.assertAllClose(result['top5'], 0.5, atol=0.04)
    self.assertEqual(result['num_train_val'], 600)

  def test_deterministic_given_seed(self):
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(5, 32)) * 0.4  # Overlapping: not all correct.
    train_x, train_y = _clusters(rng, centers, 600)
    eval_x, eval_y = _clusters(rng, centers, 300)
    run = lambda seed: linear_probe.linear_probe(
        train_x, train_y, eval_x, eval_y, num_classes=5, train_val_size=100,
        epochs=15, batch_size=64, seed=seed)
    first, second = run(0), run(0)
    self.assertEqual(first, second)
    self.assertBetween(first['top1'], 0.4, 0.99)
    self.assertEqual(first['num_train_val'], 100)

  def test_few_classes_top_k(self):
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(3, 16)) * 2.0
    train_x, train_y = _clusters(rng, centers, 300)
    eval_x, eval_y = _clusters(rng, centers, 100)
    result = linear_probe.linear_probe(
        train_x, train_y, eval_x, eval_y, num_classes=3, epochs=5,
        learning_rates=(1e-3,))
    self.assertEqual(result['top5_k'], 3)
    self.assertEqual(result['top5'], 1.0)
    self.assertEqual(result['learning_rate'], 1e-3)
    self.assertLen(result['sweep'], 1)

  def test_sweep_on_4096_d(self):
    rng = np.random.default_rng(4)
    centers = rng.normal(size=(10, 4096)) * 0.05
    train_x, train_y = _clusters(rng, centers, 4000)
    eval_x, eval_y = _clusters(rng, centers, 500)
    result = linear_probe.linear_probe(
        train_x, train_y, eval_x, eval_y, num_classes=10, epochs=20)
    self.assertGreater(result['top1'], 0.5)

  def test_rejects_bad_labels(self):
    features = np.zeros((10, 4), np.float32)
    with self.assertRaisesRegex(ValueError,
                                r'must lie in \[0, num_classes=3\)'):
      linear_probe.linear_probe(features, np.arange(10), features,
                                np.zeros(10, int), num_classes=3)
    with self.assertRaisesRegex(ValueError, 'fraction in'):
      linear_probe.linear_probe(features, np.zeros(10, int), features,
                                np.zeros(10, int), num_classes=3,
                                train_val_size=1.5)


if __name__ == '__main__':
  tf.test.main()
