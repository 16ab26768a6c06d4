"""Gradient accumulation (optim.grad_accum_steps): equal to, or learning like,
one update on the whole batch."""

import tensorflow as tf

import testing
from bigbigan_tf import checkpoints
from bigbigan_tf import config_lib
from bigbigan_tf import trainer as trainer_lib



class GradAccumTest(tf.test.TestCase):

  def test_d_update_with_four_micro_batches_equals_the_whole_batch(self):
    # A large Adam epsilon makes the first update proportional to the
    # gradient, so float noise on near-zero gradients is not blown up to
    # +-lr by Adam's normalisation (the comparison is of gradients).
    common = {'optim.epsilon': 1.0, 'optim.d_lr': 0.05}
    whole = checkpoints.TrainState(testing.tiny_config(**common))
    accum = checkpoints.TrainState(testing.tiny_config(**common,
                                           **{'optim.grad_accum_steps': 4}))
    for a, b in zip(whole.nets.discriminator.weights,
                    accum.nets.discriminator.weights):
      b.assign(a)
    before = [tf.identity(v) for v in whole.d_vars]
    strategy = tf.distribute.get_strategy()
    config = whole.config
    # The same E(x) and G(z) for both: D's inputs, fixed.
    x_e = testing.tiny_batch(config)['image']
    x = tf.image.resize(x_e, [config.model.resolution] * 2, 'area')
    z = tf.random.stateless_normal([config.batch_size, config.model.z_dim],
                                   seed=[1, 2])
    z_hat = tf.random.stateless_normal(z.shape, seed=[3, 4])
    x_fake = tf.tanh(tf.random.stateless_normal(x.shape, seed=[5, 6]))
    outs = []
    for state in (whole, accum):
      trainer = trainer_lib.Trainer(state, strategy)
      # pylint: disable-next=protected-access
      update = tf.function(trainer._d_update, autograph=False)
      outs.append({k: float(v) for k, v in
                   update(x, z_hat, x_fake, z).items()})
    self.assertNotAllClose(whole.d_vars[0], before[0])
    for a, b in zip(whole.d_vars, accum.d_vars):
      self.assertAllClose(a, b, atol=1e-6, rtol=1e-6, msg=a.path)
    # Metrics are the whole batch's, summed over the micro-batches.
    for k in outs[0]:
      self.assertAllClose(outs[0][k], outs[1][k], atol=1e-5, msg=k)

  def test_two_micro_batches_d_and_eg_steps_learn(self):
    # Each step alone, on a fixed batch with fixed z and noise, the other
    # networks fixed: its own loss must go down.
    config = testing.tiny_config(**{
        'optim.grad_accum_steps': 2, 'optim.d_lr': 1e-3, 'optim.g_lr': 1e-3,
        'optim.e_lr': 1e-3, 'optim.g_ortho_reg': 1e-4})
    state = checkpoints.TrainState(config)
    trainer = trainer_lib.Trainer(state, tf.distribute.get_strategy())
    batch = testing.tiny_batch(config)
    rng_state = tf.identity(state.rng.state)
    for step, loss, moved, fixed in (
        (trainer._d_step, 'd_loss', 'd_vars', 'g_vars'),  # pylint: disable=protected-access
        (trainer._eg_step, 'eg_loss', 'g_vars', 'd_vars')):  # pylint: disable=protected-access
      moved_before = tf.identity(getattr(state, moved)[0])
      fixed_before = [tf.identity(v) for v in getattr(state, fixed)]
      values = []
      for _ in range(4):
        state.rng.state.assign(rng_state)
        metrics = step(batch)
        values.append(float(metrics[loss]))
      self.assertLess(values[-1], values[0], f'{loss}: {values}')
      self.assertNotAllClose(getattr(state, moved)[0], moved_before)
      for a, b in zip(getattr(state, fixed), fixed_before):
        self.assertAllEqual(a, b)
    self.assertGreater(float(metrics['g_ortho_reg']), 0.0)
    self.assertEqual(int(state.d_opt.iterations.numpy()), 4)
    self.assertEqual(int(state.g_opt.iterations.numpy()), 4)

  def test_batch_must_divide_into_micro_batches_on_every_replica(self):
    config = testing.tiny_config(**{'optim.grad_accum_steps': 3})
    with self.assertRaisesRegex(config_lib.ConfigError,
                                'grad_accum_steps.*divisible by'):
      config_lib.validate(config)
    config = testing.tiny_config(**{'optim.grad_accum_steps': 4})
    config_lib.validate(config)
    with self.assertRaisesRegex(config_lib.ConfigError, '8 x 2 = 16'):
      config_lib.validate(
          testing.tiny_config(**{'optim.grad_accum_steps': 8}),
          num_replicas=2)
    with self.assertRaisesRegex(config_lib.ConfigError, 'integer >= 1'):
      config_lib.validate(
          testing.tiny_config(**{'optim.grad_accum_steps': 0}))


if __name__ == '__main__':
  tf.test.main()
