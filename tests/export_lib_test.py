"""Export in-process (quick tier): an in-memory TrainState to a SavedModel.

No training and no subprocess: export.py, restoring a trained workdir and the
loaders (hub, Keras layers) are tests/export_test.py's (slow).
"""

import json
import os
import tempfile

import numpy as np
import tensorflow as tf

import testing
from bigbigan_tf import checkpoints
from bigbigan_tf import export_lib
from bigbigan_tf.configs import tiny

# The tiny config: z_dim 16, G at 32x32, E at 64x64, 128-d pooled features.
Z_DIM, RES, RES_E, FEAT = 16, 32, 64, 128


class ExportInProcessTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config = tiny.get_config()
    cls.state = checkpoints.TrainState(cls.config)
    # The EMA twins start as copies of the live networks: move them away,
    # so exporting the live ones instead would show.
    rng = np.random.default_rng(0)
    for net in (cls.state.ema_generator, cls.state.ema_encoder):
      for v in net.trainable_variables:
        v.assign(v + 0.1 * rng.standard_normal(v.shape).astype(np.float32))
    module, info = export_lib.build_module(cls.config, cls.state, step=7,
                                           standing_stats_batches=0)
    cls.root = tempfile.mkdtemp()
    cls.export_dir = export_lib.save_module(
        module, os.path.join(cls.root, 'export'), config=cls.config,
        info=info, keras_models=False)
    cls.loaded = tf.saved_model.load(cls.export_dir)

  def test_signatures_follow_the_hub_contract(self):
    self.assertCountEqual(self.loaded.signatures.keys(), export_lib.SIGNATURE_NAMES)
    testing.assert_hub_contract(self, self.loaded.signatures, z_dim=Z_DIM, res=RES,
                                res_e=RES_E, feat=FEAT)

  def test_outputs_equal_the_ema_networks_not_the_live_ones(self):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((3, Z_DIM)).astype(np.float32)
    x_e = rng.uniform(-1, 1, (3, RES_E, RES_E, 3)).astype(np.float32)
    x = rng.uniform(-1, 1, (3, RES, RES, 3)).astype(np.float32)
    s, sigs = self.state, self.loaded.signatures
    images = sigs['generate'](z=z)['default']
    want = s.ema_generator(z, training=False).numpy()
    self.assertAllClose(images, want, atol=1e-5)
    self.assertGreater(
        np.abs(s.nets.generator(z, training=False).numpy() - want).max(), 1e-3)
    feats = sigs['encode'](x=x_e)
    ref = s.ema_encoder(x_e, training=False)
    for key in ('z_mean', 'z_stdev', 'avepool_feat'):
      self.assertAllClose(feats[key], ref[key], atol=1e-5, msg=key)
    self.assertGreater(np.abs(s.nets.encoder(x_e)['z_mean'].numpy()
                              - ref['z_mean'].numpy()).max(), 1e-3)
    scores = sigs['discriminate'](x=x, z=z)
    ref = s.nets.discriminator(x, z, training=False)
    for key in ('score_x', 'score_z', 'score_xz'):
      self.assertAllClose(scores[key], ref[key], atol=1e-4, msg=key)

  def test_info_records_the_step_and_choices(self):
    with open(os.path.join(self.export_dir, 'assets',
                           export_lib.INFO_ASSET)) as f:
      info = json.load(f)
    self.assertEqual(info['step'], 7)
    self.assertIs(info['use_ema'], True)
    self.assertCountEqual(info['signatures'], export_lib.SIGNATURE_NAMES)


if __name__ == '__main__':
  tf.test.main()
