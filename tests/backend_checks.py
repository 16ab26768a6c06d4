"""Every check of one non-TensorFlow Keras backend, in one process.

Run by keras_export_test.py as `KERAS_BACKEND=jax|torch python
tests/backend_checks.py ROOT`, where ROOT holds the TensorFlow side's export
(ROOT/E), a RevNet encoder (ROOT/revnet.keras) and the SavedModel's outputs
(ROOT/reference.npz). Prints one line `RESULT {json}`. One process per
backend because starting one (imports, first compilations) is most of the
cost.
"""

import json
import os
import sys
import time

_START = time.time()
sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                os.path.dirname(os.path.abspath(__file__))]

# pylint: disable=g-import-not-at-top,wrong-import-position
import keras
import numpy as np

import bigbigan_tf.models
import keras_finetune_check

NAMES = ('encoder', 'generator', 'discriminator')


def _np(a) -> np.ndarray:
  return keras.ops.convert_to_numpy(a)


def _diff(a, b) -> float:
  return float(np.abs(_np(a) - np.asarray(b)).max())


def loaded_equal_savedmodel(root: str) -> dict:
  """Max |difference| of the loaded .keras networks to the SavedModel's."""
  nets = {n: bigbigan_tf.models.load(os.path.join(root, 'E', 'keras',
                                                  n + '.keras'))
          for n in NAMES}
  revnet = keras.saving.load_model(os.path.join(root, 'revnet.keras'))
  out = {'tf_imported_by_loading': 'tensorflow' in sys.modules}
  # One example (inference outputs are batch-independent): the batch size
  # the loaded models were built with, so JAX's eager mode compiles no
  # operation twice.
  ref = {k: v[:1] for k, v in np.load(os.path.join(root,
                                                   'reference.npz')).items()}
  e = nets['encoder'](ref['x_e'], training=False)
  out['encode'] = max(_diff(e[k], ref['encode_' + k]) for k in
                      ('avepool_feat', 'bn_crelu_feat', 'z_mean'))
  out['generate'] = _diff(nets['generator'](ref['z'], training=False),
                          ref['generate'])
  d = nets['discriminator'](ref['x'], ref['z'], training=False)
  out['discriminate'] = max(_diff(d[k], ref['discriminate_' + k])
                            for k in ('score_x', 'score_z', 'score_xz'))
  r = revnet(ref['x_e'], training=False)
  out['revnet'] = max(_diff(r[k], ref['revnet_' + k]) for k in
                      ('avepool_feat', 'bn_crelu_feat', 'z_mean'))
  enc = nets['encoder']
  out['resolution'] = enc.resolution
  out['output_shape'] = {k: list(v) for k, v in enc.compute_output_shape(
      (None, enc.resolution, enc.resolution, 3)).items()}
  # Noise: drawn from the encoder's stream unless given.
  x = ref['x_e']
  a, b = enc(x)['z_sample'], enc(x)['z_sample']
  out['noise_draws_differ'] = _diff(a, _np(b))
  given = enc(x, noise=ref['z'])
  out['given_noise'] = _diff(given['z_sample'], _np(given['z_mean'])
                             + _np(given['z_stdev']) * ref['z'])
  return out


def gradients(backend: str) -> dict:
  """Fresh tiny networks run in both modes; D's and a RevNet's gradients."""
  from bigbigan_tf.configs import tiny
  from bigbigan_tf.models import revnet
  m = tiny.get_config().model
  nets = bigbigan_tf.models.build_networks(
      m, fast_ops=bigbigan_tf.models.FastOps.plain())
  rng = np.random.default_rng(0)
  # Batch 2, as build_networks builds with (fewer JAX compilations).
  z = rng.standard_normal((2, m.z_dim)).astype(np.float32)
  x_e = rng.uniform(-1, 1, (2, m.encoder_resolution, m.encoder_resolution,
                            3)).astype(np.float32)
  for training in (True, False):
    x = _np(nets.generator(z, training=training))
    assert x.shape == (2, m.resolution, m.resolution, 3), x.shape
    assert -1 <= x.min() and x.max() <= 1
    enc = nets.encoder(x_e, training=training)
    assert _np(enc['bn_crelu_feat']).shape == (2, 2 * nets.encoder.feature_dim)
    scores = nets.discriminator(x, _np(enc['z_mean']), training=training)
    assert all(_np(s).shape == (2,) for s in scores.values())
  rev = revnet.RevNetEncoder(z_dim=m.z_dim, blocks_per_stage=(2, 1),
                             width_multiplier=0.0625, head_depth=1,
                             head_width=16)
  rev(x_e, training=False, noise=z)
  d = nets.discriminator
  if backend == 'jax':
    import jax  # Jitted, through Keras' stateless API.

    def d_loss(trainable, non_trainable):
      scores, _ = d.stateless_call(trainable, non_trainable, x, z,
                                   training=True)
      return sum(jax.numpy.mean(s) for s in scores.values())

    def rev_loss(trainable, non_trainable):
      # No `noise`: the encoder's SeedGenerator state is threaded through.
      out, _ = rev.stateless_call(trainable, non_trainable, x_e,
                                  training=True)
      return jax.numpy.sum(out['z_sample'] ** 2)

    grads = {}
    for name, net, fn in (('d', d, d_loss), ('revnet', rev, rev_loss)):
      grads[name] = jax.jit(jax.grad(fn))(
          [v.value for v in net.trainable_variables],
          [v.value for v in net.non_trainable_variables])
  else:  # torch
    grads = {}
    for name, net, fn in (
        ('d', d, lambda: sum(keras.ops.mean(s) for s in
                             d(x, z, training=True).values())),
        ('revnet', rev, lambda: keras.ops.sum(
            rev(x_e, training=True)['z_sample'] ** 2))):
      for v in net.trainable_variables:
        v.value.grad = None
      fn().backward()
      grads[name] = [v.value.grad for v in net.trainable_variables]
  out = {}
  for name, gs in grads.items():
    norms = [float(np.linalg.norm(_np(g))) if g is not None else 0.0
             for g in gs]
    out[name] = {'count': len(norms), 'finite': bool(np.all(np.isfinite(
        norms))), 'nonzero': sum(n > 0 for n in norms)}
  return out


def main(root: str) -> None:
  backend = keras.backend.backend()
  out = {'backend': backend, 'phase_seconds': {}}
  t = time.time()
  out['phase_seconds']['import'] = t - _START
  out.update(loaded_equal_savedmodel(root))
  out['phase_seconds']['load_equal'] = time.time() - t
  t = time.time()
  out['gradients'] = gradients(backend)
  out['phase_seconds']['gradients'] = time.time() - t
  t = time.time()
  out['finetune'] = keras_finetune_check.run_doc(root)
  out['phase_seconds']['finetune'] = time.time() - t
  out['seconds'] = time.time() - _START
  print('RESULT ' + json.dumps(out))


if __name__ == '__main__':
  main(sys.argv[1])
