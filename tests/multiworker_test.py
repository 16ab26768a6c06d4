"""Two MultiWorkerMirroredStrategy workers on loopback: chief-only writes.

Two processes with TF_CONFIG (ports on 127.0.0.1) train the tiny config 4
steps, then resume for a long loop that a SIGTERM to the second worker alone
stops, as `train.py --strategy=multi_worker` does (a small driver calls the
same functions, then reports a checksum of its variables in a file outside
the workdir, to compare the workers' weights). The chief holds the workdir's
lease; the other worker takes none, so it does not refuse its own chief, but
waits for the chief's verdict before it touches the workdir.
"""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from unittest import mock

import pytest
import tensorflow as tf

from bigbigan_tf import lease
import testing

_DRIVER = r'''
import json, sys
from absl import logging
import numpy as np
from bigbigan_tf import distribute, train_lib
from bigbigan_tf.configs import tiny

logging.set_verbosity(logging.INFO)
workdir, steps, report = sys.argv[1], int(sys.argv[2]), sys.argv[3]
strategy = distribute.make_strategy(kind='multi_worker')  # as train.py
config = tiny.get_config()
with config.unlocked():
  config.num_train_steps = steps
  for field in ('steps_per_loop', 'checkpoint_every', 'grid_every',
                'log_every'):
    # One loop call up to the next 1000 or the end: 4 steps, then one a
    # signal must cut short.
    config.train[field] = 1000
result = train_lib.train_and_evaluate(config, workdir, strategy=strategy)
state = result['state']
sums = {}
for group in ('g_vars', 'e_vars', 'd_vars'):
  for v in getattr(state, group):
    sums[f'{group}/{v.path}'] = float(np.sum(np.asarray(v.numpy(),
                                                        np.float64)))
with open(report, 'w') as f:
  json.dump({'step': int(state.step.numpy()), 'chief':
             distribute.is_chief(strategy), 'sums': sums,
             'stopped_by': result['stopped_by']}, f)
'''


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


@pytest.mark.slow
class MultiWorkerTest(tf.test.TestCase):

  def _run_workers(self, workdir, steps, reports_dir, sigterm_worker=None):
    """Runs both workers; SIGTERM to one once its loop runs, if asked."""
    workers = [f'127.0.0.1:{p}' for p in _free_ports(2)]
    procs = []
    for index in range(2):
      env = dict(os.environ, PYTHONPATH=testing.REPO, TF_CPP_MIN_LOG_LEVEL='2',
                 TF_CONFIG=json.dumps({'cluster': {'worker': workers},
                                       'task': {'type': 'worker',
                                                'index': index}}))
      report = os.path.join(reports_dir, f'worker{index}_{steps}.json')
      procs.append((report, subprocess.Popen(
          [sys.executable, '-c', _DRIVER, workdir, str(steps), report],
          cwd=testing.REPO, env=env, stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT, text=True)))
    outputs = [[] for _ in procs]
    readers = [threading.Thread(target=lambda p, o: o.extend(p.stdout),
                                args=(proc, out), daemon=True)
               for (_, proc), out in zip(procs, outputs)]
    for reader in readers:
      reader.start()
    reports = []
    try:
      if sigterm_worker is not None:
        proc, lines = procs[sigterm_worker][1], outputs[sigterm_worker]
        deadline = time.time() + 900
        while not any('compiled and running' in line for line in lines):
          self.assertIsNone(proc.poll(), ''.join(lines)[-4000:])
          self.assertLess(time.time(), deadline)
          time.sleep(0.1)
        time.sleep(1)  # some steps into the long loop call
        proc.send_signal(signal.SIGTERM)
      for ((report, proc), reader, lines) in zip(procs, readers, outputs):
        proc.wait(timeout=900)
        reader.join(timeout=30)
        self.assertEqual(proc.returncode, 0, ''.join(lines)[-4000:])
        with open(report) as f:
          reports.append(json.load(f))
    finally:
      for _, proc in procs:  # One failed: the other would wait for it.
        if proc.poll() is None:
          proc.kill()
          proc.communicate()
    return reports

  def test_chief_writes_alone_and_workers_stay_equal(self):
    workdir = self.create_tempdir().full_path
    reports_dir = tempfile.mkdtemp()  # Outside the workdir.
    stop_step = None
    for steps in (4, 100000):
      reports = self._run_workers(
          workdir, steps, reports_dir,
          sigterm_worker=None if steps == 4 else 1)
      chief, other = reports
      self.assertTrue(chief['chief'])
      self.assertFalse(other['chief'])
      if steps == 4:
        self.assertEqual(chief['step'], steps)
        self.assertIsNone(chief['stopped_by'])
      else:
        # The signal reached worker 1 only; the all-reduced stop flag
        # stopped the chief at the same step, and both saved it.
        stop_step = chief['step']
        self.assertGreater(stop_step, 4)
        self.assertLess(stop_step, 1000)
        self.assertEqual(chief['stopped_by'], 'SIGTERM')
        self.assertEqual(other['stopped_by'], 'SIGTERM')
      self.assertEqual(other['step'], chief['step'])
      # Gradients are all-reduced: the same update on both workers.
      self.assertEqual(sorted(chief['sums']), sorted(other['sums']))
      self.assertGreater(len(chief['sums']), 50)
      for name, value in chief['sums'].items():
        self.assertEqual(value, other['sums'][name], msg=name)
      events = glob.glob(os.path.join(workdir, 'train', 'events.out.*'))
      self.assertLen(events, 1 if steps == 4 else 2)  # One per run.
      # The chief alone appended to hardware.json: one entry per run.
      with open(os.path.join(workdir, 'hardware.json')) as f:
        self.assertLen(json.load(f)['runs'], 1 if steps == 4 else 2)

    self.assertEqual(sorted(os.listdir(workdir)),
                     ['checkpoints', 'config.json', 'grids', 'hardware.json',
                      'lease.json', 'train'])
    self.assertFalse(glob.glob(os.path.join(workdir, '**', 'workertemp_*'),
                               recursive=True))
    names = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
    self.assertEqual(names, sorted(['checkpoint'] + [
        f'ckpt-{s}.{ext}' for s in (0, 4, stop_step)
        for ext in ('data-00000-of-00001', 'index')]))
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'grids'))),
                     [f'{k}_{s:08d}.png' for k in ('reconstructions',
                                                   'samples')
                      for s in (4,)])
    reader = tf.train.load_checkpoint(os.path.join(workdir, 'checkpoints',
                                                   f'ckpt-{stop_step}'))
    self.assertEqual(int(reader.get_tensor('step/.ATTRIBUTES/VARIABLE_VALUE')),
                     stop_step)


  def test_a_refused_chief_stops_its_workers_before_they_touch_the_workdir(
      self):
    workdir = self.create_tempdir().full_path
    # What a live run's second worker may be saving into right now.
    live = os.path.join(workdir, 'workertemp_1', 'checkpoints')
    os.makedirs(live)
    workers = [f'127.0.0.1:{p}' for p in _free_ports(2)]
    with lease.hold(workdir, mode='lock') as holder:  # the live run
      runs = []
      for index in range(2):
        tf_config = json.dumps({'cluster': {'worker': workers},
                                'task': {'type': 'worker', 'index': index}})
        with mock.patch.dict(os.environ, {'TF_CONFIG': tf_config}):
          runs.append(testing.train_process(workdir, '--strategy=multi_worker',
                                            *testing.LONG_LOOP))
      codes = [run.wait(timeout=600) for run in runs]
    self.assertEqual(codes, [2, 2], [r.output()[-3000:] for r in runs])
    chief, other = [run.error_lines() for run in runs]
    self.assertLen(chief, 1)
    self.assertRegex(chief[0], rf'^error: --workdir={workdir} is in use by '
                     rf'another training run \(pid {holder.info["pid"]} ')
    self.assertEqual(other, [
        'error: the chief of this multi-worker run could not hold --workdir='
        f'{workdir} (its log says why); this worker wrote nothing.\n'])
    self.assertTrue(os.path.isdir(live))
    self.assertEqual(sorted(os.listdir(workdir)), ['lease.json',
                                                   'workertemp_1'])


if __name__ == '__main__':
  tf.test.main()
