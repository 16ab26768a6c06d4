"""bigbigan_tf.evaluation.prdc against brute-force definitions from the two papers."""

import numpy as np
import tensorflow as tf

from bigbigan_tf.evaluation import prdc as prdc_lib


def _reference(real, fake, k):
  """Loops over points, Euclidean distances, sorted neighbour lists."""
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)

  def dist(a, b):
    return float(np.sqrt(np.sum((a - b) ** 2)))

  def radius(points, i):
    others = sorted(dist(points[i], points[j]) for j in range(len(points))
                    if j != i)
    return others[k - 1]

  real_r = [radius(real, i) for i in range(len(real))]
  fake_r = [radius(fake, j) for j in range(len(fake))]
  # Kynkaenniemi et al.: f(phi, Phi) = 1 if some phi' has
  # |phi - phi'| <= |phi' - NN_k(phi')|.
  precision = np.mean([any(dist(y, x) <= r for x, r in zip(real, real_r))
                       for y in fake])
  recall = np.mean([any(dist(x, y) <= s for y, s in zip(fake, fake_r))
                    for x in real])
  # Naeem et al.: 1(Y_j in B(X_i, NND_k(X_i))), as their code: strict.
  density = sum(dist(y, x) < r for y in fake
                for x, r in zip(real, real_r)) / (k * len(fake))
  coverage = np.mean([any(dist(x, y) < r for y in fake)
                      for x, r in zip(real, real_r)])
  return {'precision': precision, 'recall': recall, 'density': density,
          'coverage': coverage}


class PrdcTest(tf.test.TestCase):

  def assert_matches_reference(self, real, fake, k, **kwargs):
    got = prdc_lib.prdc(real, fake, k=k, **kwargs)
    want = _reference(real, fake, k)
    self.assertEqual(set(got), set(want))
    for key in want:
      self.assertAlmostEqual(got[key], want[key], places=9, msg=key)
    return got

  def test_hand_computed_one_dimensional_case(self):
    # k = 1. Real radii: 1 each; fake radii: 9.5 each. Fake 0.5 lies in the
    # balls of reals 0 and 1, fake 10 in none: precision 1/2, density
    # (2 + 0) / 2 = 1; the fake ball of 0.5 holds every real: recall 1; the
    # nearest fake is closer than the radius for reals 0 and 1: coverage 1/2.
    real = np.array([[0.], [1.], [2.], [3.]])
    fake = np.array([[0.5], [10.]])
    got = self.assert_matches_reference(real, fake, 1)
    self.assertEqual(got, {'precision': 0.5, 'recall': 1.0, 'density': 1.0,
                           'coverage': 0.5})

  def test_random_sets_any_block_size(self):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(37, 3))
    fake = rng.normal(0.3, 1.2, size=(29, 3))
    for k in (1, 3, 5):
      for block in (1, 7, 29, 37, 100):  # 7 divides neither set size.
        self.assert_matches_reference(real, fake, k, block_size=block)

  def test_identical_sets(self):
    real = np.random.default_rng(1).normal(size=(40, 4))
    got = self.assert_matches_reference(real, real.copy(), 5, block_size=16)
    self.assertEqual(got, {'precision': 1.0, 'recall': 1.0, 'density': 1.0,
                           'coverage': 1.0})

  def test_disjoint_sets(self):
    rng = np.random.default_rng(2)
    real = rng.normal(size=(30, 2))
    fake = rng.normal(size=(20, 2)) + 100.0
    got = self.assert_matches_reference(real, fake, 5, block_size=8)
    self.assertEqual(got, {'precision': 0.0, 'recall': 0.0, 'density': 0.0,
                           'coverage': 0.0})

  def test_duplicates_and_ties_on_integer_points(self):
    # Exact ties: integer grid points, duplicated fakes; the closed (P, R)
    # and open (D, C) balls then differ, as in the papers' code.
    real = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 2]], np.float64)
    fake = np.array([[0, 0], [0, 0], [1, 2], [3, 3]], np.float64)
    for k in (1, 2, 3):
      self.assert_matches_reference(real, fake, k, block_size=3)

  def test_float32_agrees_with_float64(self):
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(200, 16)), rng.normal(size=(150, 16))
    want = prdc_lib.prdc(real, fake)
    got = prdc_lib.prdc(real.astype(np.float32), fake.astype(np.float32),
                        block_size=64)
    for key in want:
      self.assertAlmostEqual(got[key], want[key], delta=0.02, msg=key)

  def test_k_not_below_the_set_sizes_is_refused(self):
    real, fake = np.zeros((10, 2)), np.ones((5, 2))
    with self.assertRaisesRegex(ValueError, r'k=5 .* 10 real and 5 fake.*'
                                r'Lower k'):
      prdc_lib.prdc(real, fake, k=5)
    prdc_lib.prdc(real, fake, k=4)  # The largest k for 5 points.

  def test_bad_inputs_are_refused(self):
    with self.assertRaisesRegex(ValueError, r'\(10, 2\) and \(10, 3\)'):
      prdc_lib.prdc(np.zeros((10, 2)), np.zeros((10, 3)))
    with self.assertRaisesRegex(ValueError, 'NaN'):
      prdc_lib.prdc(np.full((10, 2), np.nan), np.zeros((10, 2)))
    with self.assertRaisesRegex(ValueError, 'k >= 1'):
      prdc_lib.prdc(np.zeros((10, 2)), np.zeros((10, 2)), k=0)


if __name__ == '__main__':
  tf.test.main()
