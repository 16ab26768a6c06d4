"""train.py, eval/evaluate.py --watch and export.py on gs:// for real.

TensorFlow's own GCS file system (copy-and-delete renames, its caches, the
storageLayout call before a directory rename) against fake-gcs-server through
tests/gcs_emulator.py. One scenario, run once in setUpClass and read by the
tests, keeps the subprocesses few (each TensorFlow start costs 10-20 s):

  phase 1: trainer A on gs://B/e2e-X/run (a long run, deterministic); once it
      has saved ckpt-0, a watcher follows it and a second trainer is refused
      while A trains (slowed by the front). A is then SIGKILLed mid-run, and
      the watcher once it has kept a best.
  phase 2 (side by side): after A's lease expires, C resumes the run to step
      F = A's last readable checkpoint + 2; S trains a fresh workdir straight
      to F (C's ckpt-F must equal S's bit for bit); the watcher, restarted,
      follows C to its final step; a short run gets a 403 from the front on
      its second checkpoint (TensorFlow's retries of a 429 are
      gcs_emulator_test's).
  phase 3: export.py --checkpoint=best to gs://, then hub.load from gs://.

A's lease is waited out (its lease_expiry_s is short) rather than taken
over as a same-host dead holder's, so the resume does not depend on that
shortcut of the compare-and-swap lease.
"""

import json
import os
import signal
import tempfile
import time
import uuid

import numpy as np
import pytest
import tensorflow as tf

import gcs_emulator
import testing
from bigbigan_tf import checkpoints
from bigbigan_tf import workdir_layout

# Bit-identical resume (as train_test's local check): same batches, noise and
# state; one step per loop so the stop lands on any step.
_DETERMINISTIC = ('--config.train.deterministic=True',
                  '--config.train.checkpoint_data_iterator=True',
                  '--config.train.steps_per_loop=1')
# The workdir's lease expiry: 5 s lost the lease of the resumed run on a
# loaded 2-core machine (renewals took longer).
_EXPIRY_S = 20
_RUN_ARGS = _DETERMINISTIC + (
    f'--config.train.lease_expiry_s={_EXPIRY_S}',
    '--config.train.checkpoint_every=2', '--config.train.log_every=1',
    '--config.train.grid_every=1000',
    # The watcher's samples per evaluation (it takes the run's).
    '--config.eval.num_samples=64')
_WATCH_ARGS = ('--watch', '--metrics=linear_probe', '--select=linear_probe',
               '--probe_epochs=1', '--standing_stats_batches=0',
               '--timeout_s=300', '--max_held=2')


def setUpModule():
  gcs_emulator.require_emulator().apply()


def tearDownModule():
  gcs_emulator.unapply()


def _wait_until(condition, timeout, what):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if condition():
      return
    time.sleep(0.5)
  raise AssertionError(f'timed out after {timeout} s waiting for {what}')


def _object(url: str) -> str:
  """'gs://B/a/b' -> 'a/b', as upload requests name it (name=a/b...)."""
  return url.split('/', 3)[3]


def _bucket():
  from google.cloud import storage  # pylint: disable=g-import-not-at-top
  return storage.Client().bucket(gcs_emulator.require_emulator().bucket)


def _checkpoint_steps(directory: str) -> list:
  """Steps of the ckpt-N whose index and data both landed in `directory`."""
  prefix = directory.split('/', 3)[3].rstrip('/') + '/'
  names = {b.name[len(prefix):] for b in _bucket().list_blobs(prefix=prefix)}
  return sorted(int(n[len('ckpt-'):-len('.index')]) for n in names
                if n.startswith('ckpt-') and n.endswith('.index') and
                n[:-len('index')] + 'data-00000-of-00001' in names)


def _local_reader(checkpoint: str):
  """tf.train.load_checkpoint of a gs:// checkpoint, read from a local copy.

  In the process that has used gs:// already (this one), TF 2.21's
  checkpoint reader hung on gs:// in our runs while no request reached the
  emulator; the subprocesses under test read gs:// directly.
  """
  prefix = checkpoint.split('/', 3)[3]
  local = tempfile.mkdtemp()
  for blob in _bucket().list_blobs(prefix=prefix + '.'):
    blob.download_to_filename(
        os.path.join(local, os.path.basename(blob.name)))
  return tf.train.load_checkpoint(
      os.path.join(local, os.path.basename(prefix)))


def _differences(a, b) -> list:
  """(name, max relative difference) of the variables two readers differ in."""
  names = [n for n in a.get_variable_to_shape_map()
           if not n.startswith('data_iterator') and '_CHECKPOINTABLE' not in n]
  assert len(names) > 100, names
  found = []
  for name in sorted(names):
    x, y = a.get_tensor(name), b.get_tensor(name)
    if not np.array_equal(x, y):
      scale = np.maximum(np.abs(x), 1e-12)
      found.append((name, float(np.max(np.abs(x - y) / scale))))
  return found


def _finished(run: testing.LiveRun, timeout=600) -> dict:
  code = run.wait(timeout=timeout)
  return {'code': code, 'output': run.output(), 'errors': run.error_lines()}


@pytest.mark.slow  # four TensorFlow subprocesses at most at once
class GcsEndToEndTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    emu = gcs_emulator.require_emulator()
    cls.root = emu.url(f'e2e-{uuid.uuid4().hex[:8]}')
    cls.run_dir = f'{cls.root}/run'
    cls.straight = f'{cls.root}/straight'
    cls.export_dir = f'{cls.root}/export'
    cls.faults = {403: f'{cls.root}/fault403'}
    cls.live = []
    try:
      cls._phase1(emu)
      cls._phase2(emu)
      cls._phase3()
    finally:
      emu.clear()
      for run in cls.live:
        if run.proc.poll() is None:
          run.proc.kill()
          run.wait()

  @classmethod
  def _start(cls, *args, script='train.py'):
    run = testing.LiveRun(*args, script=script)
    cls.live.append(run)
    return run

  @classmethod
  def _train(cls, workdir, *args):
    return cls._start(f'--workdir={workdir}', f'--config={testing.TINY}',
                      *args)

  @classmethod
  def _watch(cls):
    return cls._start(f'--workdir={cls.run_dir}', *_WATCH_ARGS,
                      script=os.path.join('eval', 'evaluate.py'))

  @classmethod
  def _phase1(cls, emu):
    a = cls._train(cls.run_dir, '--config.num_train_steps=100000', *_RUN_ARGS)
    a.wait_for('tracing and compiling the loop')  # config.json and ckpt-0
    watcher = cls._watch()
    # While the second trainer starts, A's checkpoint uploads are held 2 s
    # each: A stays alive without training far (F, below, stays small).
    emu.delay(2.0, method='POST',
              path_regex=f'name={_object(cls.run_dir)}/checkpoints/')
    second = cls._train(cls.run_dir, '--config.num_train_steps=100000',
                        *_RUN_ARGS)
    cls.second = _finished(second)
    cls.a_alive_at_refusal = a.proc.poll() is None
    cls.a_pid = a.proc.pid
    a.proc.kill()  # SIGKILL mid-run, most likely mid-save
    cls.a = _finished(a)
    cls.killed_at = time.time()
    emu.clear()
    # The watcher, alone now, is killed once it has kept a best.
    pointer = workdir_layout.pointer_path(cls.run_dir)
    _wait_until(lambda: tf.io.gfile.exists(pointer) or
                watcher.proc.poll() is not None, 300,
                'the watcher\'s first best')
    cls.first_watcher_best = workdir_layout.read_best(cls.run_dir)
    watcher.proc.kill()
    cls.first_watcher = _finished(watcher)

  @classmethod
  def _phase2(cls, emu):
    # What C will resume from (the same rule C applies).
    cls.resume_from = _checkpoint_steps(
        f'{cls.run_dir}/{checkpoints.CHECKPOINT_DIR}')[-1]
    cls.final = cls.resume_from + 2
    for status, workdir in cls.faults.items():
      # ckpt-0 lands; every upload of ckpt-2 is refused.
      emu.inject(status, method='POST',
                 path_regex=f'name={_object(workdir)}/'
                 f'{checkpoints.CHECKPOINT_DIR}/ckpt-2')
    faults = {status: cls._train(workdir, '--config.num_train_steps=2',
                                 '--config.train.checkpoint_every=2')
              for status, workdir in cls.faults.items()}
    straight = cls._train(cls.straight, f'--config.num_train_steps={cls.final}',
                          *_RUN_ARGS)
    # A's lease expires (its last renewal was before the kill).
    time.sleep(max(0.0, cls.killed_at + _EXPIRY_S + 1.5 - time.time()))
    resumed = cls._train(cls.run_dir, f'--config.num_train_steps={cls.final}',
                         *_RUN_ARGS)
    watcher = cls._watch()
    cls.resumed = _finished(resumed)
    cls.straight_run = _finished(straight)
    cls.fault_runs = {status: _finished(run) for status, run in faults.items()}
    cls.watcher = _finished(watcher)
    emu.clear()

  @classmethod
  def _phase3(cls):
    cls.export = _finished(cls._start(
        f'--workdir={cls.run_dir}', f'--export_dir={cls.export_dir}',
        '--checkpoint=best', '--standing_stats_batches=0',
        script='export.py'))

  def test_trains_checkpoints_and_resumes(self):
    self.assertEqual(self.resumed['code'], 0, self.resumed['output'][-3000:])
    # From the newest whole checkpoint A left (or the one before, if that
    # one is unreadable: A was killed at any point).
    self.assertRegex(self.resumed['output'],
                     rf'Resumed from {self.run_dir}/checkpoints/ckpt-\d+ ')
    self.assertEqual(_checkpoint_steps(f'{self.run_dir}/checkpoints')[-1],
                     self.final)

  # Failed in CI until models.initial_values_from: the lease's heartbeat
  # (every expiry / 3 = 6.7 s here) drew from Python's `random` while
  # train.py built the networks, so A's and S's spectral-norm vectors at
  # step 0 differed. On a mismatch the message says which variables differ
  # and whether they already did at the resume step.
  def test_sigkilled_and_resumed_equals_uninterrupted(self):
    self.assertEqual(self.a['code'], -signal.SIGKILL, self.a['output'][-3000:])
    self.assertEqual(self.straight_run['code'], 0,
                     self.straight_run['output'][-3000:])
    at_final = _differences(
        _local_reader(f'{self.straight}/checkpoints/ckpt-{self.final}'),
        _local_reader(f'{self.run_dir}/checkpoints/ckpt-{self.final}'))
    if at_final:
      at_resume = _differences(
          _local_reader(f'{self.straight}/checkpoints/'
                        f'ckpt-{self.resume_from}'),
          _local_reader(f'{self.run_dir}/checkpoints/'
                        f'ckpt-{self.resume_from}'))
      resumed = [line for line in self.resumed['output'].splitlines()
                 if 'Resumed from' in line]
      self.fail(f'{len(at_final)} variables differ at step {self.final} '
                f'(name, max relative difference): {at_final[:10]}; at the '
                f'resume step {self.resume_from}, {len(at_resume)} differ: '
                f'{at_resume[:5]}; {resumed}')

  def test_second_trainer_is_refused_in_one_line(self):
    self.assertTrue(self.a_alive_at_refusal)
    self.assertEqual(self.second['code'], 2, self.second['output'][-3000:])
    self.assertLen(self.second['errors'], 1, self.second['output'][-3000:])
    self.assertRegex(self.second['errors'][0],
                     rf'^error: .*{self.run_dir}.*pid {self.a_pid}')
    self.assertNotIn('Traceback', self.second['output'])

  def test_watcher_killed_and_restarted_keeps_a_whole_best(self):
    self.assertEqual(self.first_watcher['code'], -signal.SIGKILL,
                     self.first_watcher['output'][-3000:])
    self.assertIsNotNone(self.first_watcher_best,
                         self.first_watcher['output'][-3000:])
    # Exit 0: it evaluated the run's final step.
    self.assertEqual(self.watcher['code'], 0, self.watcher['output'][-3000:])
    info = workdir_layout.read_best(self.run_dir)
    self.assertEqual(info['metric'], 'linear_probe/top1')
    kept = workdir_layout.best_checkpoint(self.run_dir)
    reader = _local_reader(kept)  # whole: index and data read
    steps = [reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
             if n.endswith('step/.ATTRIBUTES/VARIABLE_VALUE')]
    self.assertIn(info['step'], [int(v) for v in steps])
    # Only the pointer and the copy it names are left in W/best.
    named = info['checkpoint'].split('/')[0]
    self.assertCountEqual(
        [n.rstrip('/') for n in tf.io.gfile.listdir(
            workdir_layout.best_dir(self.run_dir))],
        [workdir_layout.BEST_JSON, named])

  def test_export_best_to_gcs_and_hub_load_from_gcs(self):
    self.assertEqual(self.export['code'], 0, self.export['output'][-3000:])
    with tf.io.gfile.GFile(f'{self.export_dir}/assets/export_info.json') as f:
      info = json.load(f)
    self.assertEqual(info['checkpoint'],
                     workdir_layout.best_checkpoint(self.run_dir))
    # In a fresh process (see _local_reader).
    result = testing.run_python('\n'.join([
        'import json, numpy as np, tensorflow as tf, tensorflow_hub as hub',
        f'module = hub.load({self.export_dir!r})',
        "z = module.signatures['encode'](x=tf.zeros([2, 64, 64, 3]))"
        "['z_mean']",
        "images = module.signatures['generate'](z=z)['default'].numpy()",
        "print(json.dumps({'z': list(z.shape), 'images': list(images.shape),"
        " 'finite': bool(np.all(np.isfinite(images)))}))"]))
    self.assertEqual(result, {'z': [2, 16], 'images': [2, 32, 32, 3],
                              'finite': True})

  def test_tensorboard_events_on_gcs(self):
    steps = set()
    local = tempfile.mkdtemp()
    prefix = self.run_dir.split('/', 3)[3] + '/train/'
    blobs = [b for b in _bucket().list_blobs(prefix=prefix)
             if os.path.basename(b.name).startswith('events.out.')]
    self.assertNotEmpty(blobs)
    for blob in blobs:  # read locally, see _local_reader
      path = os.path.join(local, os.path.basename(blob.name))
      blob.download_to_filename(path)
      for event in tf.compat.v1.train.summary_iterator(path):
        if any(v.tag == 'd_loss' for v in event.summary.value):
          steps.add(event.step)
    # The killed run's flushed steps and the resumed run's, to the end.
    self.assertIn(1, steps)
    self.assertIn(self.final, steps)

  def test_403_on_checkpoint_writes_is_one_line_and_exit_2(self):
    reasons = {403: 'Permission denied'}
    for status, workdir in self.faults.items():
      with self.subTest(status=status):
        run = self.fault_runs[status]
        self.assertEqual(run['code'], 2, run['output'][-3000:])
        self.assertLen(run['errors'], 1, run['output'][-3000:])
        self.assertRegex(
            run['errors'][0],
            rf'^error: cannot write {workdir}/checkpoints.*: '
            rf'{reasons[status]}\. The last good checkpoint, '
            rf'{workdir}/checkpoints/ckpt-0, is kept\. .*re-run the same '
            r'command to resume\.$')
        self.assertNotIn('Traceback', run['output'])


if __name__ == '__main__':
  tf.test.main()
