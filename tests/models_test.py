"""Shapes, ranges, parameter counts and spectral norm of the networks."""

import os
import random
import threading
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from bigbigan_tf.configs import imagenet128
from bigbigan_tf.configs import tiny
from bigbigan_tf.models import build_networks
from bigbigan_tf.models import initial_values_from
from bigbigan_tf.models import discriminator as disc_lib
from bigbigan_tf.models import encoder as enc_lib
from bigbigan_tf.models import generator as gen_lib
from bigbigan_tf.models import layers
from bigbigan_tf.models import revnet


def _count(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


class GeneratorTest(tf.test.TestCase):

  def test_shapes_and_range_at_every_resolution(self):
    rng = np.random.default_rng(0)
    for res in (32, 64, 128, 256):
      with self.subTest(resolution=res):
        attention = {32: 16, 64: 32, 128: 64, 256: 64}[res]
        g = gen_lib.Generator(resolution=res, z_dim=20, ch=2,
                              attention_resolution=attention, embed_dim=4)
        z = rng.standard_normal((2, 20)).astype(np.float32)
        for training in (True, False):
          x = g(z, training=training).numpy()
          self.assertEqual(x.shape, (2, res, res, 3))
          self.assertEqual(x.dtype, np.float32)
          self.assertLessEqual(x.max(), 1.0)
          self.assertGreaterEqual(x.min(), -1.0)
          self.assertGreater(x.std(), 0.0)
        # One self-attention layer, after the block at its resolution.
        self.assertIsInstance(g.attention_layer, layers.SelfAttention)
        self.assertEqual(4 * 2 ** (g.attention_after + 1), attention)

  def test_hierarchical_z_chunks(self):
    self.assertEqual(gen_lib.z_chunk_sizes(120, 5), [20] * 6)
    self.assertEqual(gen_lib.z_chunk_sizes(16, 3), [4, 4, 4, 4])
    self.assertEqual(gen_lib.z_chunk_sizes(10, 3), [3, 3, 2, 2])
    # Each block's conditional BN maps (chunk + embedding) to its channels,
    # with no bias (BigGAN).
    g = gen_lib.Generator(resolution=32, z_dim=16, ch=2, embed_dim=4)
    g(np.zeros((1, 16), np.float32))
    for block in g.blocks:
      for cbn in (block.bn1, block.bn2):
        self.assertEqual(cbn.gain.kernel.shape[0], 4 + 4)
        self.assertIsNone(cbn.gain.bias)
        self.assertIsNone(cbn.offset.bias)

  def test_every_block_sees_its_own_z_chunk(self):
    g = gen_lib.Generator(resolution=32, z_dim=16, ch=4)
    z = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    base = g(z).numpy()
    for chunk in range(4):
      z2 = z.copy()
      z2[:, 4 * chunk:4 * chunk + 4] += 1.0
      self.assertGreater(np.abs(g(z2).numpy() - base).max(), 1e-4,
                         f'chunk {chunk} has no effect')

  def test_unsupported_resolution(self):
    with self.assertRaisesRegex(ValueError, 'resolution 48'):
      gen_lib.Generator(resolution=48, z_dim=20, ch=2)

  def test_channel_multipliers_set_each_blocks_width(self):
    g = gen_lib.Generator(resolution=32, z_dim=16, ch=4,
                          channel_multipliers=(4, 2, 1))
    x = g(np.zeros((2, 16), np.float32))
    self.assertEqual(x.shape, (2, 32, 32, 3))
    self.assertEqual(g.base_channels, 16)
    self.assertEqual([b.conv2.filters for b in g.blocks], [16, 8, 4])
    with self.assertRaisesRegex(ValueError, '3 blocks'):
      gen_lib.Generator(resolution=32, z_dim=16, ch=4,
                        channel_multipliers=(4, 2))


class DiscriminatorTest(tf.test.TestCase):

  def test_shapes_at_every_resolution(self):
    rng = np.random.default_rng(0)
    for res in (32, 64, 128, 256):
      with self.subTest(resolution=res):
        d = disc_lib.Discriminator(resolution=res, ch=2,
                                   attention_resolution=16, h_width=8,
                                   h_depth=2, j_width=8, j_depth=2)
        x = rng.uniform(-1, 1, (3, res, res, 3)).astype(np.float32)
        z = rng.standard_normal((3, 20)).astype(np.float32)
        scores = d(x, z, training=True)
        self.assertEqual(set(scores), {'score_x', 'score_z', 'score_xz'})
        for s in scores.values():
          self.assertEqual(s.shape, (3,))
          self.assertTrue(np.all(np.isfinite(s.numpy())))
        features, _ = d.f(x)
        self.assertEqual(features.shape, (3, d.f.feature_dim))

  def test_channel_multipliers_set_each_blocks_width(self):
    d = disc_lib.Discriminator(resolution=32, ch=4, attention_resolution=0,
                               h_width=8, h_depth=1, j_width=8, j_depth=1,
                               channel_multipliers=(1, 2, 4, 2))
    d(np.zeros((2, 32, 32, 3), np.float32), np.zeros((2, 8), np.float32))
    self.assertEqual([b.conv2.filters for b in d.f.blocks], [4, 8, 16, 8])
    self.assertEqual(d.f.feature_dim, 8)

  def test_joint_score_depends_on_both_inputs(self):
    d = disc_lib.Discriminator(resolution=32, ch=4, attention_resolution=0,
                               h_width=16, h_depth=1, j_width=16, j_depth=1)
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    z = rng.standard_normal((2, 8)).astype(np.float32)
    base = d(x, z)
    other_z = d(x, z + 1.0)
    other_x = d(-x, z)
    self.assertAllClose(base['score_x'], other_z['score_x'])
    self.assertNotAllClose(base['score_xz'], other_z['score_xz'])
    self.assertAllClose(base['score_z'], other_x['score_z'])
    self.assertNotAllClose(base['score_xz'], other_x['score_xz'])


class EncoderTest(tf.test.TestCase):

  def test_outputs(self):
    e = enc_lib.Encoder(z_dim=12, blocks_per_stage=(1, 1, 1, 1),
                        width_multiplier=0.125, head_depth=2, head_width=32)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 64, 64, 3))
    out = e(x.astype(np.float32), training=True)
    self.assertEqual(out['avepool_feat'].shape, (3, 256))
    self.assertEqual(out['bn_crelu_feat'].shape, (3, 512))
    for key in ('z_mean', 'z_stdev', 'z_sample'):
      self.assertEqual(out[key].shape, (3, 12))
    self.assertTrue(np.all(out['z_stdev'].numpy() > 0))
    crelu = out['bn_crelu_feat'].numpy()
    # CReLU: of each (f, -f) pair exactly one side can be positive.
    self.assertTrue(np.all(np.minimum(crelu[:, :256], crelu[:, 256:]) == 0))

  def test_reparametrisation(self):
    e = enc_lib.Encoder(z_dim=8, blocks_per_stage=(1, 1, 1, 1),
                        width_multiplier=0.125)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3))
    x = np.repeat(x.astype(np.float32), 4000, axis=0)
    out = e(x, training=False)
    mean, std = out['z_mean'].numpy(), out['z_stdev'].numpy()
    # The noise z_sample carries, recovered per row, must be N(0, 1):
    # 4000 draws x 8 dims, standard error of a mean 1/63, of a std ~1/89.
    eps = (out['z_sample'].numpy() - mean) / std
    self.assertAllClose(eps.mean(0), np.zeros(8), atol=4 / 63)
    self.assertAllClose(eps.std(0), np.ones(8), atol=4 / 89)
    mean, std = mean[0], std[0]
    noise = np.random.default_rng(1).standard_normal((4000, 8))
    out = e(x, noise=noise.astype(np.float32))
    self.assertAllClose(out['z_sample'], mean + std * noise, atol=1e-5)

  def test_deterministic_encoder_samples_the_mean(self):
    e = enc_lib.Encoder(z_dim=8, blocks_per_stage=(1, 1, 1, 1),
                        width_multiplier=0.125, stochastic=False)
    x = np.random.default_rng(0).uniform(-1, 1, (5, 32, 32, 3))
    noise = np.random.default_rng(1).standard_normal((5, 8))
    out = e(x.astype(np.float32), noise=noise.astype(np.float32))
    self.assertAllEqual(out['z_sample'], out['z_mean'])
    self.assertTrue(np.all(out['z_stdev'].numpy() > 0))

  def test_resnet50_structure(self):
    e = enc_lib.Encoder(z_dim=120)
    e(np.zeros((1, 64, 64, 3), np.float32))
    self.assertLen(e.blocks, 16)
    self.assertEqual(e.feature_dim, 2048)
    # ResNet-v2-50 trunk (23.5M) + linear head 2048 -> 2 * 120.
    self.assertEqual(_count(e), 23_992_112)


class ParameterCountTest(tf.test.TestCase):

  def test_paper_scale_counts(self):
    config = imagenet128.get_config().model
    # Counts do not depend on initial values: skip the orthogonal
    # initialiser's QR decompositions of 156M weights (most of this test's
    # time otherwise).
    with mock.patch.object(keras.initializers.Orthogonal, '__call__',
                           lambda self, shape, dtype=None: keras.ops.zeros(
                               shape, dtype)):
      g = gen_lib.Generator(resolution=128, z_dim=120, ch=96,
                            attention_resolution=64, embed_dim=128)
      g(np.zeros((1, 120), np.float32))
      f = disc_lib.ImageDiscriminator(resolution=128, ch=96,
                                      attention_resolution=64)
      f(np.zeros((1, 128, 128, 3), np.float32))
    # BigGAN-PyTorch 128 ch96: G 70.43M with a 1000-class embedding (ours
    # keeps one constant vector); D 87.98M incl. a 1000 x 1536 projection
    # embedding; compare_gan ~86-88M.
    self.assertAllClose(_count(g) / 70.4e6, 1.0, atol=0.02)
    self.assertAllClose(_count(f) / 87e6, 1.0, atol=0.03)
    self.assertEqual(_count(g), 70_306_116)
    self.assertEqual(_count(f), 86_446_370)
    self.assertEqual(config.generator.ch, 96)

  def test_revnet50x4_count(self):
    # Counts do not depend on initial values: zero kernels skip drawing 88M
    # He-normal weights.
    with mock.patch.object(keras.initializers.HeNormal, '__call__',
                           lambda self, shape, dtype=None: keras.ops.zeros(
                               shape, dtype)):
      e = revnet.RevNetEncoder(z_dim=120, width_multiplier=4.0, head_depth=0)
      e(np.zeros((1, 256, 256, 3), np.float32))
    trunk = _count(e) - _count(e.head_out)
    # Kolesnikov et al. 2019 / BigBiGAN Table 2: RevNet-50 x4, 86M.
    self.assertAllClose(trunk / 86e6, 1.0, atol=0.05)
    self.assertAllClose(_count(e) / 86e6, 1.0, atol=0.05)
    self.assertEqual(trunk, 85_765_632)
    self.assertEqual(e.feature_dim, 8192)

  def test_tiny_config_counts(self):
    nets = build_networks(tiny.get_config().model)
    self.assertEqual([_count(n) for n in nets], [68_044, 41_796, 72_932])


class InitialValuesTest(tf.test.TestCase):

  def test_seeded_build_ignores_other_threads_drawing_from_random(self):
    # As the gs:// lease's heartbeat does (google-cloud-storage's multipart
    # boundary) while train.py builds the networks. Without the context,
    # this failed (checked by hand).
    config = tiny.get_config().model
    stop = threading.Event()

    def draw():
      while not stop.wait(0.001):
        random.random()

    def weights(seed):
      with initial_values_from(seed):
        nets = build_networks(config)
      return [v.numpy() for net in nets for v in net.weights]

    thread = threading.Thread(target=draw, daemon=True)
    thread.start()
    try:
      first, second, other = weights(3), weights(3), weights(4)
    finally:
      stop.set()
      thread.join()
    self.assertLen(first, len(second))
    for a, b in zip(first, second):
      self.assertAllEqual(a, b)
    # sn_u vectors (unseeded RandomNormal) follow the seed.
    self.assertFalse(all(np.array_equal(a, b) for a, b in zip(first, other)))


class CheckpointTest(tf.test.TestCase):

  def test_checkpoint_holds_every_variable(self):
    # Keras 3 keeps lists of layers in containers tf.train.Checkpoint cannot
    # see; every weight, trainable or not, must still round-trip.
    config = tiny.get_config().model
    nets = build_networks(config)
    rng = np.random.default_rng(0)
    # `weights`: every variable but the encoder's noise SeedGenerator state,
    # which training checkpoints leave out on purpose (training passes its
    # own noise; older checkpoints lack it; model_io_test.py).
    for net in nets:
      for v in net.weights:
        v.assign(rng.standard_normal(v.shape).astype(v.dtype))
    path = tf.train.Checkpoint(g=nets.generator, e=nets.encoder,
                               d=nets.discriminator).save(
                                   os.path.join(self.get_temp_dir(), 'ckpt'))
    fresh = build_networks(config)
    tf.train.Checkpoint(g=fresh.generator, e=fresh.encoder,
                        d=fresh.discriminator).restore(
                            path).assert_consumed()
    for net, new in zip(nets, fresh):
      self.assertEqual(len(net.weights), len(new.weights))
      self.assertGreater(len(net.non_trainable_weights), 10)
      for v, w in zip(net.weights, new.weights):
        self.assertEqual(v.path, w.path)
        self.assertAllEqual(v.numpy(), w.numpy(), msg=v.path)
    saved = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    self.assertEqual(len([k for k in saved if 'VARIABLE_VALUE' in k
                          and not k.startswith('save_counter')]),
                     sum(len(n.weights) for n in nets))


class SpectralNormTest(tf.test.TestCase):

  def test_bounds_largest_singular_value(self):
    rng = np.random.default_rng(0)
    for layer, shape in ((layers.SNDense(24), (4, 40)),
                         (layers.SNConv2D(16, 3), (2, 8, 8, 12))):
      with self.subTest(layer=type(layer).__name__):
        x = rng.standard_normal(shape).astype(np.float32)
        layer(x)
        layer.kernel.assign(3.0 * rng.standard_normal(layer.kernel.shape))
        for _ in range(50):  # power iterations happen in training calls
          layer(x, training=True)
        w = layer.normalized_kernel(training=False).numpy()
        w_mat = w.reshape(-1, w.shape[-1])
        sigma = np.linalg.svd(w_mat, compute_uv=False)[0]
        self.assertAllClose(sigma, 1.0, atol=1e-3)
        raw = layer.kernel.numpy().reshape(-1, w.shape[-1])
        self.assertAllClose(layer.spectral_norm_estimate(),
                            np.linalg.svd(raw, compute_uv=False)[0],
                            rtol=1e-3)

  def test_gradient_flows_through_sigma(self):
    # d/dW of sum(W / sigma(W)) differs from d/dW sum(W) / sigma when the
    # gradient goes through sigma, as in PyTorch's spectral_norm.
    layer = layers.SNDense(3, use_bias=False)
    x = np.eye(5, dtype=np.float32)
    layer(x)
    for _ in range(30):
      layer(x, training=True)
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(x, training=True))
    grad = tape.gradient(loss, layer.kernel).numpy()
    sigma = layer.spectral_norm_estimate().numpy()
    self.assertGreater(np.abs(grad - 1.0 / sigma).max(), 1e-3)

  def test_gradient_is_pytorchs_formula(self):
    # PyTorch's spectral_norm: W_sn = W / sigma with sigma = v^T W u, u and
    # v held constant, so dL/dW = G / sigma - (sum(G * W) / sigma^2) v u^T
    # for G = dL/dW_sn.
    rng = np.random.default_rng(3)
    layer = layers.SNDense(4, use_bias=False)
    x = np.eye(6, dtype=np.float32)
    layer(x)
    layer.kernel.assign(rng.standard_normal((6, 4)).astype(np.float32))
    g = rng.standard_normal((6, 4)).astype(np.float32)
    with tf.GradientTape() as tape:
      # Not training: no power iteration, u is the stored one.
      loss = tf.reduce_sum(layer(x, training=False) * g)
    grad = tape.gradient(loss, layer.kernel).numpy()
    w = layer.kernel.numpy().astype(np.float64)
    u = layer.sn_u.numpy().astype(np.float64)
    wu = w @ u
    sigma = np.linalg.norm(wu)
    v = wu / sigma
    want = g / sigma - (np.sum(g * w) / sigma**2) * np.outer(v, u)
    self.assertAllClose(grad, want, rtol=1e-4, atol=1e-5)
    self.assertAllClose(layer.spectral_norm_estimate(), sigma, rtol=1e-5)


if __name__ == '__main__':
  tf.test.main()
