"""The paper's arithmetic, checked directly against NumPy (quick tier).

BigBiGAN (Donahue & Simonyan 2019) on BigGAN (Brock et al. 2018): which pairs
D sees as real, the hinge/linear losses through the trainer's own steps, the
encoder's noise, spectral normalisation, the EMA of the weights and G's
orthogonal regulariser. Loss functions alone: tests/losses_test.py. Each test
here was checked to fail on a one-line break of the code it names.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

import testing
from bigbigan_tf import checkpoints
from bigbigan_tf import ema as ema_lib
from bigbigan_tf import losses
from bigbigan_tf import trainer as trainer_lib
from bigbigan_tf.models import layers
from bigbigan_tf.models import ops

HEADS = losses.HEADS



def _state_vars(state):
  """Non-trainable state of all networks (BN statistics, SN vectors u)."""
  nets = state.nets
  return (nets.generator.non_trainable_variables
          + nets.encoder.non_trainable_variables
          + nets.discriminator.non_trainable_variables)


def _converge_spectral_norms(net):
  """Sets every SN layer's u to its kernel's top right singular vector.

  Power iteration then leaves u (and sigma) as it is, so scores do not depend
  on how many D calls a step makes.
  """
  for layer in net._flatten_layers():  # pylint: disable=protected-access
    if isinstance(layer, layers._SpectralNorm):  # pylint: disable=protected-access
      w = layer.kernel.numpy().reshape(-1, layer.kernel.shape[-1])
      layer.sn_u.assign(np.linalg.svd(w.astype(np.float64))[2][0])


def _pairs_by_hand(state, batch):
  """D's scores on (x, E(x)) and (G(z), z), z and noise drawn as the trainer
  draws them; the networks' other state (BN statistics) is left as it was.

  Returns:
    (real scores, fake scores), {head: np.ndarray [B]} each.
  """
  nets = state.nets
  _converge_spectral_norms(nets.generator)
  _converge_spectral_norms(nets.discriminator)
  saved = [tf.identity(v) for v in _state_vars(state)]
  rng = tf.random.Generator.from_state(tf.identity(state.rng.state),
                                       state.rng.algorithm)
  x_e = batch['image']
  b = x_e.shape[0]
  z = rng.normal([b, nets.generator.z_dim])
  noise = rng.normal([b, nets.encoder.z_dim])
  x = ops.downsample_to(x_e, nets.generator.resolution)
  z_hat = nets.encoder(x_e, training=True, noise=noise)['z_sample']
  x_fake = nets.generator(z, training=True)
  real = nets.discriminator(x, z_hat, training=True)
  fake = nets.discriminator(x_fake, z, training=True)
  for v, value in zip(_state_vars(state), saved):
    v.assign(value)
  return ({h: real[h].numpy() for h in HEADS},
          {h: fake[h].numpy() for h in HEADS})


def _hinge(real, fake):
  return np.mean([np.mean(np.maximum(0, 1 - real[h]))
                  + np.mean(np.maximum(0, 1 + fake[h])) for h in HEADS])


@functools.lru_cache(maxsize=None)
def _shared():
  """One tiny TrainState, its Trainer and a batch of real digits.

  Built once per test process (a TrainState and each traced step cost
  seconds); every check below holds whatever the weights are.
  """
  # BigGAN's beta (off in the configs), so the trainer applies it.
  config = testing.tiny_config(**{'optim.g_ortho_reg': 1e-4,
                                  'optim.d_lr': 1e-3})
  state = checkpoints.TrainState(config)
  trainer = trainer_lib.Trainer(state, tf.distribute.get_strategy())
  return state, trainer, testing.tiny_batch(config)


class TrainerPairsTest(tf.test.TestCase):
  """Real pairs are (x, E(x)), fake pairs (G(z), z), in the trainer's steps.

  The fused step (`_d_then_eg_step`) is checked equal to `_d_step` then
  `_eg_step` in tests/train_test.py.
  """

  def test_d_step_scores_x_and_e_of_x_as_real_g_of_z_and_z_as_fake(self):
    state, trainer, batch = _shared()
    real, fake = _pairs_by_hand(state, batch)
    # Real and fake scores differ, so a swap cannot go unseen.
    for h in HEADS:
      self.assertGreater(abs(real[h].mean() - fake[h].mean()), 1e-3, h)
    metrics = trainer._d_step(batch)  # pylint: disable=protected-access
    for h in HEADS:
      self.assertAllClose(metrics[f'd/real_{h}'], real[h].mean(), rtol=1e-5,
                          atol=1e-5, msg=h)
      self.assertAllClose(metrics[f'd/fake_{h}'], fake[h].mean(), rtol=1e-5,
                          atol=1e-5, msg=h)
    self.assertAllClose(metrics['d_loss'], _hinge(real, fake), atol=1e-5)

  def test_eg_step_loss_is_mean_real_minus_mean_fake(self):
    state, trainer, batch = _shared()
    real, fake = _pairs_by_hand(state, batch)
    metrics = trainer._eg_step(batch)  # pylint: disable=protected-access
    want = {h: real[h].mean() - fake[h].mean() for h in HEADS}
    for h in HEADS:
      self.assertAllClose(metrics[f'eg_loss_{h}'], want[h], rtol=1e-5,
                          atol=1e-5, msg=h)
    self.assertAllClose(metrics['eg_loss'], np.mean(list(want.values())),
                        atol=1e-5)

  def test_d_learns_to_score_real_pairs_above_fake_pairs(self):
    # 40 D steps on one batch of real digits (fresh z and noise each step),
    # E and G fixed. Each head starts wrong (real below fake: a head whose
    # random weights already put real above fake has its score layer
    # negated), so only learning in the paper's direction passes.
    state, trainer, batch = _shared()
    d = state.nets.discriminator
    real, fake = _pairs_by_hand(state, batch)
    for h, net in zip(HEADS, (d.f, d.h, d.j)):
      if real[h].mean() > fake[h].mean():
        net.score.kernel.assign(-net.score.kernel)
        net.score.bias.assign(-net.score.bias)
    real0, fake0 = _pairs_by_hand(state, batch)
    for _ in range(40):
      trainer._d_step(batch)  # pylint: disable=protected-access
    real, fake = _pairs_by_hand(state, batch)  # z, noise not seen in training
    for h in HEADS:
      gap0 = real0[h].mean() - fake0[h].mean()
      gap = real[h].mean() - fake[h].mean()
      self.assertLessEqual(gap0, 0.0, h)
      # The x and joint heads separate at once; z = E(x) vs z ~ N(0, I) is
      # subtler for H at initialisation (gaps of 0.46-1.01 seen).
      self.assertGreater(gap, 1.0 if h != 'score_z' else 0.0,
                         f'{h}: real - fake {gap0:.3f} -> {gap:.3f}')
    self.assertLess(_hinge(real, fake), _hinge(real0, fake0))


class EncoderNoiseTest(tf.test.TestCase):

  def test_z_is_mu_plus_softplus_sigma_hat_times_eps(self):
    state, _, batch = _shared()
    e, x = state.nets.encoder, batch['image']
    rng = np.random.default_rng(0)
    eps = rng.standard_normal((x.shape[0], e.z_dim)).astype(np.float32)
    out = e(x, training=False, noise=eps)
    # sigma_hat is the encoder's last linear output, read off by hand.
    pooled = out['avepool_feat']
    head = e.head_out(e.head(pooled, training=False)) + e.skip_out(pooled)
    mu, sigma_hat = head[:, :e.z_dim].numpy(), head[:, e.z_dim:].numpy()
    softplus = np.log1p(np.exp(sigma_hat))
    self.assertAllClose(out['z_mean'], mu, atol=1e-5)
    self.assertAllClose(out['z_stdev'], softplus, atol=1e-5)
    self.assertAllClose(out['z_sample'], mu + softplus * eps, atol=1e-5)
    # Negative sigma_hat occurs, where softplus and e.g. exp or |.| part.
    self.assertLess(sigma_hat.min(), 0.0)


def _power_iterate(layer, x, n=60):
  for _ in range(n):
    layer(x, training=True)


class SpectralNormTest(tf.test.TestCase):

  def test_layer_outputs_use_the_kernel_over_its_top_singular_value(self):
    rng = np.random.default_rng(0)
    dense = layers.SNDense(6)
    x = rng.standard_normal((4, 10)).astype(np.float32)
    dense(x)
    dense.kernel.assign(3.0 * rng.standard_normal((10, 6)))
    dense.bias.assign(rng.standard_normal(6))
    _power_iterate(dense, x)
    w = dense.kernel.numpy()
    w_sn = w / np.linalg.svd(w, compute_uv=False)[0]
    self.assertAllClose(np.linalg.svd(w_sn, compute_uv=False)[0], 1.0)
    self.assertAllClose(dense(x), x @ w_sn + dense.bias.numpy(), atol=1e-3)

    conv = layers.SNConv2D(5, 3, use_bias=False)
    x = rng.standard_normal((1, 6, 6, 4)).astype(np.float32)
    conv(x)
    conv.kernel.assign(3.0 * rng.standard_normal((3, 3, 4, 5)))
    _power_iterate(conv, x)
    w = conv.kernel.numpy()
    sigma = np.linalg.svd(w.reshape(-1, 5), compute_uv=False)[0]
    # The centre pixel's output: a [36] patch times the [36, 5] kernel.
    patch = x[0, 2:5, 2:5, :].reshape(-1)
    self.assertAllClose(conv(x)[0, 3, 3], patch @ w.reshape(-1, 5) / sigma,
                        atol=1e-3)

  def test_every_kernel_of_g_and_d_is_spectrally_normalised(self):
    # Both papers: SN in all of G's and D's layers (E has none).
    nets = _shared()[0].nets
    for net in (nets.generator, nets.discriminator):
      kernels = [layer for layer in net._flatten_layers()  # pylint: disable=protected-access
                 if getattr(layer, 'kernel', None) is not None]
      self.assertGreater(len(kernels), 5)
      for layer in kernels:
        self.assertIsInstance(layer, layers._SpectralNorm, layer.path)  # pylint: disable=protected-access


class _Net(keras.Model):

  def __init__(self):
    super().__init__()
    self.dense = keras.layers.Dense(3)
    self.bn = keras.layers.BatchNormalization()

  def call(self, x, training=False):
    return self.bn(self.dense(x), training=training)


class EmaTest(tf.test.TestCase):

  def _pair(self):
    live, average = _Net(), _Net()
    x = np.ones((2, 4), np.float32)
    live(x)
    average(x)
    rng = np.random.default_rng(0)
    for net in (live, average):
      for v in net.weights:
        v.assign(rng.standard_normal(v.shape))
    return ema_lib.EMA(live, average)

  def test_average_moves_one_minus_decay_towards_the_live_weights(self):
    ema = self._pair()
    for decay in (0.9999, 0.75):
      live = [v.numpy() for v in ema.live.trainable_variables]
      avg = [v.numpy() for v in ema.average.trainable_variables]
      ema.update(tf.constant(decay))
      for a, w, a_new in zip(avg, live, ema.average.trainable_variables):
        self.assertAllClose(a_new, decay * a + (1 - decay) * w, atol=1e-6,
                            msg=f'decay {decay}')
    # decay 0 copies; the live network never moves.
    live = [v.numpy() for v in ema.live.trainable_variables]
    ema.update(tf.constant(0.0))
    for w, a, w_after in zip(live, ema.average.trainable_variables,
                             ema.live.trainable_variables):
      self.assertAllClose(a, w)
      self.assertAllEqual(w_after, w)

  def test_state_is_copied_not_averaged(self):
    ema = self._pair()
    ema.copy_state()
    for w, a in zip(ema.live.non_trainable_variables,
                    ema.average.non_trainable_variables):
      self.assertAllEqual(a, w)

  def test_trainer_decay_starts_at_ema_start(self):
    config = testing.tiny_config(**{'train.ema_decay': 0.9999,
                                    'train.ema_start': 5})
    for step, want in ((0, 0.0), (4, 0.0), (5, 0.9999), (100, 0.9999)):
      decay = trainer_lib._ema_decay(config, tf.constant(step, tf.int64))  # pylint: disable=protected-access
      self.assertAllClose(decay, want, msg=f'step {step}')


class OrthogonalRegularizationTest(tf.test.TestCase):
  """BigGAN eq. 3: R = beta * ||W^T W (.) (1 - I)||_F^2, W = [fan_in, out]."""

  def test_value_and_gradient_against_numpy(self):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    m = w.reshape(-1, 4).astype(np.float64)
    mask = 1 - np.eye(4)
    off = (m.T @ m) * mask
    beta = 1e-2
    var = tf.Variable(w)
    with tf.GradientTape() as tape:
      value = losses.orthogonal_regularization([var], weight=beta)
    self.assertAllClose(value, beta * np.sum(off ** 2), rtol=1e-5)
    # d/dW sum(((W^T W) * M)^2) = 4 W ((W^T W) * M) for symmetric M.
    self.assertAllClose(tape.gradient(value, var),
                        (4 * beta * m @ off).reshape(w.shape), rtol=1e-4,
                        atol=1e-6)
    # Only off-diagonal terms: scaling columns (W^T W's diagonal) is free.
    q, _ = np.linalg.qr(rng.standard_normal((18, 4)))
    cols = (q * np.array([1.0, 2.0, 3.0, 4.0])).astype(np.float32)
    self.assertAllClose(losses.orthogonal_regularization([cols], weight=1.0),
                        0.0, atol=1e-4)

  def test_trainer_update_lowers_the_regulariser(self):
    state, trainer, _ = _shared()
    # G's kernels start orthogonal (R = 0): make them not.
    rng = np.random.default_rng(5)
    for v in state.g_vars:
      if len(v.shape) >= 2:
        v.assign(0.2 * rng.standard_normal(v.shape))
    zeros = lambda vs: [tf.zeros_like(v) for v in vs]  # pylint: disable=unnecessary-lambda-assignment
    before = float(losses.orthogonal_regularization(state.g_vars, weight=1.0))
    beta = state.config.optim.g_ortho_reg
    ortho = trainer._eg_apply(zeros(state.g_vars), zeros(state.e_vars))  # pylint: disable=protected-access
    self.assertAllClose(ortho, beta * before, rtol=1e-5)
    after = float(losses.orthogonal_regularization(state.g_vars, weight=1.0))
    self.assertLess(after, before)


if __name__ == '__main__':
  tf.test.main()
