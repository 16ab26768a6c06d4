"""Smoke set for a second Python (3.12 on CI): the README's main paths.

Run by .ci/run with the Python of a fresh venv holding `pip install -r
requirements.txt -e .`: a tiny 2-step training, its export, `hub.load` and
its 'encode' signature, `hub.KerasLayer` of the export, the TF-GAN import
through bigbigan_tf.tfgan_compat, and `eval/evaluate.py --metrics=fid`
failing offline with one clear line (exit 2, no traceback). Prints one line
per check; exits non-zero on the first failure.
"""

import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, 'bigbigan_tf', 'configs', 'tiny.py')


def _run(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  out = subprocess.run([sys.executable, *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900,
                       check=False)
  if out.returncode != expect:
    sys.exit(f'smoke: {args[0]} exited {out.returncode}, expected {expect}:\n'
             f'{out.stdout[-2000:]}\n{out.stderr[-4000:]}')
  return out


def _check(name: str, start: float) -> None:
  print(f'smoke ok: {name} ({time.time() - start:.0f} s)', flush=True)


def main() -> None:
  root = tempfile.mkdtemp(prefix='smoke_')
  workdir, export = os.path.join(root, 'W'), os.path.join(root, 'E')
  print(f'smoke: Python {sys.version.split()[0]} in {root}', flush=True)

  t = time.time()
  _run('train.py', f'--workdir={workdir}', f'--config={TINY}',
       '--config.num_train_steps=2')
  _check('train.py, tiny config, 2 steps', t)

  t = time.time()
  _run('export.py', f'--workdir={workdir}', f'--export_dir={export}')
  _check('export.py', t)

  t = time.time()
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  m = hub.load(export)
  encode = m.signatures['encode']
  r = encode.structured_input_signature[1]['x'].shape[1]
  x = np.random.default_rng(0).uniform(-1, 1, (2, r, r, 3)).astype('float32')
  features = encode(x=tf.constant(x))['avepool_feat'].numpy()
  assert features.shape[0] == 2 and np.all(np.isfinite(features)), features
  _check(f"hub.load + signatures['encode'] ({features.shape})", t)

  t = time.time()
  layer = hub.KerasLayer(export, output_key='avepool_feat')
  model = tf_keras.Sequential([tf_keras.Input((r, r, 3)), layer])
  np.testing.assert_allclose(model(x).numpy(), features, atol=1e-5,
                             rtol=1e-4)
  _check('hub.KerasLayer of the export', t)

  t = time.time()
  from bigbigan_tf import tfgan_compat  # pylint: disable=g-import-not-at-top
  tfgan = tfgan_compat.import_tfgan()
  assert hasattr(tfgan.eval, 'frechet_classifier_distance_from_activations')
  _check('TF-GAN through bigbigan_tf.tfgan_compat', t)

  t = time.time()
  out = _run('eval/evaluate.py', f'--workdir={workdir}', '--metrics=fid',
             '--num_samples=8', '--batch_size=8', expect=2)
  errors = [l for l in out.stderr.splitlines() if l.startswith('error: ')]
  if 'Traceback' in out.stderr or len(errors) != 1:
    sys.exit('smoke: evaluate.py --metrics=fid offline should end in one '
             f'"error: " line and no traceback; stderr:\n{out.stderr[-4000:]}')
  _check(f'evaluate.py --metrics=fid offline: {errors[0][:120]}', t)


if __name__ == '__main__':
  main()
