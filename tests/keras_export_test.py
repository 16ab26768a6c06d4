"""The native Keras 3 models an export writes (keras_export.py).

One export of freshly built tiny networks (no training: the writer copies the
networks the SavedModel serves, whatever their weights) is checked on the
TensorFlow backend in process, and on JAX in one subprocess that does every
JAX check at once.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

import keras
import numpy as np
import tensorflow as tf

import keras_finetune_check
from bigbigan_tf import export_lib
from bigbigan_tf import keras_export
from bigbigan_tf import models
from bigbigan_tf.configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
NAMES = ('encoder', 'generator', 'discriminator')

# On JAX: loads the three models and the RevNet encoder without importing
# TensorFlow, compares their outputs with the SavedModel's (saved as .npz by
# the TF side) and fine-tunes the encoder with Adam. Prints one JSON line.
_SCRIPT = textwrap.dedent('''
    import json, os, sys
    sys.path[:0] = [%(repo)r, %(tests)r]
    import keras, numpy as np
    import bigbigan_tf.models
    root = %(root)r
    nets = {n: bigbigan_tf.models.load(os.path.join(root, 'export', 'keras',
                                                    n + '.keras'))
            for n in ('encoder', 'generator', 'discriminator')}
    revnet = keras.saving.load_model(os.path.join(root, 'revnet.keras'))
    out = {'backend': keras.backend.backend(),
           'tf_imported_by_loading': 'tensorflow' in sys.modules}
    ref = dict(np.load(os.path.join(root, 'reference.npz')))
    def diff(a, b):
      return float(np.abs(keras.ops.convert_to_numpy(a) - b).max())
    e = nets['encoder'](ref['x_e'], training=False)
    out['encode'] = max(diff(e[k], ref['encode_' + k]) for k in
                        ('avepool_feat', 'bn_crelu_feat', 'z_mean'))
    out['generate'] = diff(nets['generator'](ref['z'], training=False),
                           ref['generate'])
    d = nets['discriminator'](ref['x'], ref['z'], training=False)
    out['discriminate'] = max(diff(d[k], ref['discriminate_' + k])
                              for k in ('score_x', 'score_z', 'score_xz'))
    r = revnet(ref['x_e'], training=False)
    out['revnet'] = max(diff(r[k], ref['revnet_' + k]) for k in
                        ('avepool_feat', 'bn_crelu_feat', 'z_mean'))
    import keras_finetune_check
    out['finetune'] = keras_finetune_check.finetune(
        os.path.join(root, 'export', 'keras', 'encoder.keras'),
        ref['x_e'].shape[1])
    print('RESULT ' + json.dumps(out))
''')


def _max_diff(a, b) -> float:
  return float(np.abs(np.asarray(a) - np.asarray(b)).max())


class KerasExportTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.config = tiny.get_config()
    keras.utils.set_random_seed(1)
    # The machine's speed tricks ('auto'), as training uses: the writer must
    # turn them into plain networks with the same weights.
    nets = models.build_networks(cls.config.model)
    cls.nets = {'encoder': nets.encoder, 'generator': nets.generator,
                'discriminator': nets.discriminator}
    # Power iterations, as training does, so that D's spectral norms (and its
    # scores) have trained-network magnitudes rather than 1e6.
    m = cls.config.model
    for _ in range(20):
      nets.discriminator(np.zeros((2, m.resolution, m.resolution, 3),
                                  np.float32),
                         np.ones((2, m.z_dim), np.float32), training=True)
    module = export_lib.BigBiGANModule(
        **cls.nets, model_config=cls.config.model, step=0, use_ema=True,
        standing_stats_batches=0)
    cls.export_dir = export_lib.save_module(
        module, os.path.join(cls.root, 'export'), config=cls.config,
        info={'use_ema': True, 'step': 0})
    cls.saved = tf.saved_model.load(cls.export_dir)
    rng = np.random.default_rng(0)
    m = cls.config.model
    cls.x_e = rng.uniform(-1, 1, (4, m.encoder_resolution,
                                  m.encoder_resolution, 3)).astype(np.float32)
    cls.x = rng.uniform(-1, 1, (4, m.resolution, m.resolution, 3)).astype(
        np.float32)
    cls.z = rng.standard_normal((4, m.z_dim)).astype(np.float32)
    ref = {'x_e': cls.x_e, 'x': cls.x, 'z': cls.z,
           'generate': cls.saved.generate(cls.z)['default'].numpy()}
    for k, v in cls.saved.encode(cls.x_e).items():
      ref['encode_' + k] = v.numpy()
    for k, v in cls.saved.discriminate(cls.x, cls.z).items():
      ref['discriminate_' + k] = v.numpy()
    # A RevNet encoder, written the same way.
    rev_config = tiny.get_config()
    rev_config.model.encoder.kind = 'revnet'
    cls.revnet = models.build_networks(rev_config.model).encoder
    for k, v in cls.revnet(cls.x_e, training=False).items():
      ref['revnet_' + k] = keras.ops.convert_to_numpy(v)
    cls.revnet_path = os.path.join(cls.root, 'revnet.keras')
    keras_export.plain_copy(cls.revnet).save(cls.revnet_path)
    cls.ref = ref
    np.savez(os.path.join(cls.root, 'reference.npz'), **ref)
    # The JAX checks run meanwhile.
    env = dict(os.environ, KERAS_BACKEND='jax', JAX_PLATFORMS='cpu',
               TF_CPP_MIN_LOG_LEVEL='2')
    cls.jax_proc = subprocess.Popen(
        [sys.executable, '-c', _SCRIPT % {'repo': REPO, 'tests': TESTS,
                                          'root': cls.root}],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=REPO)
    cls._jax = None

  @classmethod
  def jax_result(cls) -> dict:
    if cls._jax is None:
      out, err = cls.jax_proc.communicate(timeout=600)
      lines = [l for l in out.splitlines() if l.startswith('RESULT ')]
      if cls.jax_proc.returncode or not lines:
        raise AssertionError(f'JAX subprocess failed:\n{out}\n{err[-3000:]}')
      cls._jax = json.loads(lines[-1][len('RESULT '):])
    return cls._jax

  @classmethod
  def tearDownClass(cls):
    if cls.jax_proc.poll() is None:
      cls.jax_proc.kill()
      cls.jax_proc.communicate()
    super().tearDownClass()

  def load(self, name):
    return models.load(os.path.join(self.export_dir, 'keras',
                                    f'{name}.keras'))

  def test_layout_in_export_and_info(self):
    self.assertEqual(sorted(os.listdir(os.path.join(self.export_dir,
                                                    'keras'))),
                     sorted(f'{n}.keras' for n in NAMES))
    with open(os.path.join(self.export_dir, 'assets',
                           export_lib.INFO_ASSET)) as f:
      info = json.load(f)
    self.assertEqual(info['keras']['files'], keras_export.KERAS_FILES)
    # --overwrite still recognises the export, keras/ included.
    export_lib.check_overwritable(self.export_dir)

  def test_tensorflow_outputs_equal_savedmodel(self):
    e = self.load('encoder')(self.x_e, training=False)
    for k in ('avepool_feat', 'bn_crelu_feat', 'z_mean'):
      self.assertLess(_max_diff(e[k], self.ref['encode_' + k]), 1e-5, k)
    g = self.load('generator')(self.z, training=False)
    self.assertLess(_max_diff(g, self.ref['generate']), 1e-5)
    d = self.load('discriminator')(self.x, self.z, training=False)
    for k in ('score_x', 'score_z', 'score_xz'):
      self.assertLess(_max_diff(d[k], self.ref['discriminate_' + k]), 1e-5,
                      k)

  def test_round_trip_config_weights_outputs(self):
    for name in NAMES:
      loaded = self.load(name)
      original = self.nets[name]
      self.assertIs(type(loaded), type(original))
      path = os.path.join(self.root, f'again_{name}.keras')
      loaded.save(path)
      again = keras.saving.load_model(path)
      self.assertEqual(again.get_config(), loaded.get_config())
      self.assertEqual([v.path for v in again.weights],
                       [v.path for v in original.weights])
      for a, b in zip(again.weights, original.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    e1 = self.load('encoder')(self.x_e, training=False)['z_mean']
    e2 = keras.saving.load_model(
        os.path.join(self.root, 'again_encoder.keras'))(
            self.x_e, training=False)['z_mean']
    np.testing.assert_array_equal(e1.numpy(), e2.numpy())

  def test_fast_ops_network_refuses_to_save(self):
    g = models.Generator(resolution=32, z_dim=16, ch=4,
                         fast_ops=models.FastOps.every_trick())
    g(np.zeros((1, 16), np.float32))
    with self.assertRaisesRegex(ValueError, 'plain_copy'):
      g.save(os.path.join(self.root, 'fast.keras'))

  def test_revnet_round_trip_and_gradient(self):
    loaded = keras.saving.load_model(self.revnet_path)
    self.assertIsInstance(loaded, models.RevNetEncoder)
    out = loaded(self.x_e, training=False)
    for k in ('avepool_feat', 'bn_crelu_feat', 'z_mean'):
      self.assertLess(_max_diff(out[k], self.ref['revnet_' + k]), 1e-5, k)
    # On TensorFlow, training mode takes the reversible (recomputing)
    # gradient; it equals ordinary backprop through the same weights.
    stored = models.RevNetEncoder.from_config(
        {**loaded.get_config(), 'reversible_grad': False})
    stored.build_from_config(loaded.get_build_config())
    stored.set_weights(loaded.get_weights())
    grads = []
    for net in (loaded, stored):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(self.x_e, training=True)['z_mean'] ** 2)
      grads.append(tape.gradient(loss, net.trainable_weights))
    for a, b in zip(*grads):
      np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-5)

  def test_tensorflow_finetune_adam(self):
    r = keras_finetune_check.finetune(
        os.path.join(self.export_dir, 'keras', 'encoder.keras'),
        self.config.model.encoder_resolution)
    self._check_finetune(r)

  def _check_finetune(self, r):
    self.assertLess(r['loss'][-1], r['loss'][0], r)
    self.assertGreater(r['weights_change'], 0, r)
    self.assertEqual(r['stats_change_predict'], 0, r)
    self.assertGreater(r['stats_change_fit'], 0, r)
    self.assertLess(r['batch_dependence'], 1e-5, r)

  def test_jax_loads_without_tensorflow_matches_and_finetunes(self):
    r = self.jax_result()
    self.assertEqual(r['backend'], 'jax')
    self.assertFalse(r['tf_imported_by_loading'])
    for k in ('encode', 'generate', 'discriminate', 'revnet'):
      self.assertLess(r[k], 1e-4, (k, r))
    self._check_finetune(r['finetune'])

  def test_torch_finetune_where_installed(self):
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      self.skipTest('torch is not installed (not in requirements-test.txt)')
    env = dict(os.environ, KERAS_BACKEND='torch', TF_CPP_MIN_LOG_LEVEL='2')
    out = subprocess.run(
        [sys.executable, '-c', _SCRIPT % {'repo': REPO, 'tests': TESTS,
                                          'root': self.root}],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    lines = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
    self.assertTrue(lines, out.stderr[-3000:])
    r = json.loads(lines[-1][len('RESULT '):])
    for k in ('encode', 'generate', 'discriminate', 'revnet'):
      self.assertLess(r[k], 1e-4, (k, r))
    self._check_finetune(r['finetune'])


if __name__ == '__main__':
  unittest.main()
