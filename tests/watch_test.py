"""The sidecar watcher's order and restart rules, and the best-checkpoint rule.

The checkpoints here are stand-in files (ckpt-N.index / .data) and the
metric is injected, so the rules are tested without training noise; the
real evaluation library runs in evaluate_test.py.
"""

import json
import os
import tempfile
import unittest

from bigbigan_tf.evaluation import best
from bigbigan_tf.evaluation import watch


def _make_checkpoint(workdir, step):
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  os.makedirs(ckpt_dir, exist_ok=True)
  prefix = os.path.join(ckpt_dir, f'ckpt-{step}')
  for suffix in ('.index', '.data-00000-of-00001'):
    with open(prefix + suffix, 'w') as f:
      f.write(f'step {step}')
  return prefix


class FakeEvaluator:
  """Writes results_step{N}.json like evaluate_lib, with metric = f(step)."""

  def __init__(self, workdir, metric):
    self.workdir, self.metric, self.steps = workdir, metric, []
    self.paths = []

  def __call__(self, path, checkpoint=None):
    step = int(path.rsplit('-', 1)[1])
    self.steps.append(step)
    self.paths.append((path, checkpoint))
    result = {'step': step, 'metrics': {'fid': self.metric(step),
                                        'recon_accuracy': 0.5}}
    os.makedirs(os.path.join(self.workdir, 'eval'), exist_ok=True)
    with open(watch.results_path(self.workdir, step), 'w') as f:
      json.dump(result, f)
    return result


class BestTest(unittest.TestCase):

  def test_directions(self):
    self.assertTrue(best.is_better('fid', 1.0, 2.0))
    self.assertFalse(best.is_better('fid', 2.0, 1.0))
    self.assertTrue(best.is_better('linear_probe', 0.9, 0.5))
    self.assertFalse(best.is_better('recon_accuracy', 0.5, 0.5))
    with self.assertRaises(best.SelectError):
      best.selection_key('nonsense')

  def test_copy_follows_the_injected_metric(self):
    workdir = tempfile.mkdtemp()
    fid = {2: 5.0, 4: 3.0, 6: 4.0, 8: 1.0}
    for step in (2, 4, 6, 8):
      prefix = _make_checkpoint(workdir, step)
      best.update_best(workdir, prefix, step, {'fid': fid[step]}, 'fid')
      kept = best.read_best(workdir)
      want = min((s for s in fid if s <= step), key=fid.get)
      self.assertEqual(kept['step'], want)
      with open(best.best_checkpoint(workdir) + '.index') as f:
        self.assertEqual(f.read(), f'step {want}')
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'best'))),
                     ['best.json', 'ckpt-8.data-00000-of-00001',
                      'ckpt-8.index'])

  def test_a_checkpoint_deleted_before_the_copy_is_not_kept(self):
    workdir = tempfile.mkdtemp()
    kept = _make_checkpoint(workdir, 2)
    self.assertTrue(best.update_best(workdir, kept, 2, {'fid': 5.0}, 'fid'))
    gone = os.path.join(workdir, 'checkpoints', 'ckpt-4')  # never written
    self.assertFalse(best.update_best(workdir, gone, 4, {'fid': 1.0}, 'fid'))
    self.assertEqual(best.read_best(workdir)['step'], 2)
    self.assertTrue(os.path.exists(os.path.join(workdir, 'best',
                                                'ckpt-2.index')))

  def test_no_best_yet_is_a_clear_error(self):
    with self.assertRaisesRegex(FileNotFoundError, '--watch'):
      best.best_checkpoint(tempfile.mkdtemp())


class WatchTest(unittest.TestCase):

  def test_newest_first_then_the_rest_then_ends(self):
    workdir = tempfile.mkdtemp()
    for step in (2, 4, 6):
      _make_checkpoint(workdir, step)
    evaluator = FakeEvaluator(workdir, lambda s: 10.0 - s)
    message = watch.watch(workdir, evaluator, final_step=6, select='fid',
                          timeout_s=5, poll_s=0.05)
    self.assertEqual(evaluator.steps, [6, 4, 2])
    self.assertIn('final step 6', message)
    self.assertEqual(best.read_best(workdir)['step'], 6)

  def test_held_checkpoints_survive_deletion_and_restarts(self):
    workdir = tempfile.mkdtemp()
    originals = [_make_checkpoint(workdir, step) for step in (2, 4)]
    evaluator = FakeEvaluator(workdir, lambda s: float(s))

    def evaluator_racing_the_manager(path, checkpoint):
      # While step 4 is evaluated, the manager deletes both checkpoints.
      for name in os.listdir(os.path.join(workdir, 'checkpoints')):
        os.remove(os.path.join(workdir, 'checkpoints', name))
      return evaluator(path, checkpoint)

    message = watch.watch(workdir, evaluator_racing_the_manager,
                          final_step=100, select='fid', timeout_s=0.3,
                          poll_s=0.05)
    self.assertIn('No new checkpoint', message)
    # Both evaluated from the held copies, named by the originals.
    self.assertEqual(evaluator.steps, [4, 2])
    self.assertEqual([c for _, c in evaluator.paths], originals[::-1])
    self.assertTrue(all('held-' in p for p, _ in evaluator.paths))
    # Step 2 (lower fid) is the best, its data copied though deleted.
    self.assertEqual(best.read_best(workdir)['step'], 2)
    with open(best.best_checkpoint(workdir) + '.data-00000-of-00001') as f:
      self.assertEqual(f.read(), 'step 2')
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'eval'))),
                     ['results_step2.json', 'results_step4.json'])
    # A restart evaluates only the new checkpoint.
    _make_checkpoint(workdir, 6)
    watch.watch(workdir, evaluator, final_step=100, select='fid',
                timeout_s=0.3, poll_s=0.05)
    self.assertEqual(evaluator.steps, [4, 2, 6])

  def test_a_killed_watchers_held_copies_are_evaluated_after_restart(self):
    workdir = tempfile.mkdtemp()
    prefix = _make_checkpoint(workdir, 2)
    self.assertIsNotNone(watch.hold(workdir, prefix, 2))
    # An incomplete hold (killed while linking) is dropped, not read.
    broken = watch.hold(workdir, _make_checkpoint(workdir, 4), 4)
    os.remove(broken + '.index')
    for name in os.listdir(os.path.join(workdir, 'checkpoints')):
      os.remove(os.path.join(workdir, 'checkpoints', name))
    evaluator = FakeEvaluator(workdir, lambda s: 1.0)
    watch.watch(workdir, evaluator, final_step=2, select=None,
                timeout_s=5, poll_s=0.05)
    self.assertEqual(evaluator.steps, [2])
    self.assertEqual(os.listdir(os.path.join(workdir, 'eval')),
                     ['results_step2.json'])

  def test_beyond_max_held_the_oldest_is_skipped_and_logged(self):
    workdir = tempfile.mkdtemp()
    for step in (2, 4, 6):
      _make_checkpoint(workdir, step)
    evaluator = FakeEvaluator(workdir, lambda s: 1.0)
    with self.assertLogs('absl', level='WARNING') as logs:
      watch.watch(workdir, evaluator, final_step=6, select=None,
                  timeout_s=5, poll_s=0.05, max_held=2)
    self.assertEqual(evaluator.steps, [6, 4])
    self.assertIn('step 2 is let go', '\n'.join(logs.output))
    self.assertTrue(watch.is_done(workdir, 2))

  def test_an_incomplete_checkpoint_is_not_held(self):
    workdir = tempfile.mkdtemp()
    prefix = _make_checkpoint(workdir, 2)
    os.remove(prefix + '.data-00000-of-00001')
    held = tempfile.mkdtemp()
    self.assertFalse(best.hold_files(prefix, held))
    self.assertTrue(best.hold_files(_make_checkpoint(workdir, 4), held))
    self.assertEqual(sorted(os.listdir(held)),
                     ['ckpt-4.data-00000-of-00001', 'ckpt-4.index'])


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


class WatchEndToEndTest(unittest.TestCase):
  """A tiny run and `eval/evaluate.py --watch` in separate processes."""

  def test_watcher_follows_a_run_and_best_exports(self):
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
    from tests import testing  # pylint: disable=g-import-not-at-top
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=repo)
    workdir = tempfile.mkdtemp()
    # The watcher starts first, on the empty workdir the trainer is about
    # to fill (it waits for config.json). The run writes checkpoints 0 and
    # 2, then is resumed to step 4, which the watcher learns by re-reading
    # num_train_steps from config.json.
    watcher = subprocess.Popen(
        [sys.executable, 'eval/evaluate.py', f'--workdir={workdir}', '--watch',
         '--metrics=recon_accuracy', '--select=recon_accuracy',
         '--num_samples=16', '--batch_size=8', '--timeout_s=120',
         '--digit_classifier_epochs=1', '--standing_stats_batches=0'],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    early = []  # the watcher's log until it waits (or dies)
    for line in watcher.stderr:
      early.append(line)
      if 'Waiting for the trainer' in line:
        break
    testing.train_tiny(workdir, steps=2)
    testing.train_tiny(workdir, steps=4)
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
    self.assertEqual(best.read_best(workdir)['metric'], 'recon_accuracy')
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
