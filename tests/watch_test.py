"""The sidecar watcher's order and restart rules, and the best-checkpoint rule.

The checkpoints here are stand-in files (ckpt-N.index / .data) and the
metric is injected, so the rules are tested without training noise; the
real evaluation library runs in evaluate_test.py. A "kill" is an exception
no code catches, raised from one step of the best update; a "restart" is a
new `watch.watch` call.
"""

import errno
import json
import math
import os
import shutil
import tempfile
import unittest
from unittest import mock

import ml_collections
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf import lease
from bigbigan_tf.evaluation import best
from bigbigan_tf.evaluation import ledger
from bigbigan_tf.evaluation import watch

# The lease as the trainer's would be on a local disk.
CONFIG = ml_collections.ConfigDict({'train': {'lease': 'lock',
                                              'lease_expiry_s': 300.0}})


class Killed(BaseException):
  """Stands in for SIGKILL: nothing in the library catches it."""


def _make_checkpoint(workdir, step, content=None):
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  os.makedirs(ckpt_dir, exist_ok=True)
  prefix = os.path.join(ckpt_dir, f'ckpt-{step}')
  for suffix in ('.index', '.data-00000-of-00001'):
    # New files, as the checkpoint manager writes them (never in place:
    # the held and kept copies are hard links).
    with open(prefix + suffix + '.tmp', 'w') as f:
      f.write(content or f'step {step}')
    os.replace(prefix + suffix + '.tmp', prefix + suffix)
  return prefix


def _delete_checkpoints(workdir):
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  for name in os.listdir(ckpt_dir):
    os.remove(os.path.join(ckpt_dir, name))


def _watch(workdir, evaluator, **kwargs):
  kwargs = dict(dict(final_step=100, select='fid', timeout_s=0.3,
                     poll_s=0.05, config=CONFIG), **kwargs)
  return watch.watch(workdir, evaluator, **kwargs)


def _kept_content(workdir):
  with open(best.best_checkpoint(workdir) + '.data-00000-of-00001') as f:
    return f.read()


class FakeEvaluator:
  """Writes results_step{N}.json like evaluate_lib, with metric = f(step)."""

  def __init__(self, workdir, metric):
    self.workdir, self.metric, self.steps = workdir, metric, []
    self.paths = []

  def __call__(self, path, checkpoint=None):
    step = int(path.rsplit('-', 1)[1])
    with open(path + '.index') as f:
      if f.read() == 'stub':
        raise checkpoints.UnreadableCheckpointError(f'{path}: a stub')
    self.steps.append(step)
    self.paths.append((path, checkpoint))
    result = {'step': step, 'metrics': {'fid': self.metric(step),
                                        'recon_accuracy': 0.5}}
    os.makedirs(os.path.join(self.workdir, 'eval'), exist_ok=True)
    with open(watch.results_path(self.workdir, step), 'w') as f:
      json.dump(result, f)
    return result


class BestTest(unittest.TestCase):

  def test_directions_and_nan(self):
    self.assertTrue(best.is_better('fid', 1.0, 2.0))
    self.assertFalse(best.is_better('fid', 2.0, 1.0))
    self.assertTrue(best.is_better('linear_probe', 0.9, 0.5))
    self.assertFalse(best.is_better('recon_accuracy', 0.5, 0.5))
    nan = float('nan')
    self.assertFalse(best.is_better('fid', nan, 2.0))
    self.assertFalse(best.is_better('fid', nan, None))
    self.assertTrue(best.is_better('fid', 9.0, nan))
    with self.assertRaises(best.SelectError):
      best.selection_key('nonsense')
    # NaN neither becomes the best nor blocks a later number.
    workdir = tempfile.mkdtemp()
    self.assertFalse(best.update_best(workdir, _make_checkpoint(workdir, 2),
                                      2, {'fid': nan}, 'fid'))
    self.assertIsNone(best.read_best(workdir))
    self.assertTrue(best.update_best(workdir, _make_checkpoint(workdir, 4),
                                     4, {'fid': 7.0}, 'fid'))
    self.assertFalse(best.update_best(workdir, _make_checkpoint(workdir, 6),
                                      6, {'fid': nan}, 'fid'))
    self.assertEqual(best.read_best(workdir)['step'], 4)

  def test_copy_follows_the_injected_metric(self):
    workdir = tempfile.mkdtemp()
    fid = {2: 5.0, 4: 3.0, 6: 4.0, 8: 1.0}
    for step in (2, 4, 6, 8):
      prefix = _make_checkpoint(workdir, step)
      best.update_best(workdir, prefix, step, {'fid': fid[step]}, 'fid')
      want = min((s for s in fid if s <= step), key=fid.get)
      self.assertEqual(best.read_best(workdir)['step'], want)
      self.assertEqual(_kept_content(workdir), f'step {want}')
    # One immutable copy, named by the pointer; export resolves through it.
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'best'))),
                     ['best.json', 'ckpt-8'])
    self.assertEqual(best.read_best(workdir)['checkpoint'], 'ckpt-8/ckpt-8')
    self.assertEqual(checkpoints.resolve_checkpoint(workdir, 'best'),
                     os.path.join(workdir, 'best', 'ckpt-8', 'ckpt-8'))

  def test_a_checkpoint_deleted_before_the_copy_is_not_kept(self):
    workdir = tempfile.mkdtemp()
    kept = _make_checkpoint(workdir, 2)
    self.assertTrue(best.update_best(workdir, kept, 2, {'fid': 5.0}, 'fid'))
    gone = os.path.join(workdir, 'checkpoints', 'ckpt-4')  # never written
    self.assertFalse(best.update_best(workdir, gone, 4, {'fid': 1.0}, 'fid'))
    self.assertEqual(best.read_best(workdir)['step'], 2)
    self.assertEqual(_kept_content(workdir), 'step 2')

  def test_no_best_yet_is_a_clear_error(self):
    with self.assertRaisesRegex(FileNotFoundError, '--watch'):
      checkpoints.resolve_checkpoint(tempfile.mkdtemp(), 'best')

  def test_the_older_layout_is_read_then_migrated(self):
    workdir = tempfile.mkdtemp()
    legacy = os.path.join(workdir, 'best')
    os.makedirs(legacy)
    for suffix in ('.index', '.data-00000-of-00001'):
      with open(os.path.join(legacy, 'ckpt-2' + suffix), 'w') as f:
        f.write('step 2')
    with open(os.path.join(legacy, 'best.json'), 'w') as f:
      json.dump({'step': 2, 'metric': 'fid', 'value': 3.0,
                 'metrics': {'fid': 3.0}, 'prefix': 'ckpt-2'}, f)
    self.assertEqual(checkpoints.resolve_checkpoint(workdir, 'best'),
                     os.path.join(legacy, 'ckpt-2'))
    # The older writer's leftovers, and a newer, better result.
    os.makedirs(os.path.join(workdir, 'best.old'))
    os.makedirs(os.path.join(workdir, 'best.tmp-4'))
    _make_checkpoint(workdir, 4)
    evaluator = FakeEvaluator(workdir, lambda s: 9.0)
    _watch(workdir, evaluator)
    self.assertEqual(best.read_best(workdir)['step'], 2)  # 9 > 3
    self.assertEqual(sorted(os.listdir(legacy)), ['best.json', 'ckpt-2'])
    self.assertEqual(_kept_content(workdir), 'step 2')
    self.assertFalse([n for n in os.listdir(workdir) if n.startswith('best.')])


class CrashTest(unittest.TestCase):
  """A kill between any two steps of the best update, then a restart."""

  def _killed_then_restarted(self, target, attribute, side_effect=Killed):
    workdir = tempfile.mkdtemp()
    _make_checkpoint(workdir, 2)
    fid = {2: 5.0, 4: 1.0, 6: 3.0}
    evaluator = FakeEvaluator(workdir, fid.get)
    _watch(workdir, evaluator)
    self.assertEqual(best.read_best(workdir)['step'], 2)
    _make_checkpoint(workdir, 4)
    with mock.patch.object(target, attribute, side_effect=side_effect):
      with self.assertRaises(Killed):
        _watch(workdir, evaluator)
    # The trainer deletes checkpoint 4 meanwhile: its held copy remains.
    _delete_checkpoints(workdir)
    # Readers see a whole best at every moment.
    self.assertIn(_kept_content(workdir), ('step 2', 'step 4'))
    _make_checkpoint(workdir, 6)
    _watch(workdir, evaluator)
    self.assertEqual(best.read_best(workdir)['step'], 4, attribute)
    self.assertEqual(_kept_content(workdir), 'step 4')
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'best'))),
                     ['best.json', 'ckpt-4'])
    self.assertFalse([n for n in os.listdir(os.path.join(workdir, 'eval'))
                      if n.startswith('held-')])
    return evaluator

  def test_killed_after_the_results(self):
    evaluator = self._killed_then_restarted(ledger, 'record')
    self.assertEqual(evaluator.steps, [2, 4, 6])

  def test_killed_before_and_during_the_copy(self):
    self._killed_then_restarted(best, '_copy')

    def partial_copy(source, copy_dir):
      os.makedirs(copy_dir)
      shutil.copy(source + '.index', copy_dir)
      raise Killed

    self._killed_then_restarted(best, '_copy', partial_copy)

  def test_killed_after_the_copy(self):
    self._killed_then_restarted(best, '_write_pointer')

  def test_killed_after_the_pointer(self):
    self._killed_then_restarted(best, '_remove_copy')

  def test_object_store_copies_and_renames_killed_midway(self):
    """gs://: no hard links, a rename is a copy and a delete per object."""
    workdir = tempfile.mkdtemp()
    real_copy, real_remove = tf.io.gfile.copy, tf.io.gfile.remove
    calls = {'copy': 0, 'kill_at': None, 'dir_renames': 0}

    def copy(src, dst, overwrite=False):
      calls['copy'] += 1
      if calls['copy'] == calls['kill_at']:
        raise Killed
      real_copy(src, dst, overwrite=overwrite)

    def rename(src, dst, overwrite=False):
      if os.path.isdir(src):
        calls['dir_renames'] += 1
      copy(src, dst, overwrite)  # the new object appears whole, then
      real_remove(src)           # the old name goes

    def link(*unused_args):
      raise OSError(errno.EXDEV, 'cross-device link')

    fid = {2: 5.0, 4: 1.0, 6: 3.0}
    evaluator = FakeEvaluator(workdir, fid.get)
    with mock.patch.object(tf.io.gfile, 'copy', copy), \
         mock.patch.object(tf.io.gfile, 'rename', rename), \
         mock.patch.object(os, 'link', link):
      _make_checkpoint(workdir, 2)
      _watch(workdir, evaluator)
      _make_checkpoint(workdir, 4)
      # Every copy of step 4's update, one after another, is the last.
      for kill_at in range(1, 12):
        calls.update(copy=0, kill_at=kill_at)
        try:
          _watch(workdir, evaluator)
          break
        except Killed:
          self.assertIn(_kept_content(workdir), ('step 2', 'step 4'))
      calls['kill_at'] = None
      _watch(workdir, evaluator)
    self.assertGreater(kill_at, 4)
    self.assertEqual(calls['dir_renames'], 0)
    self.assertEqual(best.read_best(workdir)['step'], 4)
    self.assertEqual(_kept_content(workdir), 'step 4')
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'best'))),
                     ['best.json', 'ckpt-4'])

  def test_rebuilt_from_the_results_when_a_checkpoint_is_gone(self):
    workdir = tempfile.mkdtemp()
    for step in (2, 4, 6):
      _make_checkpoint(workdir, step)
    fid = {2: 3.0, 4: 1.0, 6: 2.0}
    _watch(workdir, FakeEvaluator(workdir, fid.get), select=None)
    self.assertIsNone(best.read_best(workdir))
    os.remove(os.path.join(workdir, 'checkpoints', 'ckpt-4.index'))
    with self.assertLogs(level='WARNING') as logs:
      _watch(workdir, FakeEvaluator(workdir, fid.get))
    # Step 4 was best but its checkpoint is gone: step 6 is kept, and why.
    self.assertEqual(best.read_best(workdir)['step'], 6)
    self.assertIn('Step 4 has the best fid', '\n'.join(logs.output))
    self.assertIn('no longer on disk', '\n'.join(logs.output))


class WatchTest(unittest.TestCase):

  def test_newest_first_then_the_rest_then_ends(self):
    workdir = tempfile.mkdtemp()
    for step in (2, 4, 6):
      _make_checkpoint(workdir, step)
    evaluator = FakeEvaluator(workdir, lambda s: 10.0 - s)
    message = _watch(workdir, evaluator, final_step=6, timeout_s=5)
    self.assertEqual(evaluator.steps, [6, 4, 2])
    self.assertIn('final step 6', message)
    self.assertEqual(best.read_best(workdir)['step'], 6)

  def test_held_checkpoints_survive_deletion_and_restarts(self):
    workdir = tempfile.mkdtemp()
    originals = [_make_checkpoint(workdir, step) for step in (2, 4)]
    evaluator = FakeEvaluator(workdir, lambda s: float(s))

    def evaluator_racing_the_manager(path, checkpoint):
      # While step 4 is evaluated, the manager deletes both checkpoints.
      _delete_checkpoints(workdir)
      return evaluator(path, checkpoint)

    message = _watch(workdir, evaluator_racing_the_manager)
    self.assertIn('No new checkpoint', message)
    # Both evaluated from the held copies, named by the originals.
    self.assertEqual(evaluator.steps, [4, 2])
    self.assertEqual([c for _, c in evaluator.paths], originals[::-1])
    self.assertTrue(all('held-' in p for p, _ in evaluator.paths))
    # Step 2 (lower fid) is the best, its data copied though deleted.
    self.assertEqual(best.read_best(workdir)['step'], 2)
    self.assertEqual(_kept_content(workdir), 'step 2')
    self.assertFalse([n for n in os.listdir(os.path.join(workdir, 'eval'))
                      if n.startswith('held-')])
    # A restart evaluates only the new checkpoint.
    _make_checkpoint(workdir, 6)
    _watch(workdir, evaluator)
    self.assertEqual(evaluator.steps, [4, 2, 6])

  def test_a_killed_watchers_held_copies_are_evaluated_after_restart(self):
    workdir = tempfile.mkdtemp()
    prefix = _make_checkpoint(workdir, 2)
    self.assertIsNotNone(ledger.hold(workdir, prefix, 2,
                                     ledger.identity(prefix)))
    # An incomplete hold (killed while linking) is dropped, not read.
    four = _make_checkpoint(workdir, 4)
    broken = ledger.hold(workdir, four, 4, ledger.identity(four))
    os.remove(os.path.join(os.path.dirname(broken), 'identity.json'))
    _delete_checkpoints(workdir)
    evaluator = FakeEvaluator(workdir, lambda s: 1.0)
    _watch(workdir, evaluator, final_step=2, select=None, timeout_s=5)
    self.assertEqual(evaluator.steps, [2])
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'eval'))),
                     ['done_step2.json', 'lease.json', 'results_step2.json'])

  def test_beyond_max_held_the_oldest_is_skipped_and_logged(self):
    workdir = tempfile.mkdtemp()
    for step in (2, 4, 6):
      _make_checkpoint(workdir, step)
    evaluator = FakeEvaluator(workdir, lambda s: 1.0)
    with self.assertLogs(level='WARNING') as logs:
      _watch(workdir, evaluator, final_step=6, select=None, timeout_s=5,
             max_held=2)
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

  def test_a_resaved_final_step_is_evaluated(self):
    workdir = tempfile.mkdtemp()
    _make_checkpoint(workdir, 2)
    stub = _make_checkpoint(workdir, 4, content='stub')  # a failed save
    evaluator = FakeEvaluator(workdir, lambda s: 10.0 - s)
    message = _watch(workdir, evaluator, final_step=4)
    # A skipped final step is not "done": the watcher waited for it.
    self.assertIn('No new checkpoint', message)
    self.assertEqual(evaluator.steps, [2])
    # The trainer resumes and saves step 4 again (a later mtime).
    _make_checkpoint(workdir, 4)
    os.utime(stub + '.index', (1e9, 2e9))
    message = _watch(workdir, evaluator, final_step=4, timeout_s=5)
    self.assertIn('final step 4 is evaluated', message)
    self.assertEqual(evaluator.steps, [2, 4])
    self.assertEqual(best.read_best(workdir)['step'], 4)
    # Saved again once more, better: evaluated again, and kept again.
    evaluator.metric = lambda s: -1.0
    _make_checkpoint(workdir, 4, content='step 4 again')
    os.utime(stub + '.index', (1e9, 3e9))
    _watch(workdir, evaluator, final_step=4, timeout_s=5)
    self.assertEqual(evaluator.steps, [2, 4, 4])
    self.assertEqual(best.read_best(workdir)['value'], -1.0)
    self.assertEqual(_kept_content(workdir), 'step 4 again')
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'best'))),
                     ['best.json', 'ckpt-4.1'])

  def test_nan_neither_becomes_nor_blocks_the_best(self):
    workdir = tempfile.mkdtemp()
    for step in (2, 4, 6):
      _make_checkpoint(workdir, step)
    fid = {6: math.nan, 4: 2.0, 2: 1.0}
    _watch(workdir, FakeEvaluator(workdir, fid.get))
    self.assertEqual(best.read_best(workdir)['step'], 2)

  def test_a_second_evaluator_is_refused_naming_the_holder(self):
    from bigbigan_tf import config_lib  # pylint: disable=g-import-not-at-top
    from bigbigan_tf import train_lib  # pylint: disable=g-import-not-at-top
    from bigbigan_tf.configs import tiny  # pylint: disable=g-import-not-at-top
    workdir = tempfile.mkdtemp()
    _make_checkpoint(workdir, 2)
    config = tiny.get_config()
    with config.unlocked():
      config.eval.every_steps = 2
      config.eval.metrics = 'recon_accuracy'
    config_lib.save(config, workdir)
    with watch.evaluator_lease(workdir):  # the first watcher
      with self.assertRaisesRegex(lease.LeaseHeldError,
                                  f'another evaluator .pid {os.getpid()}'):
        _watch(workdir, FakeEvaluator(workdir, float))
      # A trainer's in-process evaluation is refused as it starts.
      with self.assertRaisesRegex(lease.LeaseHeldError, 'another evaluator'):
        train_lib.InProcessEvaluation(config, workdir, chief=True)
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
    with self.assertRaisesRegex(Exception, 'selection metric fid needs fid'):
      watch.plan(tiny.get_config(), None, 'fid',
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
    # The metrics it could not compute, named once; W/best by the probe.
    self.assertEqual(stderr.count('drops the metrics it cannot compute'), 1)
    self.assertIn('is, fid, kid', stderr)
    self.assertIn('num_samples=1000 (config.eval.num_samples)', stderr)
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
