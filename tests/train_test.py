"""Few-step training runs: outputs, resume, bad input, 2 replicas.

Signals: tests/preemption_test.py.
"""

import glob
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from bigbigan_tf import checkpoints
from bigbigan_tf import config_lib
from bigbigan_tf import data as data_lib
from bigbigan_tf import train_lib
from bigbigan_tf import trainer as trainer_lib
from bigbigan_tf.configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides):
  config = tiny.get_config()
  with config.unlocked():
    for key, value in overrides.items():
      target = config
      *path, leaf = key.split('.')
      for part in path:
        target = target[part]
      target[leaf] = value
  return config


def _digit_folder(root, n=24):
  images, labels = data_lib.load_mnist('train')
  for i in range(n):
    folder = os.path.join(root, f'class{labels[i]}')
    os.makedirs(folder, exist_ok=True)
    PIL.Image.fromarray(images[i]).save(os.path.join(folder, f'{i}.png'))
  return root


def _run_train(workdir, *args, wait=True, **popen):
  cmd = [sys.executable, os.path.join(REPO, 'train.py'),
         f'--workdir={workdir}', '--config=' + os.path.join(
             REPO, 'bigbigan_tf', 'configs', 'tiny.py'), *args]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  if not wait:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)
  return subprocess.run(cmd, env=env, capture_output=True, text=True,
                        timeout=600)


def _checkpoint_steps(workdir):
  paths = glob.glob(os.path.join(workdir, 'checkpoints', 'ckpt-*.index'))
  return sorted(int(p.split('ckpt-')[1].split('.')[0]) for p in paths)


class TrainInProcessTest(tf.test.TestCase):

  def test_folder_run_leaves_checkpoint_summaries_and_grids(self):
    workdir = self.create_tempdir().full_path
    folder = _digit_folder(self.create_tempdir().full_path)
    result = train_lib.train_and_evaluate(
        _config(**{'data.name': f'folder:{folder}', 'num_train_steps': 2}),
        workdir)
    self.assertEqual(result['step'], 2)
    self.assertEqual(_checkpoint_steps(workdir), [0, 2])
    for key in ('d_loss', 'eg_loss', 'd/real_score_xz', 'd/fake_score_x'):
      self.assertTrue(np.isfinite(result['metrics'][key]), key)
    self.assertTrue(glob.glob(os.path.join(workdir, 'train', 'events.*')))
    for name in ('samples', 'reconstructions'):
      path = os.path.join(workdir, 'grids', f'{name}_00000002.png')
      image = np.asarray(PIL.Image.open(path))
      self.assertEqual(image.ndim, 3)
      self.assertGreater(image.std(), 0)
    # The summaries hold every loss and the three heads' means.
    tags = set()
    for event_file in glob.glob(os.path.join(workdir, 'train', 'events.*')):
      for event in tf.compat.v1.train.summary_iterator(event_file):
        tags.update(v.tag for v in event.summary.value)
    for tag in ('d_loss', 'eg_loss', 'd_loss_score_xz', 'eg_loss_score_z',
                'd/real_score_x', 'd/fake_score_z', 'images_per_second',
                'learning_rate/e', 'samples', 'reconstructions',
                # sigma_0 of SN layers of both networks, and their maxima.
                'sv/generator/linear', 'sv/generator/block0/conv1',
                'sv/discriminator/F/score', 'sv/discriminator/J/mlp/proj',
                'sv_max/generator', 'sv_max/discriminator'):
      self.assertIn(tag, tags)
    saved = config_lib.load(workdir)
    self.assertEqual(saved.data.name, f'folder:{folder}')

  @pytest.mark.slow  # trains two workdirs (tfds mock, step 0)
  def test_tfds_mock_run_and_step_zero(self):
    workdir = self.create_tempdir().full_path
    with tfds.testing.mock_data(num_examples=32):
      result = train_lib.train_and_evaluate(
          _config(**{'data.name': 'tfds:mnist', 'num_train_steps': 0}),
          workdir)
      self.assertEqual(result['step'], 0)
      self.assertEqual(_checkpoint_steps(workdir), [0])
      self.assertTrue(os.path.exists(
          os.path.join(workdir, 'grids', 'samples_00000000.png')))
      result = train_lib.train_and_evaluate(
          _config(**{'data.name': 'tfds:mnist', 'num_train_steps': 2}),
          workdir)
    self.assertEqual(result['step'], 2)
    self.assertEqual(_checkpoint_steps(workdir), [0, 2])

  @pytest.mark.slow  # trains a workdir until its loss is made non-finite
  def test_non_finite_loss_stops_and_keeps_last_checkpoint(self):
    workdir = self.create_tempdir().full_path
    config = _config(**{'num_train_steps': 6, 'optim.g_lr': 1e30,
                        'optim.e_lr': 1e30, 'optim.d_lr': 1e30,
                        'train.checkpoint_every': 1, 'train.steps_per_loop': 1})
    with self.assertRaisesRegex(train_lib.NonFiniteLossError,
                                r'Non-finite loss at step \d+: .*(nan|inf)'
                                r'.*last good checkpoint'):
      train_lib.train_and_evaluate(config, workdir)
    steps = _checkpoint_steps(workdir)
    self.assertNotEmpty(steps)
    # The last good checkpoint restores.
    _, state, path = checkpoints.restore(workdir)
    self.assertEqual(int(state.step.numpy()), steps[-1])
    for v in state.nets.generator.trainable_variables:
      self.assertTrue(np.all(np.isfinite(v.numpy())), path)

  def test_reusing_the_d_forward_equals_a_d_step_then_an_eg_step(self):
    # The fused step (E/G reuses the D step's E and G forwards) must equal
    # the two separate steps with the same z and noise. One iteration: after
    # it, round-off (~1e-8 here) can flip a hinge and the runs part; reading
    # D's weights before its update instead differs by >1e-4 at once. A
    # large epsilon makes Adam's update proportional to the gradient, so
    # float noise on the near-zero gradients of biases before batch norm is
    # not blown up to +-lr.
    config = _config(**{'optim.epsilon': 1.0, 'optim.g_lr': 0.05,
                        'optim.e_lr': 0.05, 'optim.d_lr': 0.05})
    strategy = tf.distribute.get_strategy()
    fused = checkpoints.TrainState(config)
    split = checkpoints.TrainState(config)
    for a, b in zip(fused.nets.generator.weights + fused.nets.encoder.weights
                    + fused.nets.discriminator.weights,
                    split.nets.generator.weights + split.nets.encoder.weights
                    + split.nets.discriminator.weights):
      b.assign(a)
    split.rng.state.assign(fused.rng.state)
    first_g_kernel = tf.identity(fused.g_vars[0])
    fused_trainer = trainer_lib.Trainer(fused, strategy)
    split_trainer = trainer_lib.Trainer(split, strategy)
    batches = iter(data_lib.make_dataset(
        config.data, image_size=config.model.encoder_resolution,
        batch_size=config.batch_size, training=True, seed=0))
    batch = next(batches)
    fused_trainer._d_then_eg_step(batch)  # pylint: disable=protected-access
    rng_state = tf.identity(split.rng.state)
    split_trainer._d_step(batch)  # pylint: disable=protected-access
    split.rng.state.assign(rng_state)  # the same z and noise again
    split_trainer._eg_step(batch)  # pylint: disable=protected-access
    # The step changed the weights (so equality is not trivially met).
    self.assertNotAllClose(fused.g_vars[0], first_g_kernel)
    for name in ('g_vars', 'e_vars', 'd_vars'):
      for a, b in zip(getattr(fused, name), getattr(split, name)):
        self.assertAllClose(a, b, atol=1e-5, rtol=1e-5, msg=f'{name} {a.path}')

  def test_bad_inputs_fail_before_training(self):
    workdir = self.create_tempdir().full_path
    with self.assertRaisesRegex(config_lib.ConfigError, 'data.name'):
      train_lib.train_and_evaluate(_config(**{'data.name': 'cifar'}), workdir)
    empty = self.create_tempdir().full_path
    with self.assertRaisesRegex(data_lib.DataError, 'image'):
      train_lib.train_and_evaluate(
          _config(**{'data.name': f'folder:{empty}'}),
          self.create_tempdir().full_path)
    # A TFDS dataset that is not prepared fails (no download), before any
    # checkpoint is written. (Not timed: tests do not time things.)
    tfds_workdir = self.create_tempdir().full_path
    with self.assertRaisesRegex(data_lib.DataError, 'cifar10'):
      train_lib.train_and_evaluate(
          _config(**{'data.name': 'tfds:cifar10',
                     'data.data_dir': self.create_tempdir().full_path}),
          tfds_workdir)
    self.assertFalse(os.path.exists(os.path.join(tfds_workdir, 'checkpoints')))


@pytest.mark.slow  # train.py subprocesses
class TrainSubprocessTest(tf.test.TestCase):
  """train.py as users run it: resume, determinism, 2 replicas."""

  def test_interrupted_and_resumed_equals_uninterrupted(self):
    flags = ['--config.train.deterministic=True',
             '--config.train.checkpoint_data_iterator=True',
             '--config.train.steps_per_loop=1']
    straight = self.create_tempdir().full_path
    resumed = self.create_tempdir().full_path
    # The straight run and the first half of the other run side by side.
    procs = [_run_train(workdir, f'--config.num_train_steps={steps}', *flags,
                        wait=False)
             for workdir, steps in ((straight, 4), (resumed, 2))]
    for proc in procs:
      output, _ = proc.communicate(timeout=600)
      self.assertEqual(proc.returncode, 0, output[-3000:])
    out = _run_train(resumed, '--config.num_train_steps=4', *flags)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertIn('Resumed from', out.stderr)
    a = tf.train.load_checkpoint(os.path.join(straight, 'checkpoints',
                                              'ckpt-4'))
    b = tf.train.load_checkpoint(os.path.join(resumed, 'checkpoints',
                                              'ckpt-4'))
    names = [n for n in a.get_variable_to_shape_map()
             if not n.startswith('data_iterator') and '_CHECKPOINTABLE' not in n]
    self.assertGreater(len(names), 100)
    # Same batches, noise, optimizer and network state: bitwise equal.
    for name in names:
      self.assertAllEqual(a.get_tensor(name), b.get_tensor(name), msg=name)

  def test_conflicting_config_is_refused(self):
    workdir = self.create_tempdir().full_path
    config = _config(num_train_steps=0)
    config_lib.save(config, workdir)
    flip = not config.model.encoder.stochastic
    out = _run_train(workdir, '--config.optim.d_lr=0.25',
                     f'--config.model.encoder.stochastic={flip}')
    self.assertEqual(out.returncode, 2)
    self.assertIn('optim.d_lr: 0.0005 (workdir) != 0.25 (now)', out.stderr)
    self.assertIn(f'model.encoder.stochastic: {not flip} (workdir) != {flip} '
                  '(now)', out.stderr)
    # The message gives the flags that continue the workdir as trained.
    self.assertIn('to continue this workdir as it was trained, add: '
                  '--config.model.encoder.stochastic='
                  f'{not flip} --config.optim.d_lr=0.0005', out.stderr)

  def test_two_replicas_with_synchronised_batch_norm(self):
    workdir = self.create_tempdir().full_path
    script = f"""
import sys
sys.path.insert(0, {REPO!r})
from bigbigan_tf import distribute, train_lib
from bigbigan_tf.configs import tiny
import numpy as np
distribute.configure_cpu_devices(2)
strategy = distribute.make_strategy(kind='cpu')
assert strategy.num_replicas_in_sync == 2
config = tiny.get_config()
with config.unlocked():
  config.num_train_steps = 2
result = train_lib.train_and_evaluate(config, {workdir!r}, strategy=strategy)
state = result['state']
checked = 0
for net in (state.nets.generator, state.nets.encoder):
  for v in net.non_trainable_variables:
    if 'moving' in v.path:
      values = [np.asarray(x) for x in v.value.values]
      assert len(values) == 2, v.path
      np.testing.assert_array_equal(values[0], values[1], err_msg=v.path)
      checked += 1
for v in state.nets.discriminator.trainable_variables:
  values = [np.asarray(x) for x in v.value.values]
  np.testing.assert_array_equal(values[0], values[1], err_msg=v.path)
print('STEP', result['step'], 'BN', checked, 'METRICS',
      all(np.isfinite(x) for x in result['metrics'].values()))
"""
    out = subprocess.run([sys.executable, '-c', script], capture_output=True,
                         text=True, timeout=600,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertRegex(out.stdout, r'STEP 2 BN \d+ METRICS True')
    self.assertGreater(int(out.stdout.split('BN ')[1].split()[0]), 10)


if __name__ == '__main__':
  tf.test.main()
