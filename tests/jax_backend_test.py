"""The networks build and run on Keras' JAX backend (skipped without jax)."""

import importlib.util
import os
import subprocess
import sys
import unittest

import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = r"""
import sys
sys.path.insert(0, %(repo)r)
import keras
assert keras.backend.backend() == 'jax', keras.backend.backend()
import jax
import numpy as np
from bigbigan_tf.configs import tiny
from bigbigan_tf.models import build_networks
config = tiny.get_config()
nets = build_networks(config.model)
rng = np.random.default_rng(0)
z = rng.standard_normal((3, config.model.z_dim)).astype(np.float32)
x_e = rng.uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
for training in (True, False):
  x = np.asarray(nets.generator(z, training=training))
  assert x.shape == (3, 32, 32, 3) and -1 <= x.min() and x.max() <= 1, x.shape
  enc = nets.encoder(x_e, training=training, noise=z)
  assert enc['bn_crelu_feat'].shape == (3, 2 * enc['avepool_feat'].shape[1])
  np.testing.assert_allclose(
      np.asarray(enc['z_sample']),
      np.asarray(enc['z_mean']) + np.asarray(enc['z_stdev']) * z, atol=1e-5)
  scores = nets.discriminator(x, np.asarray(enc['z_mean']), training=training)
  assert all(np.asarray(s).shape == (3,) for s in scores.values())

# A jitted, differentiable D loss through Keras' stateless API.
d = nets.discriminator
def loss_fn(trainable, non_trainable, x, z):
  scores, _ = d.stateless_call(trainable, non_trainable, x, z, training=True)
  return sum(jax.numpy.mean(s) for s in scores.values())
grads = jax.jit(jax.grad(loss_fn))(
    [v.value for v in d.trainable_variables],
    [v.value for v in d.non_trainable_variables], x, z)
norms = [float(jax.numpy.linalg.norm(g)) for g in grads]
assert len(norms) == len(d.trainable_variables) and all(np.isfinite(norms))
assert sum(n > 0 for n in norms) > len(norms) // 2, norms
# A RevNet encoder builds and differentiates too (plain autodiff on JAX).
from bigbigan_tf.models import revnet
rev = revnet.RevNetEncoder(z_dim=config.model.z_dim, blocks_per_stage=(2, 1),
                           width_multiplier=0.0625, head_depth=1,
                           head_width=16)
for training in (True, False):
  enc = rev(x_e, training=training, noise=z)
  assert enc['bn_crelu_feat'].shape == (3, 2 * enc['avepool_feat'].shape[1])
def rev_loss(trainable, non_trainable, x, z):
  out, _ = rev.stateless_call(trainable, non_trainable, x, training=True,
                              noise=z)
  return jax.numpy.sum(out['z_sample'] ** 2)
rev_grads = jax.jit(jax.grad(rev_loss))(
    [v.value for v in rev.trainable_variables],
    [v.value for v in rev.non_trainable_variables], x_e, z)
rev_norms = [float(jax.numpy.linalg.norm(g)) for g in rev_grads]
assert len(rev_norms) == len(rev.trainable_variables)
assert all(np.isfinite(rev_norms)), rev_norms
assert sum(n > 0 for n in rev_norms) > len(rev_norms) // 2, rev_norms
print('JAX RevNet OK', len(rev_norms))
print('JAX OK', len(norms))
"""


@unittest.skipIf(importlib.util.find_spec('jax') is None, 'jax not installed')
class JaxBackendTest(tf.test.TestCase):

  def test_networks_on_jax(self):
    env = dict(os.environ, KERAS_BACKEND='jax', JAX_PLATFORMS='cpu')
    out = subprocess.run([sys.executable, '-c', _SCRIPT % {'repo': REPO}],
                         capture_output=True, text=True, timeout=600, env=env)
    self.assertEqual(out.returncode, 0, out.stderr[-4000:])
    self.assertIn('JAX RevNet OK', out.stdout)
    self.assertIn('JAX OK', out.stdout)


if __name__ == '__main__':
  tf.test.main()
