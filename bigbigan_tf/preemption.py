"""SIGTERM / SIGINT at any moment of a run (docs/scaling.md).

During set-up (building, restoring, the step-0 save) `answer_during_set_up`'s
handler raises `SetUpInterrupted` in the main thread: whatever was being
written is abandoned through its cleanup (atomic writes remove their
temporary file; a cut-short checkpoint save leaves ckpt-STEP_temp/, which the
next run removes), and train.py exits 128 + the signal. Once the loop runs,
`StopSignal` takes over: the signal is answered inside a loop call, after a
checkpoint.

TensorFlow and Keras are imported where used: train.py installs the set-up
handler before it loads them.
"""

import signal
import threading
import time


class SetUpInterrupted(BaseException):
  """SIGTERM / SIGINT before the training loop started.

  A BaseException, like KeyboardInterrupt, so that no `except Exception`
  on the way swallows it.
  """

  def __init__(self, name: str):
    super().__init__(name)
    self.signal_name = name


def answer_during_set_up() -> None:
  """Makes SIGTERM / SIGINT raise SetUpInterrupted in the main thread.

  The first signal raises; later ones are ignored, so the cleanup the first
  one triggers (removing a temporary file) is not cut short in turn.
  """
  raised = []

  def handle(signum, frame):
    del frame
    if not raised:
      raised.append(signum)
      raise SetUpInterrupted(signal.Signals(signum).name)

  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, handle)


class StopSignal:
  """Turns SIGTERM / SIGINT into a stop request the compiled loop reads.

  Python runs signal handlers in the main thread only, between bytecodes:
  never while that thread is inside a tf.function call. So `call` runs the
  loop call in a worker thread and waits for it in short, interruptible
  waits; on a signal it sets the trainer's `stop_requested` variable, which
  the loop checks before each iteration (it ends after the current step).
  """

  POLL_S = 0.2

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.received is None:
      self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def call(self, trainer, iterator, n, *, unsaved_steps, on_first_step=None):
    """Runs `trainer.train_loop(iterator, n)`; answers signals meanwhile.

    Args:
      trainer: the Trainer.
      iterator: the data iterator.
      n: iterations to run (fewer if a stop is requested).
      unsaved_steps: steps done since the last checkpoint before this call.
      on_first_step: called (in the main thread) once the call has finished
        its first iteration, with the seconds since the call began.

    Returns:
      The loop's outputs as Python values, or None when a signal arrived and
      no step was done since the last checkpoint (e.g. the loop was still
      being traced or compiled): nothing new to save, so the call is left
      running in its (daemon) thread and the caller must exit the process.
    """
    import keras  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if self.received is not None:
      trainer.stop_requested.assign(True)
    trainer.steps_in_call.assign(0)
    policy = keras.config.dtype_policy()
    result = {}

    def run():
      # Keras keeps its global state per thread.
      keras.config.set_dtype_policy(policy)
      try:
        out = trainer.train_loop(iterator, tf.constant(n, tf.int32))
        result['out'] = {k: v.numpy() for k, v in out.items()}
      except BaseException as e:  # pylint: disable=broad-except
        result['error'] = e

    thread = threading.Thread(target=run, name='train_loop', daemon=True)
    start = time.time()
    thread.start()
    first_step_seen = False
    while thread.is_alive():
      thread.join(self.POLL_S)
      ran = int(trainer.steps_in_call.numpy())
      if ran and not first_step_seen:
        first_step_seen = True
        if on_first_step is not None:
          on_first_step(time.time() - start)
      if self.received is not None and thread.is_alive():
        if unsaved_steps + ran == 0:
          return None
        trainer.stop_requested.assign(True)
    if 'error' in result:
      raise result['error']
    out = result['out']
    return {k: (int(v) if k == 'steps_run' else
                bool(v) if k == 'stopped' else float(v))
            for k, v in out.items()}
