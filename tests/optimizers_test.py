"""Tests for bigbigan_tf.optimizers: the fused Adam equals Keras' Adam."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import testing
from bigbigan_tf import optimizers

_SHAPES = [(3, 3, 4, 5), (5,), (7, 2)]


def _gradients(steps):
  rng = np.random.default_rng(1)
  return [[rng.standard_normal(s).astype('float32') for s in _SHAPES]
          for _ in range(steps)]


def _train(opt, gradients, start=None):
  """Applies `gradients` in a tf.function; returns (variables, graph ops)."""
  rng = np.random.default_rng(0)
  variables = [keras.Variable(rng.standard_normal(s).astype('float32'))
               for s in _SHAPES]
  opt.build(variables)
  if start is not None:
    start(variables, opt)

  @tf.function(autograph=False)
  def step(grads):
    opt.apply_gradients(zip(grads, variables))

  for grads in gradients:
    step([tf.constant(g) for g in grads])
  graph = step.get_concrete_function(
      [tf.TensorSpec(s, tf.float32) for s in _SHAPES]).graph
  return variables, {op.type for op in graph.get_operations()}


def _state(variables, opt):
  return ([v.numpy() for v in variables]
          + [m.numpy() for m in opt._momentums]  # pylint: disable=protected-access
          + [v.numpy() for v in opt._velocities]  # pylint: disable=protected-access
          + [int(opt.iterations)])


class AdamTest(tf.test.TestCase):

  def _adams(self, **kwargs):
    kwargs = {'learning_rate': 1e-2, 'beta_1': 0.5, 'beta_2': 0.9,
              'epsilon': 1e-3, **kwargs}
    return keras.optimizers.Adam(**kwargs), optimizers.Adam(**kwargs)

  def test_equals_keras_adam_and_uses_the_fused_op(self):
    for beta_1 in (0.0, 0.5):  # BigGAN's beta1 = 0, and a non-zero one.
      keras_opt, fused_opt = self._adams(beta_1=beta_1)
      gradients = _gradients(5)
      want, keras_ops = _train(keras_opt, gradients)
      got, fused_ops = _train(fused_opt, gradients)
      for a, b in zip(_state(want, keras_opt), _state(got, fused_opt)):
        self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)
      self.assertEqual(int(fused_opt.iterations), 5)
      self.assertIn('ResourceApplyAdam', fused_ops)
      self.assertNotIn('ResourceApplyAdam', keras_ops)
      self.assertLess(len(fused_ops), len(keras_ops))

  def test_not_fused_and_amsgrad_run_keras_update(self):
    for kwargs in ({'fused': False}, {'amsgrad': True}):
      keras_opt = keras.optimizers.Adam(
          learning_rate=1e-2, amsgrad=kwargs.get('amsgrad', False))
      fused_opt = optimizers.Adam(learning_rate=1e-2, **kwargs)
      gradients = _gradients(3)
      want, _ = _train(keras_opt, gradients)
      got, ops = _train(fused_opt, gradients)
      self.assertNotIn('ResourceApplyAdam', ops)
      for a, b in zip(_state(want, keras_opt), _state(got, fused_opt)):
        self.assertAllClose(a, b, rtol=1e-6, atol=1e-7)

  def test_restores_a_keras_adam_checkpoint_and_continues_alike(self):
    """Workdirs written with Keras' Adam resume with this one."""
    gradients = _gradients(6)
    path = self.create_tempdir().full_path + '/ckpt'
    keras_opt = keras.optimizers.Adam(learning_rate=1e-2)
    keras_vars, _ = _train(keras_opt, gradients[:3])
    tf.train.Checkpoint(v=keras_vars, opt=keras_opt).write(path)

    @tf.function(autograph=False)
    def keras_step(grads):
      keras_opt.apply_gradients(zip(grads, keras_vars))

    for grads in gradients[3:]:  # The Keras run goes on...
      keras_step([tf.constant(g) for g in grads])

    def restore(variables, opt):
      tf.train.Checkpoint(v=variables, opt=opt).read(path).assert_consumed()

    # ...and so does a fused Adam restored from its checkpoint.
    fused_opt = optimizers.Adam(learning_rate=1e-2)
    got, _ = _train(fused_opt, gradients[3:], start=restore)
    self.assertEqual(int(fused_opt.iterations), 6)
    for a, b in zip(_state(keras_vars, keras_opt), _state(got, fused_opt)):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)

  def test_config_round_trip(self):
    opt = optimizers.Adam(learning_rate=3e-4, beta_1=0.0, fused=False)
    again = optimizers.Adam.from_config(opt.get_config())
    self.assertFalse(again.fused)
    self.assertEqual(again.beta_1, 0.0)

  @pytest.mark.slow  # a separate process (2 logical CPUs)
  def test_two_replicas_equal_one_device_with_summed_gradients(self):
    """Under MirroredStrategy each device's copy takes the fused update."""
    out = testing.run_python("""
        import json
        import keras
        import numpy as np
        import tensorflow as tf
        from bigbigan_tf import distribute, optimizers

        distribute.configure_cpu_devices(2)
        strategy = distribute.make_strategy(kind='cpu')
        rng = np.random.default_rng(0)
        init = rng.standard_normal((4, 3)).astype('float32')
        grads = rng.standard_normal((3, 2, 4, 3)).astype('float32')

        with strategy.scope():
          var = keras.Variable(init)
          opt = optimizers.Adam(learning_rate=0.1, beta_1=0.0)
          opt.build([var])

        @tf.function(autograph=False)
        def step(g):
          def replica_fn():
            ctx = tf.distribute.get_replica_context()
            opt.apply_gradients([(tf.gather(g, ctx.replica_id_in_sync_group),
                                  var)])
          strategy.run(replica_fn)

        for g in grads:
          step(tf.constant(g))
        copies = [np.asarray(x).tolist() for x in var.value.values]

        ref_var = keras.Variable(init)
        ref = keras.optimizers.Adam(learning_rate=0.1, beta_1=0.0)
        for g in grads:
          ref.apply_gradients([(tf.constant(g.sum(0)), ref_var)])
        print(json.dumps({'replicas': strategy.num_replicas_in_sync,
                          'copies': copies,
                          'want': ref_var.numpy().tolist(),
                          'iterations': int(opt.iterations.numpy())}))
        """)
    self.assertEqual(out['replicas'], 2)
    self.assertEqual(out['iterations'], 3)
    for copy in out['copies']:
      self.assertAllClose(copy, out['want'], rtol=1e-5, atol=1e-6)


if __name__ == '__main__':
  tf.test.main()
