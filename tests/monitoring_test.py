"""Singular values of the SN layers, and the collapse rule on synthetic series."""

import numpy as np
import tensorflow as tf

from bigbigan_tf import models
from bigbigan_tf import monitoring
from bigbigan_tf.configs import tiny
from bigbigan_tf.models import layers


def _alarm_steps(series, **rule):
  detector = monitoring.CollapseDetector(**rule)
  return [a.step for step, value in enumerate(series)
          for a in detector.update(step, {'s': value})]


class CollapseDetectorTest(tf.test.TestCase):

  def test_steady_series_never_warns(self):
    self.assertEmpty(_alarm_steps(np.full(500, 1.7)))

  def test_noisy_but_steady_series_never_warns(self):
    for seed in range(5):
      rng = np.random.default_rng(seed)
      # 20% Gaussian noise, and uniform noise of +/- 40%.
      self.assertEmpty(_alarm_steps(1.0 + 0.2 * rng.normal(size=2000)), seed)
      self.assertEmpty(_alarm_steps(rng.uniform(0.6, 1.4, size=2000)), seed)
      # A gap around zero with noise of 0.05.
      self.assertEmpty(_alarm_steps(0.05 * rng.normal(size=2000)), seed)

  def test_spike_warns_at_its_step_only(self):
    rng = np.random.default_rng(0)
    series = 1.0 + 0.05 * rng.normal(size=300)
    series[200] = 3.0
    self.assertEqual(_alarm_steps(series), [200])

  def test_drop_warns(self):
    series = np.ones(100)
    series[60:] = 0.1
    self.assertEqual(_alarm_steps(series), [60])

  def test_slow_growth_never_warns(self):
    # BigGAN's sigma_0 grow through training: 1 -> 4 over 1000 logs, noisy,
    # and an exponential doubling every 100 logs.
    rng = np.random.default_rng(1)
    linear = np.linspace(1, 4, 1000) * (1 + 0.03 * rng.normal(size=1000))
    self.assertEmpty(_alarm_steps(linear))
    self.assertEmpty(_alarm_steps(2.0 ** (np.arange(500) / 100)))

  def test_explosion_after_growth_warns_once(self):
    growth = np.linspace(1, 2, 300)
    explosion = 2 * 1.5 ** np.arange(1, 30)
    steps = _alarm_steps(np.concatenate([growth, explosion]))
    self.assertEqual(steps[0], 300)
    # One warning per excursion: the rising values stay outside the range.
    self.assertLen(steps, 1)

  def test_warmup(self):
    series = [1.0] * 9 + [50.0]
    self.assertEmpty(_alarm_steps(series, warmup=10))
    self.assertEqual(_alarm_steps([1.0] * 10 + [50.0], warmup=10), [10])

  def test_alarm_message_names_step_signal_and_checkpoint(self):
    detector = monitoring.CollapseDetector()
    for step in range(10):
      self.assertEmpty(detector.update(step, {'sv/generator/linear': 1.0}))
    (alarm,) = detector.update(10, {'sv/generator/linear': 9.0})
    message = monitoring.describe(alarm, checkpoint='/w/checkpoints/ckpt-5')
    for part in ('step 10', 'sv/generator/linear', 'rose to 9',
                 '/w/checkpoints/ckpt-5', 'Training continues'):
      self.assertIn(part, message)

  def test_bad_constants_are_refused(self):
    with self.assertRaisesRegex(ValueError, 'warmup=30, window=20'):
      monitoring.CollapseDetector(warmup=30, window=20)

  def test_collapse_signals(self):
    metrics = {'d/real_score_x': 1.0, 'd/fake_score_x': -0.5,
               'd/real_score_z': 0.2, 'd/fake_score_z': 0.1,
               'd/real_score_xz': 0.0, 'd/fake_score_xz': 0.0}
    signals = monitoring.collapse_signals(
        metrics, {'generator': {'linear': 2.0}})
    self.assertEqual(signals, {'d_gap/score_x': 1.5,
                               'd_gap/score_z': 0.2 - 0.1,
                               'd_gap/score_xz': 0.0,
                               'sv/generator/linear': 2.0})


class SingularValuesTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.nets = models.build_networks(tiny.get_config().model)

  def test_every_sn_layer_of_g_and_d_by_path(self):
    svs = monitoring.singular_values(
        {'generator': self.nets.generator,
         'discriminator': self.nets.discriminator})
    g, d = svs['generator'], svs['discriminator']
    for path in ('linear', 'block0/conv1', 'block0/cbn1/gain', 'out_conv'):
      self.assertIn(path, g)
    for path in ('F/block0/conv1', 'F/score', 'H/mlp/proj', 'J/score'):
      self.assertIn(path, d)
    # Every SNDense / SNConv2D kernel of the network is covered once.
    def sn_kernels(net):
      return sum(1 for layer in net._flatten_layers(include_self=False)
                 if isinstance(layer, (layers.SNDense, layers.SNConv2D)))
    self.assertLen(g, sn_kernels(self.nets.generator))
    self.assertLen(d, sn_kernels(self.nets.discriminator))
    scalars = monitoring.summary_scalars(svs)
    self.assertEqual(scalars['sv_max/generator'], max(g.values()))
    self.assertEqual(scalars['sv/discriminator/F/score'], d['F/score'])

  def test_estimate_converges_to_the_largest_singular_value(self):
    layer = monitoring.spectral_norm_layers(
        self.nets.discriminator)['F/block0/conv1']
    kernel = layer.kernel.numpy()
    sigma = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]),
                          compute_uv=False)[0]
    before = monitoring.singular_values({'d': self.nets.discriminator})
    self.assertLessEqual(before['d']['F/block0/conv1'], sigma * (1 + 1e-5))
    for _ in range(200):  # Power iterations, as training does them.
      layer.normalized_kernel(training=True)
    after = monitoring.singular_values({'d': self.nets.discriminator})
    self.assertAllClose(after['d']['F/block0/conv1'], sigma, rtol=1e-3)



class EncoderNoiseTest(tf.test.TestCase):

  def test_spread_and_sigma_against_numpy_and_bn_untouched(self):
    config = tiny.get_config()
    images = np.random.default_rng(0).uniform(
        -1, 1, (6, config.model.encoder_resolution,
                config.model.encoder_resolution, 3)).astype(np.float32)
    for stochastic in (True, False):
      config.model.encoder.stochastic = stochastic
      encoder = models.build_networks(config.model).encoder
      # Batch-norm statistics (non_trainable_weights leave out the noise's
      # SeedGenerator state, which a call may advance).
      before = [v.numpy().copy() for v in encoder.non_trainable_weights]
      signals = monitoring.encoder_noise(encoder, images)
      out = encoder(images, training=False)
      mu, sigma = out['z_mean'].numpy(), out['z_stdev'].numpy()
      self.assertAllClose(signals['encoder/mu_spread'],
                          np.std(mu.astype(np.float64), axis=0).mean())
      if stochastic:
        self.assertAllClose(signals['encoder/sigma_mean'], sigma.mean())
        self.assertAllClose(signals['encoder/sigma_to_mu_spread'],
                            sigma.mean() / signals['encoder/mu_spread'])
      else:
        # A deterministic E's sigma is unused: not reported.
        self.assertEqual(set(signals), {'encoder/mu_spread'})
      for b, v in zip(before, encoder.non_trainable_weights):
        self.assertAllEqual(b, v.numpy())

if __name__ == '__main__':
  tf.test.main()
