"""Loss values against NumPy written out by hand."""

import numpy as np
import tensorflow as tf

from bigbigan_tf import losses


def _scores(rng, batch):
  return {h: rng.standard_normal(batch).astype(np.float32) * 2.0
          for h in losses.HEADS}


class LossesTest(tf.test.TestCase):

  def test_discriminator_hinge(self):
    rng = np.random.default_rng(0)
    real, fake = _scores(rng, 7), _scores(rng, 7)
    loss, per_head = losses.discriminator_loss(real, fake)
    expected = {}
    for h in losses.HEADS:
      expected[h] = (np.mean(np.maximum(0.0, 1.0 - real[h]))
                     + np.mean(np.maximum(0.0, 1.0 + fake[h])))
      self.assertAllClose(per_head['d_loss_' + h], expected[h], rtol=1e-6)
    self.assertAllClose(loss, sum(expected.values()) / 3.0, rtol=1e-6)

  def test_hand_values(self):
    real = {h: np.array([2.0, 0.5, -1.0], np.float32) for h in losses.HEADS}
    fake = {h: np.array([-2.0, 0.0, 1.0], np.float32) for h in losses.HEADS}
    # real: relu(1 - s) = [0, 0.5, 2] -> 2.5 / 3; fake: relu(1 + s) =
    # [0, 1, 2] -> 3 / 3.
    d_loss, _ = losses.discriminator_loss(real, fake)
    self.assertAllClose(d_loss, 2.5 / 3 + 1.0)
    # E/G: mean(real) - mean(fake) = 0.5 - (-1/3).
    eg_loss, _ = losses.encoder_generator_loss(real, fake)
    self.assertAllClose(eg_loss, 0.5 + 1.0 / 3)

  def test_encoder_generator_linear(self):
    rng = np.random.default_rng(1)
    real, fake = _scores(rng, 5), _scores(rng, 5)
    loss, per_head = losses.encoder_generator_loss(real, fake)
    expected = [np.mean(real[h]) - np.mean(fake[h]) for h in losses.HEADS]
    self.assertAllClose(loss, np.mean(expected), rtol=1e-6)
    self.assertAllClose(per_head['eg_loss_score_xz'], expected[2], rtol=1e-6)

  def test_global_batch_scaling_sums_to_the_global_mean(self):
    rng = np.random.default_rng(2)
    real, fake = _scores(rng, 8), _scores(rng, 8)
    full, _ = losses.discriminator_loss(real, fake)
    halves = [{h: v[i * 4:(i + 1) * 4] for h, v in s.items()}
              for s in (real, fake) for i in range(2)]
    part0, _ = losses.discriminator_loss(halves[0], halves[2],
                                         global_batch_size=8)
    part1, _ = losses.discriminator_loss(halves[1], halves[3],
                                         global_batch_size=8)
    self.assertAllClose(part0 + part1, full, rtol=1e-6)

  def test_orthogonal_regularization(self):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 3, 4, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    m = w.reshape(-1, 5)
    gram = m.T @ m
    expected = 1e-4 * np.sum((gram * (1 - np.eye(5))) ** 2)
    self.assertAllClose(
        losses.orthogonal_regularization([w, b], weight=1e-4), expected,
        rtol=1e-5)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    self.assertAllClose(losses.orthogonal_regularization(
        [q.astype(np.float32)], weight=1.0), 0.0, atol=1e-5)
    self.assertEqual(float(losses.orthogonal_regularization([w], weight=0.0)),
                     0.0)


if __name__ == '__main__':
  tf.test.main()
