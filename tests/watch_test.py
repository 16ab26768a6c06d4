"""The sidecar watcher's order and restart rules.

The checkpoints here are stand-in files (ckpt-N.index / .data) and the
metric is injected (helpers shared with best_test.py, where the
best-checkpoint protocol is tested), so the rules are tested without
training noise; the real evaluation library runs in evaluate_test.py.
"""

import math
import os
import tempfile
import unittest

import pytest

from best_test import delete_checkpoints
from best_test import FakeEvaluator
from best_test import kept_content
from best_test import make_checkpoint
from best_test import watch_once
from bigbigan_tf import lease
from bigbigan_tf.evaluation import best
from bigbigan_tf.evaluation import in_process
from bigbigan_tf.evaluation import ledger
from bigbigan_tf.evaluation import watch


class WatchTest(unittest.TestCase):

  def test_newest_first_then_the_rest_then_ends(self):
    workdir = tempfile.mkdtemp()
    for step in (2, 4, 6):
      make_checkpoint(workdir, step)
    evaluator = FakeEvaluator(workdir, lambda s: 10.0 - s)
    message = watch_once(workdir, evaluator, final_step=6, timeout_s=5)
    self.assertEqual(evaluator.steps, [6, 4, 2])
    self.assertIn('final step 6', message)
    self.assertEqual(best.read_best(workdir)['step'], 6)

  def test_held_checkpoints_survive_deletion_and_restarts(self):
    workdir = tempfile.mkdtemp()
    originals = [make_checkpoint(workdir, step) for step in (2, 4)]
    evaluator = FakeEvaluator(workdir, lambda s: float(s))

    def evaluator_racing_the_manager(path, checkpoint):
      # While step 4 is evaluated, the manager deletes both checkpoints.
      delete_checkpoints(workdir)
      return evaluator(path, checkpoint)

    message = watch_once(workdir, evaluator_racing_the_manager)
    self.assertIn('No new checkpoint', message)
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
    message = watch_once(workdir, evaluator, final_step=4)
    # A skipped final step is not "done": the watcher waited for it.
    self.assertIn('No new checkpoint', message)
    self.assertEqual(evaluator.steps, [2])
    # The trainer resumes and saves step 4 again (a later mtime).
    make_checkpoint(workdir, 4)
    os.utime(stub + '.index', (1e9, 2e9))
    message = watch_once(workdir, evaluator, final_step=4, timeout_s=5)
    self.assertIn('final step 4 is evaluated', message)
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
    from bigbigan_tf import config_lib  # pylint: disable=g-import-not-at-top
    from bigbigan_tf.configs import tiny  # pylint: disable=g-import-not-at-top
    workdir = tempfile.mkdtemp()
    make_checkpoint(workdir, 2)
    config = tiny.get_config()
    with config.unlocked():
      config.eval.every_steps = 2
      config.eval.metrics = 'recon_accuracy'
    config_lib.save(config, workdir)
    with watch.evaluator_lease(workdir):  # the first watcher
      with self.assertRaisesRegex(lease.LeaseHeldError,
                                  f'another evaluator .pid {os.getpid()}'):
        watch_once(workdir, FakeEvaluator(workdir, float))
      # A trainer's in-process evaluation is refused as it starts.
      with self.assertRaisesRegex(lease.LeaseHeldError, 'another evaluator'):
        in_process.InProcessEvaluation(config, workdir, chief=True)
    self.assertFalse(os.path.exists(watch.results_path(workdir, 2)))

  def test_offline_auto_drops_what_cannot_run_in_one_line(self):
    from bigbigan_tf.configs import tiny  # pylint: disable=g-import-not-at-top
    with self.assertLogs(level='WARNING') as logs:
      names, select = watch.plan(tiny.get_config(), None, 'auto',
                                 inception='/nonexistent/inception')
    self.assertEqual(select, 'linear_probe')
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


@pytest.mark.slow
class WatchEndToEndTest(unittest.TestCase):
  """A tiny run and `eval/evaluate.py --watch` in separate processes."""

  def test_watcher_follows_a_run_and_best_exports(self):
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=repo)
    workdir = tempfile.mkdtemp()
    # The watcher starts first, on the empty workdir the trainer is about
    # to fill (it waits for config.json). The run writes checkpoints 0 and
    # 2, then is resumed to step 4, which the watcher learns by re-reading
    # num_train_steps from config.json.
    # Bare but for speed: the metrics and --select are the offline
    # defaults, num_samples the run's config.eval.num_samples.
    watcher = subprocess.Popen(
        [sys.executable, 'eval/evaluate.py', f'--workdir={workdir}', '--watch',
         '--inception=/nonexistent/inception', '--timeout_s=120',
         '--probe_epochs=1', '--digit_classifier_epochs=1',
         '--standing_stats_batches=0'],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    early = []  # the watcher's log until it waits (or dies)
    for line in watcher.stderr:
      early.append(line)
      if 'Waiting for the trainer' in line:
        break
    from bigbigan_tf import train_lib  # pylint: disable=g-import-not-at-top
    from bigbigan_tf.configs import tiny  # pylint: disable=g-import-not-at-top
    config = tiny.get_config()
    for steps in (2, 4):
      with config.unlocked():
        # The watcher's default num_samples is the run's: small, for speed.
        config.num_train_steps, config.eval.num_samples = steps, 100
      train_lib.train_and_evaluate(config, workdir)
    stdout, stderr = watcher.communicate(timeout=600)
    stderr = ''.join(early) + stderr
    evaluated = sorted(int(n[len('results_step'):-len('.json')])
                       for n in os.listdir(os.path.join(workdir, 'eval'))
                       if n.startswith('results_step'))
    self.assertEqual(watcher.returncode, 0, stderr[-3000:])
    # Every checkpoint, each once: held as soon as seen, none deleted
    # before its turn could be lost (keep_checkpoints=3 keeps 0, 2, 4).
    self.assertEqual(evaluated, [0, 2, 4], stderr[-3000:])
    self.assertIn('Waiting for the trainer', stderr)
    self.assertIn('final step 4', stdout)
    self.assertFalse([n for n in os.listdir(os.path.join(workdir, 'eval'))
                      if n.startswith('held-')])
    self.assertTrue(os.path.exists(watch.results_path(workdir, 4)))
    # The metrics it could not compute, named once; W/best by the probe.
    self.assertEqual(stderr.count('drops the metrics it cannot compute'), 1)
    self.assertIn('is, fid, kid', stderr)
    self.assertIn('num_samples=100 (config.eval.num_samples)', stderr)
    self.assertEqual(best.read_best(workdir)['metric'], 'linear_probe/top1')
    kept = best.read_best(workdir)['step']
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'best'))),
                     ['best.json', f'ckpt-{kept}'])
    export_dir = os.path.join(workdir, 'export_best')
    exported = subprocess.run(
        [sys.executable, 'export.py', f'--workdir={workdir}',
         f'--export_dir={export_dir}', '--checkpoint=best',
         '--standing_stats_batches=0'],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    self.assertEqual(exported.returncode, 0, exported.stderr[-3000:])
    self.assertIsNotNone(hub.load(export_dir))


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
    result = train_lib.train_and_evaluate(config, workdir)
    self.assertEqual(result['step'], 2)
    done = sorted(os.listdir(os.path.join(workdir, 'eval')))
    # Step 2 (every 2), not step 1 (checkpointed, not asked for).
    self.assertIn('results_step2.json', done)
    self.assertNotIn('results_step1.json', done)
    self.assertEqual(best.read_best(workdir)['step'], 2)
    self.assertEqual(best.read_best(workdir)['metric'], 'recon_accuracy')
    # A metric that cannot be computed fails before any training.
    with config.unlocked():
      config.eval.metrics = 'recon_accuracy,nonsense'
    fresh = os.path.join(tempfile.mkdtemp(), 'w')
    with self.assertRaisesRegex(config_lib.ConfigError, 'nonsense'):
      train_lib.train_and_evaluate(config, fresh)
    self.assertFalse(os.path.exists(fresh))
