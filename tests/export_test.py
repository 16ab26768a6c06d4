"""Export: a Hub-style SavedModel from a few-step run, loaded four ways.

One tiny run is trained once; it is exported in-process (library path) and,
meanwhile, by `export.py` in a subprocess. Tests then load the modules with
tf.saved_model.load, hub.load, hub.KerasLayer (tf-keras) and TFSMLayer
(Keras 3) and compare them with the in-process networks.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

import testing
from bigbigan_tf import checkpoints
from bigbigan_tf import config_lib
from bigbigan_tf import data as data_lib
from bigbigan_tf import defaults
from bigbigan_tf import export_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny config: z_dim 16, G at 32x32, E at 64x64, 128-d pooled features.
Z_DIM, RES, RES_E, FEAT = 16, 32, 64, 128
ENCODE_SHAPE = r'encode: x must be float32 \[N, 64, 64, 3\] in \[-1, 1\]'
EXPECTED_SPEC = (r"TensorSpec\(shape=\(None, 64, 64, 3\), dtype=tf.float32, "
                 r"name='x'\)")


def _start_export(*args):
  cmd = [sys.executable, os.path.join(REPO, 'export.py'), *args]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _z(n, seed=0):
  return np.random.default_rng(seed).standard_normal((n, Z_DIM)).astype(
      np.float32)


def _x(n, size, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(
      np.float32)


@pytest.mark.slow  # a trained workdir and export.py subprocesses
class ExportTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.workdir = os.path.join(cls.root, 'run')
    testing.train_tiny(cls.workdir, steps=2)

    # export.py's success and error paths run in other processes meanwhile.
    cls.cli_dir = os.path.join(cls.root, 'cli_export')
    cls.existing_dir = os.path.join(cls.root, 'existing')
    os.makedirs(cls.existing_dir)
    procs = {
        'ok': _start_export(f'--workdir={cls.workdir}',
                            f'--export_dir={cls.cli_dir}'),
        'no_workdir': _start_export(
            f'--workdir={os.path.join(cls.root, "nowhere")}',
            f'--export_dir={os.path.join(cls.root, "unused")}'),
        'exists': _start_export(f'--workdir={cls.workdir}',
                                f'--export_dir={cls.existing_dir}'),
    }

    # The library path, keeping the networks to compare with.
    cls.config, cls.state, cls.checkpoint = checkpoints.restore(cls.workdir)
    checkpoints.check_checkpoint_complete(
        cls.state, cls.checkpoint,
        {'generator': cls.state.ema_generator,
         'encoder': cls.state.ema_encoder,
         'discriminator': cls.state.nets.discriminator})
    cls.module, cls.info = export_lib.build_module(
        cls.config, cls.state, step=int(cls.state.step.numpy()))
    cls.export_dir = export_lib.save_module(
        cls.module, os.path.join(cls.root, 'export'), config=cls.config,
        info=cls.info)
    cls.loaded = tf.saved_model.load(cls.export_dir)
    cls.hub_module = hub.load(cls.export_dir)
    cls.real = next(iter(data_lib.make_dataset(
        cls.config.data, image_size=RES_E, batch_size=8,
        training=False)))['image'].numpy()

    cls.cli = {}
    for name, proc in procs.items():
      out, err = proc.communicate(timeout=600)
      cls.cli[name] = (proc.returncode, out, err)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  # ------------------------------------------------------------ contract

  def test_cli_writes_keras_models(self):
    code, _, err = self.cli['ok']
    self.assertEqual(code, 0, err[-2000:])
    self.assertEqual(
        sorted(os.listdir(os.path.join(self.cli_dir, 'keras'))),
        ['discriminator.keras', 'encoder.keras', 'generator.keras'])
    with open(os.path.join(self.cli_dir, 'assets',
                           export_lib.INFO_ASSET)) as f:
      self.assertIn('keras', json.load(f))

  def test_signatures_follow_the_hub_contract(self):
    self.assertCountEqual(self.hub_module.signatures.keys(), export_lib.SIGNATURE_NAMES)
    testing.assert_hub_contract(self, self.hub_module.signatures, z_dim=Z_DIM, res=RES,
                                res_e=RES_E, feat=FEAT)

  def test_outputs_equal_the_in_process_ema_networks(self):
    z, x_e, x = _z(5), _x(5, RES_E), _x(5, RES, seed=1)
    s = self.state
    images = self.loaded.generate(z)
    want = s.ema_generator(z, training=False).numpy()
    self.assertAllClose(images['default'], want, atol=1e-5)
    self.assertAllClose(images['upsampled'],
                        want.repeat(2, axis=1).repeat(2, axis=2), atol=1e-5)
    # The EMA, not the live G, was exported.
    self.assertGreater(
        np.abs(s.nets.generator(z, training=False).numpy() - want).max(), 1e-3)

    feats = self.loaded.encode(x_e)
    ref = s.ema_encoder(x_e, training=False, noise=np.zeros_like(z))
    for key in ('z_mean', 'z_stdev', 'avepool_feat', 'bn_crelu_feat'):
      self.assertAllClose(feats[key], ref[key], atol=1e-5, msg=key)
    self.assertAllClose(feats['default'], ref['z_mean'], atol=1e-5)

    scores = self.loaded.discriminate(x, z)
    ref = s.nets.discriminator(x, z, training=False)
    for key in ('score_x', 'score_z', 'score_xz'):
      self.assertAllClose(scores[key], ref[key], atol=1e-4, msg=key)

  def test_encode_draws_fresh_noise_for_z_sample(self):
    x = np.repeat(_x(1, RES_E), 64, axis=0)
    first, second = self.loaded.encode(x), self.loaded.encode(x)
    eps = ((first['z_sample'] - first['z_mean']) / first['z_stdev']).numpy()
    self.assertAllClose(first['z_mean'], second['z_mean'], atol=1e-6)
    self.assertGreater(np.abs(first['z_sample'] - second['z_sample']).min(),
                       0.0)
    # z_sample = z_mean + z_stdev * eps with eps ~ N(0, 1), per example.
    self.assertLess(abs(eps.mean()), 0.1)
    self.assertBetween(eps.std(), 0.9, 1.1)
    self.assertGreater(np.abs(eps[0] - eps[1]).max(), 0.1)

  def test_outputs_are_batch_independent(self):
    sigs = self.hub_module.signatures
    z, x_e, x = _z(5, seed=2), _x(5, RES_E, seed=2), _x(5, RES, seed=3)
    batch = {'generate': sigs['generate'](z=z),
             'encode': sigs['encode'](x=x_e),
             'discriminate': sigs['discriminate'](x=x, z=z)}
    for i in range(5):
      alone = {'generate': sigs['generate'](z=z[i:i + 1]),
               'encode': sigs['encode'](x=x_e[i:i + 1]),
               'discriminate': sigs['discriminate'](x=x[i:i + 1],
                                                    z=z[i:i + 1])}
      for name, outputs in alone.items():
        for key, value in outputs.items():
          if key == 'z_sample':
            continue  # fresh noise
          self.assertAllClose(value[0], batch[name][key][i], atol=1e-5,
                              msg=f'{name}/{key}, example {i}')

  def test_shapes_and_value_ranges(self):
    sigs = self.hub_module.signatures
    images = sigs['generate'](z=_z(6, seed=4))
    self.assertEqual(images['default'].shape, (6, RES, RES, 3))
    self.assertEqual(images['upsampled'].shape, (6, 2 * RES, 2 * RES, 3))
    self.assertBetween(float(tf.reduce_min(images['default'])), -1.0, 1.0)
    self.assertBetween(float(tf.reduce_max(images['default'])), -1.0, 1.0)
    self.assertGreater(float(tf.math.reduce_std(images['default'])), 0.0)
    feats = sigs['encode'](x=self.real)
    self.assertEqual(feats['avepool_feat'].shape, (8, FEAT))
    self.assertEqual(feats['bn_crelu_feat'].shape, (8, 2 * FEAT))
    self.assertEqual(feats['z_sample'].shape, (8, Z_DIM))
    self.assertGreater(float(tf.reduce_min(feats['z_stdev'])), 0.0)
    crelu = feats['bn_crelu_feat'].numpy()
    self.assertGreaterEqual(crelu.min(), 0.0)
    # CReLU: relu(f) and relu(-f) are never both positive.
    self.assertAllEqual(crelu[:, :FEAT] * crelu[:, FEAT:],
                        np.zeros((8, FEAT)))
    self.assertGreater(crelu.max(), 0.0)
    self.assertGreaterEqual(float(tf.reduce_min(feats['avepool_feat'])), 0.0)
    self.assertAllClose(sigs['serving_default'](x=self.real)['default'],
                        feats['z_mean'])
    scores = sigs['discriminate'](x=_x(6, RES), z=_z(6))
    for key in ('score_x', 'score_z', 'score_xz'):
      self.assertEqual(scores[key].shape, (6,))
      self.assertTrue(np.all(np.isfinite(scores[key])))

  def test_reconstruction_recipe_on_real_digits(self):
    # The official colab: generate(z=encode(x=x)['z_mean'])['default'].
    sigs = self.hub_module.signatures
    z_mean = sigs['encode'](x=self.real)['z_mean']
    recon = sigs['generate'](z=z_mean)['default'].numpy()
    self.assertEqual(recon.shape, (8, RES, RES, 3))
    self.assertTrue(np.all(np.isfinite(recon)))
    self.assertBetween(recon.min(), -1.0, 1.0)
    self.assertBetween(recon.max(), -1.0, 1.0)
    # Different digits give different reconstructions.
    self.assertGreater(np.abs(recon[0] - recon[1]).max(), 1e-4)
    want = self.state.ema_generator(
        self.state.ema_encoder(self.real, training=False)['z_mean'],
        training=False)
    self.assertAllClose(recon, want, atol=1e-5)

  # ------------------------------------------------------------- loaders

  def test_hub_keras_layer_in_a_tf_keras_model(self):
    import tf_keras  # pylint: disable=g-import-not-at-top
    inputs = tf_keras.Input(shape=(RES_E, RES_E, 3))
    layer = hub.KerasLayer(self.export_dir, signature='encode',
                           signature_outputs_as_dict=True)
    outputs = layer(inputs)
    model = tf_keras.Model(inputs, [outputs['z_mean'],
                                    outputs['bn_crelu_feat']])
    z_mean, crelu = model.predict(self.real, verbose=0)
    want = self.loaded.encode(self.real)
    self.assertAllClose(z_mean, want['z_mean'], atol=1e-5)
    self.assertAllClose(crelu, want['bn_crelu_feat'], atol=1e-5)
    self.assertLen(layer.weights, len(self.loaded.variables))
    self.assertLen(layer.weights, len(self.state.ema_generator.variables) +
                   len(self.state.ema_encoder.variables) +
                   len(self.state.nets.discriminator.variables))

  def test_hub_keras_layer_with_unknown_image_size_checks_it(self):
    import tf_keras  # pylint: disable=g-import-not-at-top
    inputs = tf_keras.Input(shape=(None, None, 3))
    outputs = hub.KerasLayer(self.export_dir, signature='encode',
                             signature_outputs_as_dict=True)(inputs)
    model = tf_keras.Model(inputs, outputs['z_mean'])
    self.assertAllClose(model(self.real), self.loaded.encode(self.real)[
        'z_mean'], atol=1e-5)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                ENCODE_SHAPE + r'; got shape.*\[2 32 32 3\]'):
      model(_x(2, 32))

  def test_tfsm_layer_in_a_keras3_functional_model(self):
    inputs = keras.Input(shape=(RES_E, RES_E, 3))
    outputs = keras.layers.TFSMLayer(self.export_dir,
                                     call_endpoint='encode')(inputs)
    model = keras.Model(inputs, {'z_mean': outputs['z_mean'],
                                 'avepool_feat': outputs['avepool_feat']})
    got = model.predict(self.real, verbose=0)
    want = self.loaded.encode(self.real)
    self.assertAllClose(got['z_mean'], want['z_mean'], atol=1e-5)
    self.assertAllClose(got['avepool_feat'], want['avepool_feat'], atol=1e-5)

  def test_module_records_config_step_and_statistics(self):
    m = self.loaded
    self.assertEqual(int(m.step.numpy()), 2)
    self.assertTrue(bool(m.use_ema.numpy()))
    self.assertEqual(int(m.standing_stats_batches.numpy()),
                     defaults.STANDING_STATS_BATCHES)
    with open(m.config_file.asset_path.numpy().decode()) as f:
      self.assertEqual(json.load(f),
                       config_lib.to_dict(config_lib.load(self.workdir)))
    self.assertTrue(os.path.exists(
        os.path.join(self.export_dir, 'assets', 'config.json')))
    with open(os.path.join(self.export_dir, 'assets', 'export_info.json')) as f:
      info = json.load(f)
    self.assertEqual(info['step'], 2)
    self.assertTrue(info['use_ema'])
    stats = info['batch_norm_statistics']
    self.assertEqual((stats['batches'], stats['batch_size']), (16, 64))
    self.assertIn('standing statistics', stats['method'])
    # The networks' variables are saved with the module.
    self.assertLen(m.generator.variables,
                   len(self.state.ema_generator.variables))
    self.assertLen(m.encoder.trainable_variables,
                   len(self.state.ema_encoder.trainable_variables))
    self.assertLen(m.discriminator.variables,
                   len(self.state.nets.discriminator.variables))

  # --------------------------------------------------------- wrong inputs

  def test_wrong_inputs_name_the_expected_shape(self):
    sig, m = self.loaded.signatures, self.loaded
    signature_cases = [
        ('spatial size', lambda: sig['encode'](x=tf.zeros([2, 32, 32, 3])),
         ENCODE_SHAPE + r'; got shape.*\[2 32 32 3\]'),
        ('rank', lambda: sig['encode'](x=tf.zeros([RES_E, RES_E, 3])),
         ENCODE_SHAPE + r'; got shape.*\[64 64 3\]'),
        ('channels', lambda: sig['encode'](x=tf.zeros([2, RES_E, RES_E, 1])),
         ENCODE_SHAPE + r'; got shape.*\[2 64 64 1\]'),
        ('channels first', lambda: sig['encode'](x=tf.zeros([2, 3, 64, 64])),
         ENCODE_SHAPE + r'; got shape.*\[2 3 64 64\]'),
        ('z size', lambda: sig['generate'](z=tf.zeros([2, Z_DIM + 1])),
         r'generate: z must be float32 \[N, 16\]; got shape.*\[2 17\]'),
        ('D image size', lambda: sig['discriminate'](
            x=tf.zeros([2, RES_E, RES_E, 3]), z=tf.zeros([2, Z_DIM])),
         r'discriminate: x must be float32 \[N, 32, 32, 3\] in \[-1, 1\]'),
        ('D batch', lambda: sig['discriminate'](
            x=tf.zeros([2, RES, RES, 3]), z=tf.zeros([3, Z_DIM])),
         r'x and z must have the same batch size N; got.*2.*3'),
        # The signature itself checks the dtype, before the function runs.
        ('dtype', lambda: sig['encode'](
            x=tf.zeros([2, RES_E, RES_E, 3], tf.float64)),
         r'expected to be a float tensor but is a double tensor'),
    ]
    for what, call, pattern in signature_cases:
      with self.subTest(signatures=what):
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, pattern):
          call()
    # Methods check static shapes and dtypes when binding the arguments.
    method_cases = [
        ('spatial size', lambda: m.encode(tf.zeros([2, 32, 32, 3]))),
        ('rank', lambda: m.encode(np.zeros([RES_E, RES_E, 3], np.float32))),
        ('channels', lambda: m.encode(tf.zeros([2, RES_E, RES_E, 1]))),
        ('dtype', lambda: m.encode(tf.zeros([2, RES_E, RES_E, 3],
                                            tf.float64))),
    ]
    for what, call in method_cases:
      with self.subTest(method=what):
        with self.assertRaisesRegex(TypeError, EXPECTED_SPEC):
          call()
    with self.assertRaisesRegex(TypeError, r"TensorSpec\(shape=\(None, 16\), "
                                r"dtype=tf.float32, name='z'\)"):
      m.generate(tf.zeros([2, Z_DIM + 1]))
    # A caller whose graph does not know the shape gets the run-time check.
    relaxed = tf.function(lambda x: m.encode(x),
                          input_signature=[tf.TensorSpec(None, tf.float32)])
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                ENCODE_SHAPE + r'; got shape.*\[2 32 32 3\]'):
      relaxed(tf.zeros([2, 32, 32, 3]))

  # ------------------------------------------------------------ options

  def test_no_ema_exports_the_live_networks(self):
    module, info = export_lib.build_module(
        self.config, self.state, step=2, use_ema=False,
        standing_stats_batches=0)
    self.assertFalse(info['use_ema'])
    self.assertEqual(info['batch_norm_statistics']['batches'], 0)
    z, x = _z(3, seed=5), _x(3, RES_E, seed=5)
    self.assertAllClose(module.generate(z)['default'],
                        self.state.nets.generator(z, training=False),
                        atol=1e-5)
    self.assertAllClose(module.encode(x)['z_mean'],
                        self.state.nets.encoder(x, training=False)['z_mean'],
                        atol=1e-5)
    self.assertGreater(np.abs(module.generate(z)['default'] -
                              self.loaded.generate(z)['default']).max(), 1e-3)

  # ------------------------------------------------------------- writing

  def test_failed_export_leaves_nothing_behind(self):
    target = os.path.join(self.root, 'failed')

    def partial_save(obj, export_dir, **kwargs):
      del obj, kwargs
      os.makedirs(export_dir)
      with open(os.path.join(export_dir, 'saved_model.pb'), 'w') as f:
        f.write('partial')
      raise OSError('disk full')

    before = set(os.listdir(self.root))
    with mock.patch.object(tf.saved_model, 'save', side_effect=partial_save):
      with self.assertRaisesRegex(OSError, 'disk full'):
        export_lib.save_module(self.module, target, config=self.config,
                               info=self.info)
    self.assertFalse(os.path.exists(target))
    self.assertEqual(set(os.listdir(self.root)), before)

    # A failed overwrite keeps the old module.
    shutil.copytree(self.export_dir, target)
    old = sorted(os.listdir(target))
    with mock.patch.object(tf.saved_model, 'save', side_effect=partial_save):
      with self.assertRaisesRegex(OSError, 'disk full'):
        export_lib.save_module(self.module, target, config=self.config,
                               info=self.info, overwrite=True)
    self.assertEqual(sorted(os.listdir(target)), old)
    self.assertEqual(set(os.listdir(self.root)), before | {'failed'})

  def test_existing_export_dir_is_refused_unless_overwrite(self):
    target = os.path.join(self.root, 'taken')
    os.makedirs(target)
    with open(os.path.join(target, 'keep.txt'), 'w') as f:
      f.write('old')
    with self.assertRaisesRegex(FileExistsError,
                                f'{target} already exists.*--overwrite'):
      export_lib.export(self.workdir, target)
    with self.assertRaisesRegex(FileExistsError, 'already exists'):
      export_lib.save_module(self.module, target, config=self.config,
                             info=self.info)
    self.assertEqual(os.listdir(target), ['keep.txt'])
    # --overwrite replaces only an export (tests/faults_test.py has the
    # other refusals).
    with self.assertRaisesRegex(export_lib.OverwriteRefusedError,
                                'not a bigbigan-tf export'):
      export_lib.export(self.workdir, target, overwrite=True)
    self.assertEqual(os.listdir(target), ['keep.txt'])
    shutil.rmtree(target)
    shutil.copytree(self.export_dir, target)

    # Overwrite, from a caller using mixed_bfloat16 (as a run may): the
    # checkpoint's weights are float32 and the module computes in float32.
    keras.config.set_dtype_policy('mixed_bfloat16')
    try:
      export_lib.export(self.workdir, target, overwrite=True,
                        standing_stats_batches=0)
      self.assertEqual(keras.config.dtype_policy().name, 'mixed_bfloat16')
    finally:
      keras.config.set_dtype_policy('float32')
    self.assertFalse([p for p in os.listdir(self.root)
                      if '.tmp-' in p or '.old-' in p])
    replaced = tf.saved_model.load(target)
    self.assertEqual(int(replaced.standing_stats_batches.numpy()), 0)
    self.assertEqual({v.dtype for v in replaced.variables
                      if v.dtype.is_floating}, {tf.float32})
    # D has no batch norm: its scores match the float32 export's.
    x, z = _x(3, RES, seed=8), _z(3, seed=8)
    got, want = replaced.discriminate(x, z), self.loaded.discriminate(x, z)
    for key in ('score_x', 'score_z', 'score_xz'):
      self.assertAllClose(got[key], want[key], atol=1e-5, msg=key)

  def test_missing_workdir_or_checkpoint_is_reported(self):
    missing = os.path.join(self.root, 'nowhere')
    with self.assertRaisesRegex(FileNotFoundError,
                                'not a bigbigan-tf workdir'):
      export_lib.export(missing, os.path.join(self.root, 'x'))
    bad = os.path.join(self.workdir, 'checkpoints', 'ckpt-99')
    with self.assertRaisesRegex(FileNotFoundError,
                                f'Checkpoint {bad} does not exist'):
      export_lib.export(self.workdir, os.path.join(self.root, 'x'),
                        checkpoint=bad)
    empty = os.path.join(self.root, 'empty_run')
    config_lib.save(self.config, empty)
    with self.assertRaisesRegex(FileNotFoundError, 'No checkpoint in.*train '
                                'first'):
      export_lib.export(empty, os.path.join(self.root, 'x'))
    self.assertFalse(os.path.exists(os.path.join(self.root, 'x')))

  def test_checkpoint_without_the_networks_is_refused(self):
    workdir = os.path.join(self.root, 'partial_run')
    config_lib.save(self.config, workdir)
    partial = tf.train.Checkpoint(step=tf.Variable(7, dtype=tf.int64))
    tf.train.CheckpointManager(partial, os.path.join(workdir, 'checkpoints'),
                               max_to_keep=1).save(checkpoint_number=7)
    target = os.path.join(self.root, 'from_partial')
    with self.assertRaisesRegex(checkpoints.IncompleteCheckpointError,
                                'ckpt-7 does not hold every variable'):
      export_lib.export(workdir, target, standing_stats_batches=0)
    self.assertFalse(os.path.exists(target))

  # ----------------------------------------------------------- export.py

  def test_export_py_writes_the_same_module(self):
    returncode, out, err = self.cli['ok']
    self.assertEqual(returncode, 0, err)
    self.assertIn(self.cli_dir, out)
    cli = hub.load(self.cli_dir)
    z, x = _z(4, seed=7), self.real[:4]
    self.assertAllClose(cli.signatures['generate'](z=z)['default'],
                        self.loaded.generate(z)['default'], atol=1e-4)
    self.assertAllClose(cli.signatures['encode'](x=x)['z_mean'],
                        self.loaded.encode(x)['z_mean'], atol=1e-4)
    self.assertEqual(int(cli.step.numpy()), 2)
    with open(os.path.join(self.cli_dir, 'assets', 'export_info.json')) as f:
      info = json.load(f)
    self.assertEqual(info['checkpoint'], self.checkpoint)
    self.assertTrue(info['use_ema'])
    # export.py's flag defaults are the library's.
    self.assertEqual(info['batch_norm_statistics'], self.info[
        'batch_norm_statistics'])

  def test_export_py_errors_are_one_clear_line(self):
    cases = {'no_workdir': 'not a bigbigan-tf workdir',
             'exists': f'{self.existing_dir} already exists.*--overwrite'}
    for name, pattern in cases.items():
      with self.subTest(name):
        returncode, _, err = self.cli[name]
        self.assertEqual(returncode, 2, err)
        self.assertRegex(err, 'error: .*' + pattern)
        self.assertNotIn('Traceback', err)
    self.assertEqual(os.listdir(self.existing_dir), [])


if __name__ == '__main__':
  tf.test.main()
