"""eval/evaluate.py end to end on a 2-step tiny run, checkpoint and module.

One tiny run is trained once. In-process, `evaluate_lib.evaluate` computes
every metric with a small injected classifier standing in for Inception; the
numbers are checked against a direct computation from the restored EMA
networks, and against the same evaluation of the run exported as a module.
Meanwhile `python eval/evaluate.py` runs in subprocesses offline (no
Inception) and with an unknown metric.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import testing
from bigbigan_tf import checkpoints
from bigbigan_tf import data as data_lib
from bigbigan_tf import defaults
from bigbigan_tf import export_lib
from bigbigan_tf import grids
from bigbigan_tf import standing_stats
from bigbigan_tf.evaluation import evaluate_lib
from bigbigan_tf.evaluation import features as features_lib
from bigbigan_tf.evaluation import linear_probe as probe_lib
from bigbigan_tf.evaluation import metrics as metrics_lib
from bigbigan_tf.evaluation import prdc as prdc_lib
from bigbigan_tf.evaluation import settings as settings_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny config: G at 32x32, E at 64x64, z_dim 16, 4x4 grids; MNIST has
# 4,000 train / 1,000 test digits.
RES, RES_E, Z_DIM, GRID = 32, 64, 16, 4
# BATCH divides neither the samples nor the splits: partial batches are used.
NUM_SAMPLES, BATCH, SEED = 64, 50, 0
SCALARS = ('is', 'is_std', 'fid', 'kid', 'linear_probe/top1',
           'linear_probe/top5', 'linear_probe/train_val_top1', 'digit_fid',
           'recon_accuracy', 'digit_classifier_accuracy', 'prdc/precision',
           'prdc/recall', 'prdc/density', 'prdc/coverage')


def _small_classifier():
  """A fixed random map standing in for Inception: logits and 'pool_3'."""
  rng = np.random.default_rng(0)
  w_logits = tf.constant(rng.standard_normal((192, 10)).astype(np.float32))
  w_pool = tf.constant(rng.standard_normal((192, 16)).astype(np.float32))

  def classify(images):
    x = tf.reshape(tf.image.resize(tf.cast(images, tf.float32), [8, 8]),
                   [-1, 192])
    return {'logits': 0.3 * x @ w_logits, 'pool_3': tf.tanh(0.3 * x @ w_pool)}

  return classify


def _start_cli(*args):
  # Offline whatever the machine: the Hub probe goes to a closed local port,
  # and an empty Hub cache cannot hold a downloaded Inception.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO,
             HTTPS_PROXY='http://127.0.0.1:9', https_proxy='http://127.0.0.1:9',
             TFHUB_CACHE_DIR=tempfile.mkdtemp())
  return subprocess.Popen(
      [sys.executable, os.path.join('eval', 'evaluate.py'), *args], cwd=REPO,
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _event_values(directory):
  """{tag: [scalar or None (image)]} of the event files in directory."""
  values = {}
  for path in glob.glob(os.path.join(directory, 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tensor = tf.make_ndarray(value.tensor)
        values.setdefault(value.tag, []).append(
            float(tensor) if tensor.ndim == 0 else None)
  return values


@pytest.mark.slow
class EvaluateTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.workdir = os.path.join(cls.root, 'run')
    testing.train_tiny(cls.workdir, steps=2)

    # The command line runs meanwhile, on a copy of the run (its own eval/).
    cls.cli_workdir = os.path.join(cls.root, 'cli_run')
    shutil.copytree(cls.workdir, cls.cli_workdir)
    # A run whose W/eval is a file: the results cannot be written.
    cls.blocked_workdir = os.path.join(cls.root, 'blocked_run')
    shutil.copytree(cls.workdir, cls.blocked_workdir)
    open(os.path.join(cls.blocked_workdir, 'eval'), 'w').close()
    procs = {
        'write_fails': _start_cli(f'--workdir={cls.blocked_workdir}',
                                  '--metrics=grids', '--num_samples=16',
                                  '--standing_stats_batches=0'),
        'offline': _start_cli(f'--workdir={cls.cli_workdir}',
                              '--metrics=fid', '--num_samples=16'),
        'unknown': _start_cli(f'--workdir={cls.cli_workdir}',
                              '--metrics=fid,bogus'),
        'quick_probe': subprocess.Popen(
            [sys.executable, os.path.join('eval', 'quick_probe.py'),
             f'--workdir={cls.cli_workdir}'], cwd=REPO,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        'import': subprocess.Popen(
            [sys.executable, '-c', 'import eval.evaluate; print("ok")'],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True),
    }

    cls.classifier = staticmethod(_small_classifier())
    cls.result = evaluate_lib.evaluate(
        cls.workdir, metrics=list(evaluate_lib.METRICS),
        num_samples=NUM_SAMPLES, batch_size=BATCH,
        classifier_fn=cls.classifier, seed=SEED, probe_epochs=2,
        digit_classifier_epochs=1)

    # An independent reference: the restored EMA networks, called directly,
    # with the standing statistics export.py gives them (evaluate's default).
    z = np.random.default_rng(SEED).standard_normal(
        (NUM_SAMPLES, Z_DIM)).astype(np.float32)
    cls.config, cls.state, _ = checkpoints.restore(cls.workdir)
    _, moving_state, _ = checkpoints.restore(cls.workdir)
    cls.moving_fake = moving_state.ema_generator(z, training=False).numpy()
    cls.standing_stats = standing_stats.standing_statistics(
        cls.config, cls.state.ema_generator, cls.state.ema_encoder)
    cls.fake = cls.state.ema_generator(z, training=False).numpy()
    batch = next(iter(data_lib.make_dataset(
        cls.config.data, image_size=RES_E, batch_size=NUM_SAMPLES,
        training=False)))
    cls.real_e = batch['image'].numpy()
    cls.real = tf.nn.avg_pool2d(cls.real_e, 2, 2, 'VALID').numpy()

    # The same run as a module (export's default standing statistics, the
    # same as evaluate's), evaluated into a new workdir that has only the
    # cached digit classifier: its config comes from the module.
    module, info = export_lib.build_module(cls.config, cls.state, step=2)
    cls.module_dir = export_lib.save_module(
        module, os.path.join(cls.root, 'export'), config=cls.config,
        info=info)
    cls.module_workdir = os.path.join(cls.root, 'module_eval')
    os.makedirs(os.path.join(cls.module_workdir, 'eval'))
    shutil.copy(os.path.join(cls.workdir, 'eval', 'digit_classifier.keras'),
                os.path.join(cls.module_workdir, 'eval'))
    cls.module_result = evaluate_lib.evaluate(
        cls.module_workdir, module=cls.module_dir,
        metrics=['is', 'fid', 'kid', 'linear_probe', 'grids', 'digit_fid'],
        num_samples=NUM_SAMPLES, batch_size=BATCH,
        classifier_fn=cls.classifier, seed=SEED, probe_epochs=2)
    # Inception unavailable: the other metrics are still computed and written.
    cls.partial_workdir = os.path.join(cls.root, 'partial_eval')
    cls.partial_result = evaluate_lib.evaluate(
        cls.partial_workdir, module=cls.module_dir, metrics=['kid', 'grids'],
        inception=os.path.join(cls.root, 'no_inception'))
    # The checkpoint's own (live networks') batch-norm statistics.
    cls.moving_workdir = os.path.join(cls.root, 'moving_stats')
    shutil.copytree(cls.workdir, cls.moving_workdir)
    cls.moving_result = evaluate_lib.evaluate(
        cls.moving_workdir, metrics=['grids'], num_samples=NUM_SAMPLES,
        batch_size=BATCH, seed=SEED, standing_stats_batches=0)

    cls.cli = {}
    for name, proc in procs.items():
      out, err = proc.communicate(timeout=600)
      cls.cli[name] = (proc.returncode, out, err)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  # ---------------------------------------------------------- results file

  def test_results_json_records_source_settings_and_every_metric(self):
    eval_dir = os.path.join(self.workdir, 'eval')
    fp = self.result['fingerprint']
    saved = _read_json(os.path.join(eval_dir, f'results_step2_{fp}.json'))
    self.assertEqual(saved, _read_json(os.path.join(eval_dir,
                                                    'results_latest.json')))
    self.assertEqual(saved['results_file'],
                     os.path.join(eval_dir, f'results_step2_{fp}.json'))
    # The settings the figures depend on, and their key.
    self.assertEqual(saved['comparable'], settings_lib.comparable(
        self.config, metrics=list(evaluate_lib.METRICS),
        inception_source='classifier_fn', num_samples=NUM_SAMPLES,
        feature=defaults.PROBE_FEATURE, seed=SEED, probe_epochs=2,
        digit_classifier_epochs=1, prdc_k=defaults.PRDC_K,
        standing_stats_batches=defaults.STANDING_STATS_BATCHES))
    self.assertEqual(fp, settings_lib.fingerprint(saved['comparable']))
    self.assertEqual(saved['step'], 2)
    self.assertEqual(saved['source'], 'checkpoint')
    self.assertEqual(saved['checkpoint'],
                     os.path.join(self.workdir, 'checkpoints', 'ckpt-2'))
    self.assertIsNone(saved['module'])
    self.assertEqual(saved['errors'], {})
    settings = saved['settings']
    self.assertEqual(settings['metrics'], list(evaluate_lib.METRICS))
    self.assertEqual(settings['num_samples'], NUM_SAMPLES)
    self.assertEqual(settings['batch_size'], BATCH)
    self.assertEqual(settings['seed'], SEED)
    self.assertEqual(settings['feature'], 'avepool_feat')
    self.assertEqual(settings['inception'], 'classifier_fn')
    self.assertEqual(settings['standing_stats_batches'],
                     defaults.STANDING_STATS_BATCHES)
    self.assertIn('standing statistics over 16 batches',
                  saved['notes']['networks'])
    self.assertEqual(settings['data'], {'name': 'mnist', 'split': 'train',
                                        'eval_split': 'test'})
    self.assertCountEqual(saved['metrics'], SCALARS)
    for name, value in saved['metrics'].items():
      self.assertTrue(np.isfinite(value), name)
    self.assertBetween(saved['metrics']['is'], 1.0, 10.0)
    self.assertGreater(saved['metrics']['fid'], 0.0)
    self.assertEqual(saved['details']['generative'],
                     {'num_generated': NUM_SAMPLES, 'num_real': NUM_SAMPLES,
                      'eval_split_smaller': False})
    self.assertIn('not Inception', saved['notes']['is'])

  def test_is_fid_kid_equal_a_direct_computation(self):
    fake = self.classifier(self.fake)
    real = self.classifier(self.real)
    got = self.result['metrics']
    self.assertAllClose(
        got['is'], np.mean(metrics_lib.inception_score_splits(
            fake['logits'], num_splits=10)), rtol=1e-4)
    self.assertAllClose(
        got['fid'], metrics_lib.frechet_distance(real['pool_3'],
                                                 fake['pool_3']), rtol=1e-3)
    self.assertAllClose(
        got['kid'], metrics_lib.kernel_distance(real['pool_3'],
                                                fake['pool_3']),
        rtol=1e-3, atol=1e-4)

  def test_prdc_equals_a_direct_computation_on_fids_features(self):
    want = prdc_lib.prdc(self.classifier(self.real)['pool_3'],
                         self.classifier(self.fake)['pool_3'], k=5)
    for name, value in want.items():
      self.assertAllClose(self.result['metrics'][f'prdc/{name}'], value,
                          atol=1e-6, msg=name)
    self.assertEqual(self.result['details']['prdc']['k'], 5)

  def test_tensorboard_holds_the_scalars_and_grids(self):
    values = _event_values(os.path.join(self.workdir, 'eval'))
    for name in SCALARS:
      self.assertIn(name, values)
      self.assertAllClose(values[name][-1], self.result['metrics'][name],
                          rtol=1e-5, msg=name)
    self.assertIn('samples', values)
    self.assertIn('reconstructions', values)

  def test_grids_follow_the_grid_layout(self):
    paths = self.result['grids']
    self.assertEqual(paths['samples'], os.path.join(
        self.workdir, 'eval',
        f'samples_step2_{self.result["fingerprint"]}.png'))
    samples = np.asarray(Image.open(paths['samples']))
    recon = np.asarray(Image.open(paths['reconstructions']))
    pad = 2
    side = GRID * RES + (GRID + 1) * pad
    self.assertEqual(samples.shape, (side, side, 3))
    # 16 eval images: 4 pairs of rows (real over reconstruction).
    self.assertEqual(recon.shape, (2 * GRID * RES + (2 * GRID + 1) * pad,
                                   side, 3))
    cell = lambda grid, row, col: grid[
        pad + row * (RES + pad):pad + row * (RES + pad) + RES,
        pad + col * (RES + pad):pad + col * (RES + pad) + RES]
    to_uint8 = grids.to_uint8
    # Samples are G(z) for the first latents; row 0 of the reconstructions
    # holds the first eval images, row 2 the next four.
    self.assertAllClose(cell(samples, 1, 2), to_uint8(self.fake[6]), atol=1)
    self.assertAllClose(cell(recon, 0, 3), to_uint8(self.real[3]), atol=1)
    self.assertAllClose(cell(recon, 2, 0), to_uint8(self.real[4]), atol=1)
    z_mean = self.state.ema_encoder(self.real_e[:1], training=False,
                                    noise=np.zeros((1, Z_DIM)))['z_mean']
    want = self.state.ema_generator(z_mean, training=False).numpy()[0]
    self.assertAllClose(cell(recon, 1, 0), to_uint8(want), atol=1)

  def test_batch_norm_statistics_standing_by_default_or_the_checkpoints(self):
    self.assertEqual(self.standing_stats['batches'], 16)
    grid = lambda result: np.asarray(Image.open(result['grids']['samples']))
    cell = lambda g: g[2:2 + RES, 2:2 + RES]
    # standing_stats_batches=0: G's batch norms keep the checkpoint's
    # moving statistics, i.e. what the restored EMA G computes as it is.
    self.assertAllClose(cell(grid(self.moving_result)),
                        grids.to_uint8(self.moving_fake[0]), atol=1)
    self.assertEqual(
        self.moving_result['settings']['standing_stats_batches'], 0)
    self.assertIn('moving statistics',
                  self.moving_result['notes']['networks'])
    # The two statistics give different images: the option is not inert.
    self.assertGreater(np.abs(self.moving_fake - self.fake).max(), 0.05)
    self.assertAllClose(cell(grid(self.result)),
                        grids.to_uint8(self.fake[0]), atol=1)
    with self.assertRaisesRegex(evaluate_lib.EvaluationError,
                                'standing_stats_batches >= 0'):
      evaluate_lib.evaluate(self.workdir, metrics=['grids'],
                            standing_stats_batches=-1)

  # ---------------------------------------------------------------- probe

  def test_linear_probe_on_train_split_evaluated_on_test(self):
    probe = self.result['details']['linear_probe']
    self.assertEqual(probe['num_train'] + probe['num_train_val'], 4000)
    self.assertEqual(probe['num_train_val'], 800)  # 20% cap of 4,000.
    self.assertEqual(probe['num_eval'], 1000)
    self.assertEqual(probe['num_classes'], 10)
    self.assertIn(probe['learning_rate'], probe_lib.PAPER_LEARNING_RATES)
    self.assertLen(probe['sweep'], 5)
    self.assertBetween(probe['epoch'], 1, 2)
    # Frozen features of a barely trained E still separate digits well above
    # chance (0.1).
    self.assertBetween(probe['top1'], 0.3, 1.0)
    self.assertBetween(probe['top5'], probe['top1'], 1.0)
    self.assertEqual(self.result['metrics']['linear_probe/top1'],
                     probe['top1'])

  # -------------------------------------------------------- digit metrics

  def test_digit_metrics_and_cached_classifier(self):
    got = self.result['metrics']
    self.assertGreater(got['digit_fid'], 0.0)
    self.assertBetween(got['recon_accuracy'], 0.0, 1.0)
    # One epoch on 4,000 digits: well above chance on the real test digits.
    self.assertBetween(got['digit_classifier_accuracy'], 0.6, 1.0)
    self.assertIn('NOT comparable with Inception FID',
                  self.result['notes']['digit_fid'])
    details = self.result['details']['digit_classifier']
    self.assertTrue(details['trained_now'])
    self.assertTrue(os.path.exists(details['path']))
    self.assertFalse(
        self.module_result['details']['digit_classifier']['trained_now'])

  def test_a_truncated_digit_classifier_is_trained_again(self):
    workdir = os.path.join(self.root, 'damaged_classifier')
    shutil.copytree(self.workdir, workdir)
    path = os.path.join(workdir, 'eval', evaluate_lib.DIGIT_CLASSIFIER_FILE)
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 3)
    with self.assertLogs(level='WARNING') as logs:
      got = evaluate_lib.evaluate(
          workdir, metrics=['digit_fid'], num_samples=16, batch_size=BATCH,
          digit_classifier_epochs=1, standing_stats_batches=0)
    self.assertIn('cannot be read', '\n'.join(logs.output))
    self.assertTrue(got['details']['digit_classifier']['trained_now'])
    self.assertIn('digit_fid', got['metrics'])
    self.assertIsNotNone(evaluate_lib._cached_digit_classifier(path))  # pylint: disable=protected-access

  # --------------------------------------------------------------- module

  def test_module_evaluation_matches_the_checkpoint(self):
    got = self.module_result
    self.assertEqual(got['errors'], {})
    self.assertEqual(got['source'], 'module')
    self.assertEqual(got['module'], self.module_dir)
    self.assertIsNone(got['checkpoint'])
    self.assertEqual(got['step'], 2)
    self.assertEqual(got['settings']['data']['name'], 'mnist')
    self.assertEqual(got['settings']['encoder_resolution'], RES_E)
    self.assertEqual(got['results_file'], os.path.join(
        self.module_workdir, 'eval',
        f'results_step2_{got["fingerprint"]}.json'))
    self.assertTrue(os.path.exists(got['results_file']))
    for name in ('is', 'fid', 'kid', 'digit_fid'):
      self.assertAllClose(got['metrics'][name], self.result['metrics'][name],
                          rtol=1e-3, atol=1e-4, msg=name)
    self.assertAllClose(got['metrics']['linear_probe/top1'],
                        self.result['metrics']['linear_probe/top1'],
                        atol=0.01)
    mine = np.asarray(Image.open(got['grids']['reconstructions']), np.int32)
    theirs = np.asarray(Image.open(self.result['grids']['reconstructions']),
                        np.int32)
    self.assertLessEqual(np.abs(mine - theirs).max(), 1)

  def test_module_networks_follow_its_signatures(self):
    nets = features_lib.load_from_module(self.module_dir)
    self.assertEqual((nets.z_dim, nets.resolution, nets.encoder_resolution,
                      nets.step), (Z_DIM, RES, RES_E, 2))
    out = nets.encode(self.real_e[:3])
    ref = self.state.ema_encoder(self.real_e[:3], training=False,
                                 noise=np.zeros((3, Z_DIM)))
    for key in features_lib.FEATURES:
      self.assertAllClose(out[key], ref[key], atol=1e-5, msg=key)

  # --------------------------------------------------------------- errors

  def test_offline_cli_says_to_pass_inception(self):
    code, out, err = self.cli['offline']
    self.assertEqual(code, 2, err[-3000:])
    self.assertIn('error: fid: Inception weights could not be loaded', err)
    self.assertIn('pass --inception=PATH', err)
    self.assertNotIn('Traceback', err + out)
    # Nothing could be computed, so nothing was written.
    self.assertFalse(os.path.exists(os.path.join(self.cli_workdir, 'eval')))

  def test_unavailable_inception_still_computes_the_rest(self):
    got = self.partial_result
    self.assertCountEqual(got['errors'], ['kid'])
    self.assertIn('no such file or directory', got['errors']['kid'])
    self.assertIn('--inception', got['errors']['kid'])
    self.assertEqual(got['metrics'], {})
    self.assertTrue(os.path.exists(got['grids']['samples']))
    saved = _read_json(got['results_file'])
    self.assertEqual(saved['errors'], got['errors'])
    self.assertEqual(saved['grids'], got['grids'])

  def test_unknown_metric_is_one_clear_line(self):
    code, out, err = self.cli['unknown']
    self.assertEqual(code, 2, err[-3000:])
    lines = [l for l in err.splitlines() if l.startswith('error:')]
    self.assertLen(lines, 1)
    self.assertIn("Unknown metric name(s) ['bogus']", lines[0])
    self.assertIn('is,fid,kid,linear_probe,grids,digit_fid,recon_accuracy',
                  lines[0])
    self.assertNotIn('Traceback', err + out)
    with self.assertRaisesRegex(evaluate_lib.EvaluationError,
                                r"Unknown metric name\(s\) \['FID'\]"):
      evaluate_lib.evaluate(self.workdir, metrics=['FID'])

  def test_a_failed_write_is_one_line_without_traceback(self):
    code, out, err = self.cli['write_fails']
    self.assertEqual(code, 2, err[-3000:])
    lines = [l for l in err.splitlines() if l.startswith('error:')]
    self.assertEqual(len(lines), 1, err[-3000:])
    self.assertIn('eval', lines[0])
    self.assertNotIn('Traceback', err + out)

  def test_quick_probe_prints_each_checkpoints_errors(self):
    code, out, err = self.cli['quick_probe']
    self.assertEqual(code, 0, err[-3000:])
    rows = [json.loads(line) for line in out.strip().splitlines()]
    self.assertEqual([r['step'] for r in rows], [0, 2])
    for row in rows:
      self.assertEqual(row['num_eval'], 1000)
      self.assertCountEqual(row['top1_error'], features_lib.FEATURES)
      for error in row['top1_error'].values():
        # Ten classes: any encoder of digits beats chance (error 0.9) by
        # far (on 1,000 digits, chance's error has a spread of ~0.01).
        self.assertBetween(error, 0.0, 0.8)

  def test_quick_probe_errors_on_separable_and_shuffled_labels(self):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    separable = {'f': np.eye(4)[labels] * 5 + rng.normal(0, 0.1, (400, 4))}
    noise = {'f': rng.normal(0, 1, (400, 4))}
    got = probe_lib.quick_probe_errors(
        {k: v[:300] for k, v in separable.items()}, labels[:300],
        {k: v[300:] for k, v in separable.items()}, labels[300:])
    self.assertEqual(got, {'f': 0.0})
    got = probe_lib.quick_probe_errors(
        {k: v[:300] for k, v in noise.items()}, labels[:300],
        {k: v[300:] for k, v in noise.items()}, labels[300:])
    self.assertGreater(got['f'], 0.5)

  def test_importable_and_bad_arguments_fail_clearly(self):
    code, out, err = self.cli['import']
    self.assertEqual((code, out.strip()), (0, 'ok'), err[-2000:])
    missing = os.path.join(self.root, 'nowhere')
    with self.assertRaisesRegex(FileNotFoundError,
                                'not a bigbigan-tf workdir'):
      evaluate_lib.evaluate(missing, metrics=['grids'])
    with self.assertRaisesRegex(features_lib.ModuleLoadError,
                                'no such directory'):
      evaluate_lib.evaluate(self.workdir, metrics=['grids'], module=missing)
    with self.assertRaisesRegex(evaluate_lib.EvaluationError, 'not both'):
      evaluate_lib.evaluate(self.workdir, module=self.module_dir,
                            checkpoint=self.workdir + '/checkpoints/ckpt-2')
    with self.assertRaisesRegex(FileNotFoundError, 'ckpt-7 does not exist'):
      evaluate_lib.evaluate(self.workdir, metrics=['grids'],
                            checkpoint=self.workdir + '/checkpoints/ckpt-7')
    with self.assertRaisesRegex(evaluate_lib.EvaluationError, '--feature'):
      evaluate_lib.evaluate(self.workdir, feature='pool')


if __name__ == '__main__':
  tf.test.main()
