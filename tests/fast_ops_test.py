"""Every speed trick of models/fast_ops.py computes the plain Keras path."""

import os

import keras
import numpy as np
import tensorflow as tf

from bigbigan_tf import hardware
from bigbigan_tf.configs import tiny
from bigbigan_tf.models import build_networks
from bigbigan_tf.models import discriminator as disc_lib
from bigbigan_tf.models import encoder as enc_lib
from bigbigan_tf.models import fast_ops as fast_ops_lib
from bigbigan_tf.models import generator as gen_lib
from bigbigan_tf.models import revnet
from bigbigan_tf.models.fast_ops import FastOps

PLAIN = FastOps.plain()


def _only(trick: str, **thresholds) -> FastOps:
  """FastOps with one trick on (thresholds as given)."""
  return FastOps(**{trick: True}, **thresholds)


def _set(config, name: str, value) -> None:
  """config[name] = value, also where the type changes ('auto' -> bool)."""
  with config.unlocked():
    del config[name]
    config[name] = value


def _value_and_grads(fn, x, k, up):
  """[fn(x, k), d/dx, d/dk] of sum(fn(x, k) * up)."""
  with tf.GradientTape() as tape:
    tape.watch([x, k])
    y = fn(x, k)
    loss = tf.reduce_sum(y * up)
  return [y] + tape.gradient(loss, [x, k])


def _op_types(fn, *specs, grad_of=None) -> list:
  """Op types in the graph of fn(*specs) (and of its gradient w.r.t. the
  inputs numbered `grad_of`)."""
  def run(*args):
    if grad_of is None:
      return fn(*args)
    with tf.GradientTape() as tape:
      tape.watch(args)
      loss = tf.reduce_sum(fn(*args))
    return tape.gradient(loss, [args[i] for i in grad_of])
  graph = tf.function(run).get_concrete_function(*specs).graph
  return [op.type for op in graph.get_operations()]


class FastOpsObjectTest(tf.test.TestCase):

  def test_plain_every_trick_and_errors(self):
    self.assertEqual(PLAIN.in_use(), [])
    self.assertEqual(FastOps.every_trick().in_use(),
                     list(fast_ops_lib.SWITCH_FIELDS))
    with self.assertRaisesRegex(ValueError, "pointwise_matmul = 'auto'.*"
                                'from_config'):
      FastOps(pointwise_matmul='auto')
    with self.assertRaisesRegex(ValueError,
                                'tapped_filter_grad_max_pixels = -1.*>= 0'):
      FastOps(tapped_filter_grad_max_pixels=-1)

  def test_from_config_resolves_auto_per_device(self):
    config = tiny.get_config().model
    cpu = hardware.Device('cpu', cpu_flags=frozenset({'avx2'}))

    def on(device):
      return lambda value, field: hardware.resolve_switch(value, field,
                                                          device)[0]

    self.assertEqual(FastOps.from_config(config, on(cpu)),
                     FastOps.every_trick(fused_resampling_min_size=8))
    self.assertEqual(FastOps.from_config(config, on(hardware.Device('tpu'))),
                     PLAIN)
    # A resolved config needs no resolver.
    self.assertEqual(FastOps.from_config(
        hardware.resolve(tiny.get_config(), cpu).config.model),
                     FastOps.every_trick(fused_resampling_min_size=8))
    _set(config, 'pointwise_matmul', False)
    _set(config, 'tapped_filter_grad_max_pixels', 16)
    ops = FastOps.from_config(config, on(cpu))
    self.assertFalse(ops.pointwise_matmul)
    self.assertTrue(ops.tapped_filter_grad)
    self.assertEqual(ops.tapped_filter_grad_max_pixels, 16)


class PointwiseMatmulTest(tf.test.TestCase):
  """model.pointwise_matmul: 1x1 convolutions as matmuls."""

  def test_equals_the_convolution_with_gradients(self):
    rng = np.random.default_rng(0)
    # (height, width, strides): square, odd and non-square maps, strided
    # below and above the slice threshold (which takes the conv).
    for h, w, s in ((4, 4, 1), (3, 5, 1), (4, 4, 2), (5, 3, 2), (6, 7, 3),
                    (16, 16, 2)):
      with self.subTest(shape=(h, w), strides=s):
        x = tf.constant(rng.standard_normal((2, h, w, 3)), tf.float32)
        k = tf.constant(rng.standard_normal((1, 1, 3, 4)), tf.float32)
        up = tf.constant(rng.standard_normal(
            tf.nn.conv2d(x, k, s, 'SAME').shape), tf.float32)
        want, got = [_value_and_grads(
            lambda x, k, o=o: o.conv1x1(x, k, s), x, k, up)
                     for o in (PLAIN, _only('pointwise_matmul'))]
        for a, b in zip(want, got):
          self.assertEqual(a.shape, b.shape)
          self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)

  def test_runs_as_a_matmul_and_falls_back_to_the_conv(self):
    on = _only('pointwise_matmul', pointwise_strided_max_pixels=64)
    k = tf.TensorSpec([1, 1, 3, 4], tf.float32)

    def types(ops, shape, strides):
      return set(_op_types(lambda x, k: ops.conv1x1(x, k, strides),
                           tf.TensorSpec(shape, tf.float32), k))
    self.assertIn('MatMul', types(on, [2, 4, 4, 3], 1))
    self.assertNotIn('Conv2D', types(on, [2, 4, 4, 3], 1))
    self.assertIn('MatMul', types(on, [2, 8, 8, 3], 2))
    # Over the strided threshold, and with unknown height / width: the conv.
    self.assertIn('Conv2D', types(on, [2, 16, 16, 3], 2))
    self.assertIn('Conv2D', types(on, [2, None, None, 3], 1))
    # Unknown channels (as after a reshape in attention): the matmul.
    self.assertIn('MatMul', types(on, [2, 4, 4, None], 1))
    self.assertNotIn('MatMul', types(PLAIN, [2, 4, 4, 3], 1))

  def test_conv2d_layer_matches_keras_and_shares_its_checkpoints(self):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((2, 6, 6, 5)), tf.float32)
    for kernel_size, strides in ((1, 1), (1, 2), (3, 2)):
      with self.subTest(kernel_size=kernel_size, strides=strides):
        kwargs = dict(kernel_size=kernel_size, strides=strides,
                      padding='same', use_bias=False)
        theirs = PLAIN.conv2d(4, **kwargs)
        ours = _only('pointwise_matmul').conv2d(4, **kwargs)
        self.assertIs(type(theirs), keras.layers.Conv2D)
        self.assertIsInstance(ours, fast_ops_lib.PointwiseConv2D)
        ours(x), theirs(x)
        tf.train.Checkpoint(layer=ours).read(
            tf.train.Checkpoint(layer=theirs).write(
                os.path.join(self.get_temp_dir(), f'c{kernel_size}{strides}'))
        ).assert_consumed()
        with tf.GradientTape(persistent=True) as tape:
          tape.watch(x)
          y_ours, y_theirs = ours(x), theirs(x)
        self.assertAllClose(y_ours, y_theirs, atol=1e-5, rtol=1e-5)
        for a, b in zip(tape.gradient(y_ours, [x, ours.kernel]),
                        tape.gradient(y_theirs, [x, theirs.kernel])):
          self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)
    rebuilt = fast_ops_lib.PointwiseConv2D.from_config(
        _only('pointwise_matmul',
              pointwise_strided_max_pixels=9).conv2d(4, 1).get_config())
    self.assertEqual(rebuilt.strided_max_pixels, 9)


class TappedFilterGradTest(tf.test.TestCase):
  """model.tapped_filter_grad: small 3x3 filter gradients as matmuls."""

  def test_equals_the_convolution_with_gradients(self):
    rng = np.random.default_rng(0)
    on = _only('tapped_filter_grad', tapped_filter_grad_max_pixels=64)
    for shape in ((2, 8, 8, 5), (3, 5, 7, 4), (1, 1, 1, 2)):
      with self.subTest(shape=shape):
        x = tf.constant(rng.standard_normal(shape), tf.float32)
        k = tf.constant(rng.standard_normal((3, 3, shape[-1], 6)), tf.float32)
        up = tf.constant(rng.standard_normal(shape[:-1] + (6,)), tf.float32)
        want, got = [_value_and_grads(o.conv3x3, x, k, up)
                     for o in (PLAIN, on)]
        for a, b in zip(want, got):
          self.assertEqual(a.shape, b.shape)
          self.assertAllClose(a, b, atol=1e-4, rtol=1e-5)

  def test_used_on_small_maps_only(self):
    def filter_grads(ops, size):
      types = _op_types(ops.conv3x3,
                        tf.TensorSpec([2, size, size, 4], tf.float32),
                        tf.TensorSpec([3, 3, 4, 4], tf.float32), grad_of=[1])
      return types.count('Conv2DBackpropFilter')
    on = _only('tapped_filter_grad', tapped_filter_grad_max_pixels=64)
    self.assertEqual(filter_grads(on, 8), 0)  # 64 pixels: the matmuls.
    self.assertEqual(filter_grads(on, 9), 1)  # 81: TensorFlow's gradient.
    self.assertEqual(filter_grads(PLAIN, 8), 1)


class FusedResamplingTest(tf.test.TestCase):
  """model.fused_resampling: resampling convolutions as one conv."""

  def test_equal_the_literal_order_with_gradients(self):
    rng = np.random.default_rng(0)
    on = _only('fused_resampling', fused_resampling_min_size=1)
    for h, w, c_in, c_out in ((4, 4, 3, 5), (6, 2, 7, 4), (1, 1, 2, 3)):
      for size in (3, 1):
        with self.subTest(shape=(h, w, c_in, c_out), kernel=size):
          x = tf.constant(rng.standard_normal((2, h, w, c_in)), tf.float32)
          k = tf.constant(rng.standard_normal((size, size, c_in, c_out)),
                          tf.float32)
          methods = ['upsample_conv']
          if h % 2 == 0 and w % 2 == 0:
            methods.append('conv_avgpool')
          for method in methods:
            want_y = getattr(PLAIN, method)(x, k)
            up = rng.standard_normal(want_y.shape).astype(np.float32)
            want, got = [_value_and_grads(getattr(o, method), x, k, up)
                         for o in (PLAIN, on)]
            for a, b in zip(want, got):
              self.assertEqual(a.shape, b.shape)
              self.assertAllClose(a, b, atol=1e-4, rtol=1e-5)
    # The plain path is the literal order.
    x = tf.constant(rng.standard_normal((2, 4, 4, 3)), tf.float32)
    k = tf.constant(rng.standard_normal((3, 3, 3, 2)), tf.float32)
    self.assertAllClose(
        PLAIN.upsample_conv(x, k),
        tf.nn.conv2d(fast_ops_lib.upsample2x(x), k, 1, 'SAME'))
    self.assertAllClose(PLAIN.conv_avgpool(x, k), fast_ops_lib.avgpool2x(
        tf.nn.conv2d(x, k, 1, 'SAME')))
    with self.assertRaisesRegex(ValueError, 'even height and width'):
      fast_ops_lib.pooled_conv(tf.zeros([1, 3, 4, 2]), tf.zeros([3, 3, 2, 2]))

  def test_min_size_picks_by_the_low_resolution_side(self):
    on = _only('fused_resampling', fused_resampling_min_size=8)
    self.assertEqual([on.fuses_upsampling(s) for s in (4, 8, 16)],
                     [False, True, True])
    self.assertEqual([on.fuses_pooling(s) for s in (8, 16, 32)],
                     [False, True, True])
    self.assertFalse(PLAIN.fuses_upsampling(16))
    x = tf.TensorSpec([2, 4, 4, 3], tf.float32)
    k = tf.TensorSpec([3, 3, 3, 2], tf.float32)
    # 4x4 input < 8: the literal order (a conv, no transposed conv).
    self.assertNotIn('Conv2DBackpropInput',
                     _op_types(on.upsample_conv, x, k))
    self.assertIn('Conv2DBackpropInput', _op_types(
        _only('fused_resampling', fused_resampling_min_size=4).upsample_conv,
        x, k))


class FusedBatchNormTest(tf.test.TestCase):
  """model.fused_batch_norm: TensorFlow's fused op computes Keras' BN."""

  def _pair(self, shape, affine, momentum=0.9):
    rng = np.random.default_rng(sum(shape))
    bns = [o.batch_norm(epsilon=1e-4, momentum=momentum, center=affine,
                        scale=affine) for o in (PLAIN, _only('fused_batch_norm'))]
    self.assertIs(type(bns[0]), keras.layers.BatchNormalization)
    self.assertIsInstance(bns[1], fast_ops_lib.FusedBatchNormalization)
    for bn in bns:
      bn.build(shape)
    for a, b in zip(bns[0].weights, bns[1].weights):
      b.assign(a + rng.standard_normal(a.shape).astype(np.float32) * 0.1)
      a.assign(b)
    return bns

  def test_training_and_inference_match_keras(self):
    rng = np.random.default_rng(0)
    for shape in ((4, 5, 3, 6), (7, 6)):
      for affine in (True, False):
        with self.subTest(shape=shape, affine=affine):
          keras_bn, fused_bn = self._pair(shape, affine)
          x = tf.constant(rng.standard_normal(shape) * 3 + 1, tf.float32)
          up = tf.constant(rng.standard_normal(shape), tf.float32)
          old_var = fused_bn.moving_variance.numpy()
          outs = []
          for bn in (keras_bn, fused_bn):
            with tf.GradientTape() as tape:
              tape.watch(x)
              y = bn(x, training=True)
              loss = tf.reduce_sum(y * up)
            grads = tape.gradient(loss, [x] + bn.trainable_weights)
            # Moving statistics after one update, then inference with them.
            outs.append([y] + grads + [bn.moving_mean.numpy(),
                                       bn.moving_variance.numpy(),
                                       bn(x, training=False)])
          self.assertLen(outs[1], 7 if affine else 5)
          for want, got in zip(*outs):
            self.assertEqual(want.shape, got.shape)
            self.assertAllClose(want, got, atol=1e-4, rtol=1e-4)
          # The moving variance averages the biased batch variance.
          batch_var = np.var(x.numpy(), axis=tuple(range(len(shape) - 1)))
          self.assertAllClose(outs[1][-2], 0.9 * old_var + 0.1 * batch_var,
                              rtol=1e-5)

  def test_uses_the_fused_op(self):
    x = tf.ones((2, 4, 4, 3))
    for ops, want in ((_only('fused_batch_norm'), True), (PLAIN, False)):
      bn = ops.batch_norm(momentum=0.9)
      types = _op_types(lambda t, bn=bn: bn(t, training=True),
                        tf.TensorSpec(x.shape, tf.float32))
      self.assertEqual('FusedBatchNormV3' in types, want, types)


class NetworksTest(tf.test.TestCase):
  """Networks built plain and with every trick compute the same."""

  def _twins(self, make, *inputs):
    """A network built plain and one with every trick, the same weights."""
    plain = make(PLAIN)
    fast = make(FastOps.every_trick(fused_resampling_min_size=1))
    plain(*inputs)
    fast(*inputs)
    self.assertEqual([w.path for w in plain.weights],
                     [w.path for w in fast.weights])
    for a, b in zip(plain.weights, fast.weights):
      self.assertEqual(a.shape, b.shape)
      a.assign(b)
    return plain, fast

  def _assert_same_outputs_and_grads(self, twins, call):
    outs = []
    for net in twins:
      # Training mode: batch statistics and power iterations too (both
      # twins start from the same u, so they update it alike).
      with tf.GradientTape() as tape:
        values = call(net)
        loss = sum(tf.reduce_sum(v) for v in values)
      outs.append(values + tape.gradient(loss, net.trainable_weights))
    self.assertLen(outs[0], len(outs[1]))
    for want, got in zip(*outs):
      # Rounding differences grow through the batch norms of deep nets
      # (up to 1.1e-3 seen for the RevNet's weight gradients): measured
      # against each tensor's largest value. A wrong map is off by O(1); the
      # per-layer tests above check each trick to 1e-5.
      want, got = np.asarray(want), np.asarray(got)
      self.assertEqual(want.shape, got.shape)
      scale = max(1.0, float(np.abs(want).max()))
      self.assertLess(float(np.abs(want - got).max()) / scale, 3e-3)

  def test_generator_and_discriminator(self):
    rng = np.random.default_rng(1)
    z = tf.constant(rng.standard_normal((3, 16)), tf.float32)
    # 32px covers every path: G's upsampling blocks, F's pooled first block
    # (no pre-activation), a pooled pre-activation block, plain blocks and
    # self-attention (1x1 convs) in both.
    x = tf.constant(rng.uniform(-1, 1, (3, 32, 32, 3)), tf.float32)
    g = self._twins(lambda o: gen_lib.Generator(
        resolution=32, z_dim=16, ch=4, attention_resolution=16, fast_ops=o),
                    z)
    d = self._twins(lambda o: disc_lib.Discriminator(
        resolution=32, ch=4, attention_resolution=16, h_width=8, h_depth=1,
        j_width=8, j_depth=1, fast_ops=o), x, z)
    self._assert_same_outputs_and_grads(
        g, lambda net: [net(z, training=True)])
    self._assert_same_outputs_and_grads(d, lambda net: [
        v for _, v in sorted(net(x, z, training=True).items())])

  def test_encoders(self):
    rng = np.random.default_rng(2)
    x = tf.constant(rng.uniform(-1, 1, (4, 32, 32, 3)), tf.float32)
    noise = tf.constant(rng.standard_normal((4, 8)), tf.float32)
    for cls in (enc_lib.Encoder, revnet.RevNetEncoder):
      with self.subTest(encoder=cls.__name__):
        e = self._twins(lambda o, cls=cls: cls(
            z_dim=8, blocks_per_stage=(1, 1, 1, 1), width_multiplier=0.25,
            head_depth=1, head_width=16, fast_ops=o), x, None)
        self._assert_same_outputs_and_grads(e, lambda net: [
            net(x, training=True, noise=noise)[k]
            for k in ('z_sample', 'bn_crelu_feat')])


class BuildNetworksTest(tf.test.TestCase):
  """build_networks passes the config's choices to every layer."""

  def _fast_ops_held(self, nets) -> set:
    held = set()
    for net in nets:
      held.add(net.fast_ops)
      for layer in net._flatten_layers():  # pylint: disable=protected-access
        if hasattr(layer, 'fast_ops'):
          held.add(layer.fast_ops)
    return held

  def test_config_choices_reach_every_layer(self):
    config = tiny.get_config()
    for name in fast_ops_lib.SWITCH_FIELDS:
      _set(config.model, name, False)
    plain = build_networks(config.model)
    self.assertEqual(self._fast_ops_held(plain), {PLAIN})
    # No trick's layer class either.
    for net in plain:
      for layer in net._flatten_layers():  # pylint: disable=protected-access
        self.assertNotIsInstance(layer, (fast_ops_lib.PointwiseConv2D,
                                         fast_ops_lib.FusedBatchNormalization))
    _set(config.model, 'fused_resampling_min_size', 16)
    _set(config.model, 'pointwise_matmul', True)
    fast = build_networks(config.model)
    want = FastOps(pointwise_matmul=True, fused_resampling_min_size=16)
    self.assertEqual(self._fast_ops_held(fast), {want})

    # And in the traced encoder: one Conv2D op per conv layer without the
    # trick; with it, none for the unstrided 1x1 convs (strided ones depend
    # on their input size).
    spec = tf.TensorSpec([2, 64, 64, 3], tf.float32)
    counts = [_op_types(lambda x, e=nets.encoder: e(x)['z_mean'],
                        spec).count('Conv2D') for nets in (plain, fast)]
    convs = [l for l in fast.encoder._flatten_layers()  # pylint: disable=protected-access
             if isinstance(l, keras.layers.Conv2D)]
    unstrided_1x1 = [l for l in convs if tuple(l.kernel_size) == (1, 1)
                     and tuple(l.strides) == (1, 1)]
    self.assertNotEmpty(unstrided_1x1)
    self.assertEqual(counts[0], len(convs))
    self.assertLessEqual(counts[1], len(convs) - len(unstrided_1x1))


if __name__ == '__main__':
  tf.test.main()
