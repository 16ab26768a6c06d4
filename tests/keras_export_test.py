"""The native Keras 3 models an export writes (keras_export.py).

One export of freshly built tiny networks (no training: the writer copies the
networks the SavedModel serves, whatever their weights) is checked on the
TensorFlow backend in process, and on JAX and PyTorch in one subprocess per
backend (backend_checks.py) that does every check of that backend at once:
loading, equality to the SavedModel, gradients, and docs/finetuning.md's
functional and subclassed routes as written.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_finetune_check
from bigbigan_tf import export_lib
from bigbigan_tf import keras_export
from bigbigan_tf import models
from bigbigan_tf.configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
NAMES = ('encoder', 'generator', 'discriminator')

BACKENDS = ('jax', 'torch')
# Whether this session runs the backend tests (set before setUpClass).
_BACKENDS_SELECTED = []


@pytest.fixture(autouse=True, scope='module')
def _backends_selected(request):
  # Deselected tests (-m "not slow") are no longer in session.items.
  _BACKENDS_SELECTED[:] = [any(
      item.module is request.module and item.get_closest_marker('slow')
      for item in request.session.items)]


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
    # docs/finetuning.md loads 'E/keras/encoder.keras'.
    os.symlink(cls.export_dir, os.path.join(cls.root, 'E'))
    cls.procs, cls.results = {}, {}
    if _BACKENDS_SELECTED != [False]:
      # They run while the TensorFlow tests below do.
      cls.start_backends()

  @classmethod
  def start_backends(cls):
    """Starts one backend_checks.py per non-TF backend (once, both at once)."""
    for backend in BACKENDS:
      if backend in cls.procs:
        continue
      env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS='cpu',
                 TF_CPP_MIN_LOG_LEVEL='2')
      cls.procs[backend] = (time.time(), subprocess.Popen(
          [sys.executable, os.path.join(TESTS, 'backend_checks.py'),
           cls.root], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
          text=True, env=env, cwd=REPO))

  @classmethod
  def backend_result(cls, backend: str) -> dict:
    if backend not in cls.results:
      cls.start_backends()
      start, proc = cls.procs[backend]
      out, err = proc.communicate(timeout=900)
      lines = [l for l in out.splitlines() if l.startswith('RESULT ')]
      if proc.returncode or not lines:
        raise AssertionError(
            f'{backend} subprocess failed ({proc.returncode}):\n'
            f'{out[-2000:]}\n{err[-4000:]}')
      cls.results[backend] = json.loads(lines[-1][len('RESULT '):])
      # Wall time, both backends running side by side.
      print(f'\n{backend} subprocess: {time.time() - start:.0f} s '
            f'(its own clock: {cls.results[backend]["seconds"]:.0f} s)')
    return cls.results[backend]

  @classmethod
  def tearDownClass(cls):
    for _, proc in cls.procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.communicate()
    shutil.rmtree(cls.root, ignore_errors=True)
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

  def test_tensorflow_doc_routes_finetune(self):
    self._check_finetune(keras_finetune_check.run_doc(self.root))

  def _check_finetune(self, facts):
    self.assertEqual(sorted(facts), sorted(keras_finetune_check.ROUTES))
    for route, r in facts.items():
      self.assertLess(r['loss'][-1], r['loss'][0], (route, r))
      self.assertGreater(r['weights_change'], 0, (route, r))
      self.assertEqual(r['stats_change_predict'], 0, (route, r))
      self.assertGreater(r['stats_change_fit'], 0, (route, r))
      self.assertLess(r['batch_dependence'], 1e-5, (route, r))

  def _check_backend(self, backend):
    r = self.backend_result(backend)
    self.assertEqual(r['backend'], backend)
    self.assertFalse(r['tf_imported_by_loading'])
    for k in ('encode', 'generate', 'discriminate', 'revnet'):
      self.assertLess(r[k], 1e-4, (k, r))
    res = self.config.model.encoder_resolution
    self.assertEqual(r['resolution'], res)
    self.assertEqual(r['output_shape']['avepool_feat'],
                     [None, self.nets['encoder'].feature_dim])
    self.assertGreater(r['noise_draws_differ'], 0, r)
    self.assertLess(r['given_noise'], 1e-5, r)
    for name, g in r['gradients'].items():
      self.assertTrue(g['finite'], (name, g))
      self.assertGreater(g['nonzero'], g['count'] // 2, (name, g))
    self._check_finetune(r['finetune'])

  @pytest.mark.slow
  def test_jax_loads_without_tensorflow_matches_and_finetunes(self):
    self._check_backend('jax')

  @pytest.mark.slow
  def test_torch_loads_without_tensorflow_matches_and_finetunes(self):
    self._check_backend('torch')


if __name__ == '__main__':
  unittest.main()
