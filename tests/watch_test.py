"""The sidecar watcher's order and restart rules.

The checkpoints here are stand-in files (ckpt-N.index / .data) and the
metric is injected (helpers shared with best_test.py, where the
best-checkpoint protocol is tested), so the rules are tested without
training noise; the real evaluation library runs in evaluate_test.py.
"""

import glob
import json
import math
import os
import tempfile
import time
import unittest

import pytest

from best_test import CONFIG
from best_test import delete_checkpoints
from best_test import FakeEvaluator
from best_test import kept_content
from best_test import make_checkpoint
from best_test import watch_once
from bigbigan_tf import lease
from bigbigan_tf.evaluation import best
from bigbigan_tf.evaluation import in_process
from bigbigan_tf.evaluation import ledger
from bigbigan_tf.evaluation import metric_plan
from bigbigan_tf.evaluation import settings as settings_lib
from bigbigan_tf.evaluation import watch


class WatchTest(unittest.TestCase):

  def test_newest_first_then_the_rest_then_ends(self):
    workdir = tempfile.mkdtemp()
    for step in (2, 4, 6):
      make_checkpoint(workdir, step)
    evaluator = FakeEvaluator(workdir, lambda s: 10.0 - s)
    outcome = watch_once(workdir, evaluator, final_step=6, timeout_s=5)
    self.assertEqual(evaluator.steps, [6, 4, 2])
    self.assertIn('final step 6', outcome.message)
    self.assertTrue(outcome.complete)
    self.assertEqual(best.read_best(workdir)['step'], 6)

  def test_held_checkpoints_survive_deletion_and_restarts(self):
    workdir = tempfile.mkdtemp()
    originals = [make_checkpoint(workdir, step) for step in (2, 4)]
    evaluator = FakeEvaluator(workdir, lambda s: float(s))

    def evaluator_racing_the_manager(path, checkpoint, before_write=None):
      # While step 4 is evaluated, the manager deletes both checkpoints.
      delete_checkpoints(workdir)
      return evaluator(path, checkpoint, before_write)

    outcome = watch_once(workdir, evaluator_racing_the_manager)
    self.assertIn('No new checkpoint', outcome.message)
    self.assertFalse(outcome.complete)
    # Both evaluated from the held copies, named by the originals.
    self.assertEqual(evaluator.steps, [4, 2])
    self.assertEqual([c for _, c in evaluator.paths], originals[::-1])
    self.assertTrue(all('held-' in p for p, _ in evaluator.paths))
    # Step 2 (lower fid) is the best, its data copied though deleted.
    self.assertEqual(best.read_best(workdir)['step'], 2)
    self.assertEqual(kept_content(workdir), 'step 2')
    self.assertFalse([n for n in os.listdir(os.path.join(workdir, 'eval'))
                      if n.startswith('held-')])
    # A restart evaluates only the new checkpoint.
    make_checkpoint(workdir, 6)
    watch_once(workdir, evaluator)
    self.assertEqual(evaluator.steps, [4, 2, 6])

  def test_a_killed_watchers_held_copies_are_evaluated_after_restart(self):
    workdir = tempfile.mkdtemp()
    prefix = make_checkpoint(workdir, 2)
    self.assertIsNotNone(ledger.hold(workdir, prefix, 2,
                                     ledger.identity(prefix)))
    # An incomplete hold (killed while linking) is dropped, not read.
    four = make_checkpoint(workdir, 4)
    broken = ledger.hold(workdir, four, 4, ledger.identity(four))
    os.remove(os.path.join(os.path.dirname(broken), 'identity.json'))
    delete_checkpoints(workdir)
    evaluator = FakeEvaluator(workdir, lambda s: 1.0)
    watch_once(workdir, evaluator, final_step=2, select=None, timeout_s=5)
    self.assertEqual(evaluator.steps, [2])
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'eval'))),
                     ['done_step2.json', 'lease.json', 'results_step2.json'])

  def test_beyond_max_held_the_oldest_is_skipped_and_logged(self):
    workdir = tempfile.mkdtemp()
    for step in (2, 4, 6):
      make_checkpoint(workdir, step)
    evaluator = FakeEvaluator(workdir, lambda s: 1.0)
    with self.assertLogs(level='WARNING') as logs:
      watch_once(workdir, evaluator, final_step=6, select=None, timeout_s=5,
             max_held=2)
    self.assertEqual(evaluator.steps, [6, 4])
    self.assertIn('step 2 is let go', '\n'.join(logs.output))
    self.assertTrue(watch.is_done(workdir, 2))

  def test_an_incomplete_checkpoint_is_not_held(self):
    workdir = tempfile.mkdtemp()
    prefix = make_checkpoint(workdir, 2)
    os.remove(prefix + '.data-00000-of-00001')
    held = tempfile.mkdtemp()
    self.assertFalse(best.hold_files(prefix, held))
    self.assertTrue(best.hold_files(make_checkpoint(workdir, 4), held))
    self.assertEqual(sorted(os.listdir(held)),
                     ['ckpt-4.data-00000-of-00001', 'ckpt-4.index'])

  def test_a_resaved_final_step_is_evaluated(self):
    workdir = tempfile.mkdtemp()
    make_checkpoint(workdir, 2)
    stub = make_checkpoint(workdir, 4, content='stub')  # a failed save
    evaluator = FakeEvaluator(workdir, lambda s: 10.0 - s)
    outcome = watch_once(workdir, evaluator, final_step=4)
    # A skipped final step is not "done": the watcher waited for it.
    self.assertIn('No new checkpoint', outcome.message)
    self.assertFalse(outcome.complete)
    self.assertEqual(evaluator.steps, [2])
    # The trainer resumes and saves step 4 again (a later mtime).
    make_checkpoint(workdir, 4)
    os.utime(stub + '.index', (1e9, 2e9))
    outcome = watch_once(workdir, evaluator, final_step=4, timeout_s=5)
    self.assertIn('final step 4 is evaluated', outcome.message)
    self.assertEqual(evaluator.steps, [2, 4])
    self.assertEqual(best.read_best(workdir)['step'], 4)
    # Saved again once more, better: evaluated again, and kept again.
    evaluator.metric = lambda s: -1.0
    make_checkpoint(workdir, 4, content='step 4 again')
    os.utime(stub + '.index', (1e9, 3e9))
    watch_once(workdir, evaluator, final_step=4, timeout_s=5)
    self.assertEqual(evaluator.steps, [2, 4, 4])
    self.assertEqual(best.read_best(workdir)['value'], -1.0)
    self.assertEqual(kept_content(workdir), 'step 4 again')
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'best'))),
                     ['best.json', 'ckpt-4.1'])

  def test_nan_neither_becomes_nor_blocks_the_best(self):
    workdir = tempfile.mkdtemp()
    for step in (2, 4, 6):
      make_checkpoint(workdir, step)
    fid = {6: math.nan, 4: 2.0, 2: 1.0}
    watch_once(workdir, FakeEvaluator(workdir, fid.get))
    self.assertEqual(best.read_best(workdir)['step'], 2)

  def test_a_second_evaluator_is_refused_naming_the_holder(self):
    workdir = tempfile.mkdtemp()
    make_checkpoint(workdir, 2)
    with watch.evaluator_lease(workdir, CONFIG):  # the first watcher
      with self.assertRaisesRegex(lease.LeaseHeldError,
                                  f'another evaluator .pid {os.getpid()}'):
        watch_once(workdir, FakeEvaluator(workdir, float))
    self.assertFalse(os.path.exists(watch.results_path(workdir, 2)))

  def test_offline_auto_drops_what_cannot_run_in_one_line(self):
    from bigbigan_tf.configs import tiny  # pylint: disable=g-import-not-at-top
    with self.assertLogs(level='WARNING') as logs:
      names, select, source = watch.plan(tiny.get_config(), None, 'auto',
                                         inception='/nonexistent/inception')
    self.assertEqual(select, 'linear_probe')
    self.assertIsNone(source)  # no metric of this plan uses Inception
    self.assertEqual(names, ['linear_probe', 'grids', 'digit_fid',
                             'recon_accuracy'])
    self.assertEqual(len(logs.output), 1, logs.output)
    self.assertIn('drops the metrics it cannot compute here: is, fid, kid',
                  logs.output[0])
    self.assertIn('--inception=PATH', logs.output[0])
    self.assertNotIn('\n', logs.output[0])  # one line, not the instructions
    with self.assertRaisesRegex(Exception, 'selection metric fid needs fid'):
      watch.plan(tiny.get_config(), None, 'fid',
                 inception='/nonexistent/inception')
    with self.assertRaisesRegex(Exception, 'None of the metrics.*fid'):
      watch.plan(tiny.get_config(), ['fid'], 'auto',
                 inception='/nonexistent/inception')


def _settings(num_samples, **overrides):
  """Comparable settings of a test evaluation (the tiny config's data)."""
  from bigbigan_tf.configs import tiny  # pylint: disable=g-import-not-at-top
  config = overrides.pop('config', None) or tiny.get_config()
  kwargs = dict(metrics=['fid'], inception_source='/inception',
                num_samples=num_samples, feature='avepool_feat', seed=0,
                probe_epochs=1, digit_classifier_epochs=1, prdc_k=3,
                standing_stats_batches=0)
  kwargs.update(overrides)
  return settings_lib.comparable(config, **kwargs)


def _read(path):
  with open(path) as f:
    return json.load(f)


class LikeWithLikeTest(unittest.TestCase):
  """Results are keyed by their settings; W/best compares one settings."""

  def test_fingerprint_is_stable_and_tells_settings_apart(self):
    from bigbigan_tf.configs import tiny  # pylint: disable=g-import-not-at-top
    fp = settings_lib.fingerprint
    sixteen = fp(_settings(16))
    self.assertRegex(sixteen, r'^[0-9a-f]{8}$')
    self.assertEqual(sixteen, fp(_settings(16)))
    self.assertIsNone(fp(None))
    self.assertEqual(fp(_settings(16, metrics=['fid', 'kid'])),
                     fp(_settings(16, metrics=['kid', 'fid'])))
    other_split = tiny.get_config()
    with other_split.unlocked():
      other_split.data.eval_split = 'train'
    others = [_settings(200), _settings(16, seed=1),
              _settings(16, feature='z_mean'),
              _settings(16, inception_source=None),
              _settings(16, inception_source='classifier_fn'),
              _settings(16, metrics=['fid', 'kid']),
              _settings(16, standing_stats_batches=10),
              _settings(16, probe_epochs=2),
              _settings(16, config=other_split)]
    self.assertNotIn(sixteen, [fp(s) for s in others])
    self.assertEqual(len({fp(s) for s in others}), len(others))

  def test_watcher_one_off_and_restart_never_compare_across_settings(self):
    """The issue's sequence: a watcher at 16 samples, a one-off evaluation
    of the best at 200, the watcher restarted; then one at 200."""
    workdir = tempfile.mkdtemp()
    for step in (2, 4, 6):
      make_checkpoint(workdir, step)
    sixteen, two_hundred = _settings(16), _settings(200)
    fp16 = settings_lib.fingerprint(sixteen)
    fp200 = settings_lib.fingerprint(two_hundred)
    watcher = FakeEvaluator(workdir, {2: 5.0, 4: 3.0, 6: 4.0, 8: 3.5}.get,
                            sixteen)
    watch_once(workdir, watcher, final_step=6)
    kept = best.read_best(workdir)
    self.assertEqual((kept['step'], kept['value']), (4, 3.0))
    self.assertEqual((kept['fingerprint'], kept['settings']), (fp16, sixteen))
    # The one-off at 200 samples: much lower figures, its own files.
    one_off = FakeEvaluator(workdir, {2: 1.0, 4: 2.0, 6: 2.5, 8: 2.2}.get,
                            two_hundred)
    one_off(best.best_checkpoint(workdir))
    one_off(os.path.join(workdir, 'checkpoints', 'ckpt-2'))
    for step, fp, value, samples in ((4, fp16, 3.0, 16), (4, fp200, 2.0, 200),
                                     (2, fp16, 5.0, 16), (2, fp200, 1.0, 200)):
      saved = _read(watch.results_path(workdir, step, fp))
      self.assertEqual(saved['metrics']['fid'], value)
      self.assertEqual(saved['comparable']['num_samples'], samples)
    # The watcher restarted at 16 (and a new checkpoint): 200's 1.0 is
    # never compared with its figures.
    make_checkpoint(workdir, 8)
    watch_once(workdir, watcher, final_step=8)
    self.assertEqual(watcher.steps, [6, 4, 2, 8])
    kept = best.read_best(workdir)
    self.assertEqual((kept['step'], kept['value'], kept['fingerprint']),
                     (4, 3.0, fp16))
    # A watcher at 200 says so in one line, takes the kept best's figure at
    # 200 (the one-off's) and selects among 200's figures only.
    with self.assertLogs(level='WARNING') as logs:
      watch_once(workdir, one_off, final_step=8)
    lines = [l for l in logs.output if 'under other settings' in l]
    self.assertEqual(len(lines), 1, logs.output)
    self.assertNotIn('\n', lines[0])
    self.assertIn('num_samples=16', lines[0])
    self.assertIn('num_samples=200', lines[0])
    self.assertEqual(one_off.steps[2:], [8, 6])  # 4 and 2 done already
    kept = best.read_best(workdir)
    self.assertEqual((kept['step'], kept['value'], kept['fingerprint']),
                     (2, 1.0, fp200))
    self.assertEqual(kept_content(workdir), 'step 2')

  def test_a_kept_best_of_other_settings_is_evaluated_again_first(self):
    workdir = tempfile.mkdtemp()
    for step in (2, 4):
      make_checkpoint(workdir, step)
    # Un-keyed results and pointer: an older watcher's, unknown settings.
    old = FakeEvaluator(workdir, {2: 5.0, 4: 3.0}.get)
    watch_once(workdir, old, final_step=4)
    self.assertTrue(os.path.exists(watch.results_path(workdir, 4)))
    self.assertIsNone(best.read_best(workdir)['fingerprint'])
    delete_checkpoints(workdir)  # only the kept copy of step 4 is left
    make_checkpoint(workdir, 6)
    new = FakeEvaluator(workdir, {4: 7.0, 6: 8.0}.get, _settings(16))
    watch_once(workdir, new, final_step=6)
    # Step 4 evaluated again from W/best under the new settings, then
    # compared with step 6 under the same settings.
    self.assertEqual(new.steps, [4, 6])
    self.assertTrue(new.paths[0][0].startswith(os.path.join(workdir,
                                                            'best')))
    kept = best.read_best(workdir)
    self.assertEqual((kept['step'], kept['value']), (4, 7.0))
    self.assertEqual(kept['fingerprint'],
                     settings_lib.fingerprint(_settings(16)))
    self.assertEqual(_read(watch.results_path(workdir, 4))['metrics']['fid'],
                     3.0)  # the old figures stay, apart


class HonestExitTest(unittest.TestCase):
  """complete only when the final step was evaluated."""

  def test_training_that_died_ends_incomplete_naming_what_is_missing(self):
    workdir = tempfile.mkdtemp()
    make_checkpoint(workdir, 2)
    start = time.time()
    outcome = watch_once(workdir, FakeEvaluator(workdir, float),
                         final_step=6, timeout_s=60, grace_s=0.3,
                         alive=lambda: False)
    self.assertLess(time.time() - start, 30)
    self.assertFalse(outcome.complete)
    self.assertIn('died or stopped before its final step 6',
                  outcome.message)
    self.assertIn('Evaluated (settings unknown): steps 2.', outcome.message)
    self.assertIn('Not evaluated: the final step 6.', outcome.message)

  def test_a_restarted_trainer_is_followed_to_the_end(self):
    workdir = tempfile.mkdtemp()
    make_checkpoint(workdir, 2)
    calls = []

    def alive():  # dead for a moment, then restarted; it saves step 4
      calls.append(1)
      if len(calls) == 20:
        make_checkpoint(workdir, 4)
      return len(calls) > 3

    outcome = watch_once(workdir, FakeEvaluator(workdir, float),
                         final_step=4, timeout_s=60, grace_s=0.5,
                         alive=alive)
    self.assertTrue(outcome.complete, outcome.message)

  def test_before_training_starts_the_timeout_applies_not_the_grace(self):
    workdir = tempfile.mkdtemp()
    start = time.time()
    outcome = watch_once(workdir, FakeEvaluator(workdir, float),
                         final_step=4, timeout_s=0.6, grace_s=0.05,
                         alive=lambda: False)
    self.assertGreaterEqual(time.time() - start, 0.6)
    self.assertFalse(outcome.complete)
    self.assertIn('training never started', outcome.message)
    self.assertIn('Nothing evaluated', outcome.message)

  def test_trainer_alive_reads_the_trainers_lock(self):
    workdir = tempfile.mkdtemp()
    self.assertFalse(watch.trainer_alive(workdir, CONFIG))
    with lease.hold(workdir, mode='lock'):
      self.assertTrue(watch.trainer_alive(workdir, CONFIG))
    self.assertFalse(watch.trainer_alive(workdir, CONFIG))
    self.assertEqual(os.listdir(workdir), ['lease.json'])


class MeanwhileTest(unittest.TestCase):

  def test_a_checkpoint_saved_and_deleted_during_an_evaluation_is_held(self):
    workdir = tempfile.mkdtemp()
    make_checkpoint(workdir, 2)
    evaluator = FakeEvaluator(workdir, lambda s: 10.0 - s)

    def slow_evaluator(path, checkpoint, before_write=None):
      if path.endswith('ckpt-2'):
        # The trainer saves step 4 and deletes it within this evaluation.
        prefix = make_checkpoint(workdir, 4)
        time.sleep(0.5)
        for name in glob.glob(prefix + '.*'):
          os.remove(name)
      return evaluator(path, checkpoint, before_write)

    outcome = watch_once(workdir, slow_evaluator, final_step=4, timeout_s=5)
    self.assertTrue(outcome.complete, outcome.message)
    self.assertEqual(evaluator.steps, [2, 4])
    self.assertEqual(kept_content(workdir), 'step 4')

  def test_a_watcher_that_lost_its_lease_writes_nothing_more(self):
    from unittest import mock  # pylint: disable=g-import-not-at-top
    workdir = tempfile.mkdtemp()
    make_checkpoint(workdir, 2)
    lost = []

    def check(unused_holder):
      if lost:
        raise lease.LeaseLostError('lost the lease')

    def evaluator(path, checkpoint, before_write=None):
      lost.append(path)  # stalls past its expiry during this evaluation
      return FakeEvaluator(workdir, float)(path, checkpoint, before_write)

    with mock.patch.object(lease.Holder, 'check', autospec=True,
                           side_effect=check):
      with self.assertRaises(lease.LeaseLostError):
        watch_once(workdir, evaluator)
    self.assertFalse(os.path.exists(watch.results_path(workdir, 2)))
    self.assertIsNone(best.read_best(workdir))


class RobustStateTest(unittest.TestCase):

  def test_auto_never_selects_what_the_data_cannot_compute(self):
    from bigbigan_tf.configs import tiny  # pylint: disable=g-import-not-at-top
    folder = tempfile.mkdtemp()
    open(os.path.join(folder, 'a.png'), 'w').close()
    config = tiny.get_config()
    with config.unlocked():
      config.data.name = f'folder:{folder}'
    # Offline and unlabelled: only the grids could be computed.
    with self.assertRaisesRegex(metric_plan.EvaluationError,
                                'Nothing to select the best checkpoint by'):
      watch.plan(config, None, 'auto', inception='/nonexistent/inception')
    _, _, errors = metric_plan.unavailable(
        ['linear_probe'], config, inception='/x', classifier_fn=None)
    self.assertIn('class subfolder', errors['linear_probe'])
    for name in ('cats', 'dogs'):
      os.makedirs(os.path.join(folder, name))
    names, select, source = watch.plan(config, None, 'auto',
                                       inception='/nonexistent/inception')
    self.assertEqual((names, select, source),
                     (['linear_probe', 'grids'], 'linear_probe', None))

  def test_results_latest_holds_the_newest_step(self):
    from bigbigan_tf.evaluation import results  # pylint: disable=g-import-not-at-top
    eval_dir = tempfile.mkdtemp()
    for step in (6, 2, 4):  # a newest-first catch-up
      results.write_outputs(
          {'step': step, 'metrics': {'fid': float(step)}, 'notes': {},
           'grids': {}}, {}, eval_dir=eval_dir, tag=f'step{step}_x',
          step=step)
    self.assertEqual(_read(os.path.join(eval_dir,
                                        'results_latest.json'))['step'], 6)
    self.assertEqual(_read(os.path.join(eval_dir,
                                        'results_step2_x.json'))['step'], 2)

  def test_a_damaged_digit_classifier_is_trained_again(self):
    from bigbigan_tf.evaluation import digit_classifier  # pylint: disable=g-import-not-at-top
    from bigbigan_tf.evaluation import evaluate_lib  # pylint: disable=g-import-not-at-top
    path = os.path.join(tempfile.mkdtemp(), 'eval', 'digit_classifier.keras')
    digit_classifier.DigitClassifier(
        digit_classifier._build_model(0)).save(path)  # pylint: disable=protected-access
    # Written whole, under its name only (no temporary file left).
    self.assertEqual(os.listdir(os.path.dirname(path)),
                     ['digit_classifier.keras'])
    self.assertIsNotNone(evaluate_lib._cached_digit_classifier(path))  # pylint: disable=protected-access
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
    with self.assertLogs(level='WARNING') as logs:
      self.assertIsNone(evaluate_lib._cached_digit_classifier(path))  # pylint: disable=protected-access
    self.assertIn('cannot be read', logs.output[0])
    self.assertIn('training it again', logs.output[0])


class RelativeWorkdirTest(unittest.TestCase):

  def test_checkpoints_of_a_relative_workdir_are_found_once(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from bigbigan_tf import checkpoints  # pylint: disable=g-import-not-at-top
    root, cwd = tempfile.mkdtemp(), os.getcwd()
    os.chdir(root)
    try:
      directory = os.path.join('w', 'checkpoints')
      manager = tf.train.CheckpointManager(
          tf.train.Checkpoint(v=tf.Variable(1.0)), directory, max_to_keep=3)
      for step in (1, 2):
        manager.save(checkpoint_number=step)
      # The state file's entries and the .index files name the same two.
      self.assertEqual(checkpoints.checkpoint_paths(directory),
                       [os.path.join(directory, 'ckpt-2'),
                        os.path.join(directory, 'ckpt-1')])
    finally:
      os.chdir(cwd)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny run on the command line: checkpoints every 2 steps, 100 samples.
TINY = ['--config=bigbigan_tf/configs/tiny.py',
        '--config.eval.num_samples=100']
# The bare watcher, offline and cut short for speed.
WATCH = ['--watch', '--inception=/nonexistent/inception', '--timeout_s=300',
         '--probe_epochs=1', '--digit_classifier_epochs=1',
         '--standing_stats_batches=0']


def _start(script, *args):
  """A command line of the repo, its output into files (never a full pipe)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  out = tempfile.NamedTemporaryFile('w+', suffix='.out', delete=False)
  err = tempfile.NamedTemporaryFile('w+', suffix='.err', delete=False)
  proc = subprocess.Popen(
      [sys.executable, script, *args], cwd=REPO, stdout=out, stderr=err,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO))
  proc.out_path, proc.err_path = out.name, err.name
  return proc


def _finish(proc, timeout=600):
  """(returncode, stdout, stderr) of a `_start`ed process."""
  proc.wait(timeout=timeout)
  with open(proc.out_path) as out, open(proc.err_path) as err:
    return proc.returncode, out.read(), err.read()


def _wait_until(condition, timeout=300):
  deadline = time.time() + timeout
  while not condition():
    if time.time() > deadline:
      raise AssertionError(f'timed out waiting for {condition}')
    time.sleep(0.2)


def _errors(stderr):
  return [l for l in stderr.splitlines() if l.startswith('error:')]


@pytest.mark.slow
class WatchEndToEndTest(unittest.TestCase):
  """train.py and eval/evaluate.py --watch in separate processes."""

  def test_any_order_like_with_like_and_honest_exits(self):
    import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
    workdir = os.path.join(tempfile.mkdtemp(), 'run')  # not there yet

    # 1. The watcher first, before the workdir exists; then train.py.
    watcher = _start('eval/evaluate.py', f'--workdir={workdir}', *WATCH)
    usage = _start('eval/evaluate.py', f'--workdir={workdir}', '--watch',
                   '--checkpoint=best')

    def waiting():
      with open(watcher.err_path) as f:
        log = f.read()
      if watcher.poll() is not None:
        self.fail(f'The watcher ended early: {log[-3000:]}')
      return 'Waiting for the trainer' in log

    _wait_until(waiting)
    trainer = _start('train.py', f'--workdir={workdir}', *TINY,
                     '--config.num_train_steps=2')
    code, _, err = _finish(trainer)
    self.assertEqual(code, 0, err[-3000:])
    code, out, err = _finish(watcher)
    self.assertEqual(code, 0, err[-3000:])
    self.assertIn('The final step 2 is evaluated', out)
    self.assertEqual(err.count('drops the metrics it cannot compute'), 1)
    self.assertIn('num_samples=100 (config.eval.num_samples)', err)
    kept = best.read_best(workdir)
    fp = kept['fingerprint']
    self.assertEqual(kept['metric'], 'linear_probe/top1')
    self.assertEqual(kept['settings']['num_samples'], 100)
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'best'))),
                     ['best.json', f'ckpt-{kept["step"]}'])
    eval_dir = os.path.join(workdir, 'eval')
    # Every checkpoint, each once, keyed by the watcher's settings.
    self.assertEqual(sorted(n for n in os.listdir(eval_dir)
                            if n.startswith('results_step')),
                     [f'results_step{s}_{fp}.json' for s in (0, 2)])
    self.assertFalse([n for n in os.listdir(eval_dir)
                      if n.startswith('held-')])
    self.assertEqual(_read(os.path.join(eval_dir,
                                        'results_latest.json'))['step'], 2)
    code, out, err = _finish(usage)
    self.assertEqual(code, 2)
    self.assertEqual(len(_errors(err)), 1, err[-3000:])
    self.assertIn('--watch', _errors(err)[0])
    self.assertNotIn('Traceback', err)

    # 2. A one-off evaluation of the best with other settings, the best
    # exported meanwhile, then the watcher again: nothing is compared
    # across settings.
    export_dir = os.path.join(workdir, 'export_best')
    exported = _start('export.py', f'--workdir={workdir}',
                      f'--export_dir={export_dir}', '--checkpoint=best',
                      '--standing_stats_batches=0')
    code, _, err = _finish(_start(
        'eval/evaluate.py', f'--workdir={workdir}', '--checkpoint=best',
        '--num_samples=32', '--metrics=linear_probe', '--probe_epochs=1',
        '--standing_stats_batches=0'))
    self.assertEqual(code, 0, err[-3000:])
    one_off = [n for n in os.listdir(eval_dir)
               if n.startswith(f'results_step{kept["step"]}_')
               and not n.endswith(f'_{fp}.json')]
    self.assertEqual(len(one_off), 1, os.listdir(eval_dir))
    self.assertEqual(_read(os.path.join(eval_dir, one_off[0]))['comparable']
                     ['num_samples'], 32)
    self.assertEqual(_read(watch.results_path(workdir, kept['step'], fp))
                     ['comparable']['num_samples'], 100)
    code, out, err = _finish(_start('eval/evaluate.py',
                                    f'--workdir={workdir}', *WATCH))
    self.assertEqual(code, 0, err[-3000:])
    self.assertEqual(best.read_best(workdir), kept)
    code, _, err = _finish(exported)
    self.assertEqual(code, 0, err[-3000:])
    self.assertIsNotNone(hub.load(export_dir))

    # 3. Training resumed to step 8 and killed after step 4: the watcher
    # exits 2 in one line naming what was and was not evaluated.
    trainer = _start('train.py', f'--workdir={workdir}', *TINY,
                     '--config.num_train_steps=8')
    _wait_until(lambda: _read(os.path.join(workdir, 'config.json'))
                ['num_train_steps'] == 8)
    watcher = _start('eval/evaluate.py', f'--workdir={workdir}', *WATCH,
                     '--grace_s=10')
    _wait_until(lambda: os.path.exists(
        os.path.join(workdir, 'checkpoints', 'ckpt-4.index')))
    time.sleep(1)  # the save's last steps
    trainer.kill()
    trainer.wait()
    code, out, err = _finish(watcher)
    self.assertEqual(code, 2, err[-3000:])
    lines = _errors(err)
    self.assertEqual(len(lines), 1, err[-3000:])
    self.assertIn('died or stopped before its final step 8', lines[0])
    self.assertIn('steps 0, 2, 4', lines[0])
    self.assertIn('Not evaluated: the final step 8.', lines[0])
    self.assertNotIn('Traceback', err)


class InProcessEvaluationTest(unittest.TestCase):
  """config.eval.every_steps: the chief evaluates after its checkpoints."""

  def test_auto_selects_from_what_can_run_here(self):
    from unittest import mock  # pylint: disable=g-import-not-at-top
    from bigbigan_tf.configs import tiny  # pylint: disable=g-import-not-at-top
    from bigbigan_tf.evaluation import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
    config = tiny.get_config()
    with config.unlocked():
      config.eval.every_steps = 2  # default metrics, select 'auto'
    offline = metrics_lib.ClassifierUnavailableError('no Inception here')
    with mock.patch.object(metrics_lib, 'load_inception',
                           side_effect=offline), \
        self.assertLogs(level='WARNING') as logs:
      evaluation = in_process.InProcessEvaluation(config, tempfile.mkdtemp(),
                                                  chief=True)
    self.assertNotIn('fid', evaluation.metrics)
    self.assertEqual(evaluation.select, 'linear_probe')
    self.assertIn('drops the metrics it cannot compute', logs.output[0])

  @pytest.mark.slow
  def test_beside_a_watcher_a_due_step_is_skipped_not_refused(self):
    from bigbigan_tf.configs import tiny  # pylint: disable=g-import-not-at-top
    workdir = tempfile.mkdtemp()
    prefix = make_checkpoint(workdir, 2)
    config = tiny.get_config()
    with config.unlocked():
      config.eval.every_steps = 2
      config.eval.metrics = 'recon_accuracy'
    with watch.evaluator_lease(workdir, config):  # a watcher holds W/eval
      evaluation = in_process.InProcessEvaluation(config, workdir, chief=True)
      with self.assertLogs(level='WARNING') as logs:
        self.assertEqual(evaluation(prefix, 2), 0.0)
    self.assertEqual(len(logs.output), 1, logs.output)
    self.assertIn('In-process evaluation of step 2 skipped (training goes '
                  'on)', logs.output[0])
    self.assertIn('another evaluator', logs.output[0])
    self.assertEqual(glob.glob(os.path.join(workdir, 'eval', 'results_*')),
                     [])

  @pytest.mark.slow
  def test_results_at_the_asked_steps_and_best_kept(self):
    from bigbigan_tf import config_lib  # pylint: disable=g-import-not-at-top
    from bigbigan_tf import train_lib  # pylint: disable=g-import-not-at-top
    from bigbigan_tf.configs import tiny  # pylint: disable=g-import-not-at-top
    workdir = tempfile.mkdtemp()
    config = tiny.get_config()
    with config.unlocked():
      config.num_train_steps = 2
      config.train.checkpoint_every = 1
      config.eval.every_steps = 2
      config.eval.metrics = 'recon_accuracy'
      config.eval.num_samples = 16
    # Beside a watcher (it holds W/eval): training reaches its final step,
    # the evaluation of step 2 is skipped.
    with self.assertLogs(level='WARNING') as logs:
      with watch.evaluator_lease(workdir, config):
        result = train_lib.train_and_evaluate(config, workdir)
    self.assertEqual(result['step'], 2)
    self.assertIn('In-process evaluation of step 2 skipped',
                  '\n'.join(logs.output))
    self.assertFalse(glob.glob(os.path.join(workdir, 'eval', 'results_*')))
    # Resumed alone to step 4: step 4 (every 2), not step 3 (checkpointed,
    # not asked for).
    with config.unlocked():
      config.num_train_steps = 4
    result = train_lib.train_and_evaluate(config, workdir)
    self.assertEqual(result['step'], 4)
    done = sorted(os.listdir(os.path.join(workdir, 'eval')))
    self.assertEqual([n.split('_')[1] for n in done
                      if n.startswith('results_step')], ['step4'])
    kept = best.read_best(workdir)
    self.assertEqual((kept['step'], kept['metric']), (4, 'recon_accuracy'))
    self.assertEqual(kept['settings']['num_samples'], 16)
    # A metric that cannot be computed fails before any training.
    with config.unlocked():
      config.eval.metrics = 'recon_accuracy,nonsense'
    fresh = os.path.join(tempfile.mkdtemp(), 'w')
    with self.assertRaisesRegex(config_lib.ConfigError, 'nonsense'):
      train_lib.train_and_evaluate(config, fresh)
    self.assertFalse(os.path.exists(fresh))
