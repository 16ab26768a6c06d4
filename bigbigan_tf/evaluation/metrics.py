"""Inception Score, FID and KID through TF-GAN, with an injectable classifier.

The distances are pure functions of classifier outputs (logits / pooled
features), computed by TF-GAN's `*_from_activations` functions in float64.
Images reach a classifier through `compute_activations`, so any classifier
function works: TF-GAN's Inception network (`load_inception`, the standard
for published IS / FID numbers), a small digit classifier
(`digit_classifier` here, offline) or a test stub.

A classifier function maps float32 images [B, H, W, 3] in [-1, 1] to a dict
of outputs, each [B, ...] (flattened to [B, D] here).
"""

import hashlib
import math
import os
import ssl
import threading
import time
from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple, Union
import urllib.error
import urllib.request

from absl import logging
import numpy as np
import tensorflow as tf

from bigbigan_tf import defaults
from bigbigan_tf import tfgan_compat

ArrayLike = Union[np.ndarray, tf.Tensor]
ClassifierFn = Callable[[tf.Tensor], Mapping[str, ArrayLike]]

# TF-GAN's Inception network (tfgan.eval.INCEPTION_TFHUB): the graph of the
# OpenAI Inception Score code, taking 299x299 images in [-1, 1]; its call
# returns {'logits': [N, 1008], 'pool_3': [N, 2048]}.
INCEPTION_HANDLE = defaults.INCEPTION_HANDLE
INCEPTION_IMAGE_SIZE = 299
LOGITS_KEY = 'logits'
POOL_KEY = 'pool_3'

# How long to wait for the TF Hub server (or proxy) to answer before declaring
# it unreachable. On offline machines whose firewall drops packets, hub.load
# (urllib without a timeout) would otherwise block for the OS connect timeout.
_PROBE_TIMEOUT_S = 10.0

_OBTAIN_INSTRUCTIONS = (
    'pass --inception=PATH to a local copy of TF-GAN\'s Inception SavedModel '
    '(or any directory with a callable SavedModel returning {{"logits", '
    '"pool_3"}}). To obtain one on a machine with internet access, either run\n'
    '  python -c "import tensorflow_hub as hub; '
    'print(hub.resolve(\'{handle}\'))"'
    '\nand copy the printed directory, or download\n'
    '  {handle}?tf-hub-format=compressed\n'
    'and unpack it with `mkdir inception && tar -xzf FILE -C inception`; then '
    'copy that directory (or put it on gs://) where this job can read it.')


class ClassifierUnavailableError(RuntimeError):
  """The classifier's weights could not be loaded (offline, or bad path)."""


def _tfgan():
  return tfgan_compat.import_tfgan()


def _as_2d_float64(values: ArrayLike, name: str) -> tf.Tensor:
  values = tf.convert_to_tensor(values)
  if values.shape.rank != 2:
    raise ValueError(
        f'{name} must be 2-D [num_examples, dim]; got shape {values.shape}.')
  return tf.cast(values, tf.float64)


def inception_score_splits(logits: ArrayLike, *,
                           num_splits: int = 10) -> np.ndarray:
  """Classifier score of each of `num_splits` contiguous splits of the logits.

  TF-GAN's `classifier_score_from_logits` computes exp(E_x KL(p(y|x) || p(y)))
  over all the logits it is given, without splitting; the standard Inception
  Score protocol (Salimans et al. 2016, OpenAI's code) computes it on 10
  splits (e.g. of 50K samples) and reports their mean and standard deviation.
  This function does the splitting (np.array_split: contiguous, sizes differ
  by at most one) and calls TF-GAN on each split.

  Args:
    logits: [N, num_classes] classifier logits (TF-GAN's Inception: [N, 1008]).
    num_splits: number of splits, 1 <= num_splits <= N.

  Returns:
    float64 [num_splits] scores, each in [1, num_classes].

  Raises:
    ValueError: if logits are not 2-D or num_splits is out of range.
  """
  logits = _as_2d_float64(logits, 'logits').numpy()
  if not 1 <= num_splits <= len(logits):
    raise ValueError(
        f'num_splits must be in [1, {len(logits)}] (the number of logits); got '
        f'{num_splits}. Use more examples or fewer splits.')
  score_fn = _tfgan().eval.classifier_score_from_logits
  return np.array([
      float(score_fn(tf.constant(split)))
      for split in np.array_split(logits, num_splits)
  ])


def _check_pair(real: ArrayLike,
                fake: ArrayLike) -> Tuple[tf.Tensor, tf.Tensor]:
  real = _as_2d_float64(real, 'real_activations')
  fake = _as_2d_float64(fake, 'fake_activations')
  if real.shape[1] != fake.shape[1]:
    raise ValueError(
        f'real and fake activations must have the same dimension; got '
        f'{real.shape} and {fake.shape}. Use the same classifier output key.')
  if real.shape[0] < 2 or fake.shape[0] < 2:
    raise ValueError(
        f'Need at least 2 examples per set; got {real.shape[0]} real and '
        f'{fake.shape[0]} fake.')
  return real, fake


def frechet_distance(real_activations: ArrayLike,
                     fake_activations: ArrayLike) -> float:
  """Frechet distance between Gaussians fitted to two sets of activations.

  ||mu_r - mu_f||^2 + Tr(C_r + C_f - 2 (C_r C_f)^(1/2)), computed in float64 by
  TF-GAN's `frechet_classifier_distance_from_activations` (unbiased
  covariances). With Inception `pool_3` features this is FID. It is biased
  upwards for small N: compare numbers computed with the same N.

  Args:
    real_activations: [N_r, D] features of real images.
    fake_activations: [N_f, D] features of generated images.

  Returns:
    The distance, >= 0 (up to round-off).

  Raises:
    ValueError: if the arrays are not 2-D, differ in D, or have < 2 rows.
  """
  real, fake = _check_pair(real_activations, fake_activations)
  return float(
      _tfgan().eval.frechet_classifier_distance_from_activations(real, fake))


def kernel_distance(real_activations: ArrayLike, fake_activations: ArrayLike,
                    *, max_block_size: int = 1024) -> float:
  """Kernel distance (KID, Binkowski et al. 2018) between two activation sets.

  Unbiased MMD^2 with the kernel k(x, y) = (x.y / D + 1)^3, computed in
  float64 by TF-GAN's `kernel_classifier_distance_from_activations`, which
  averages the estimate over blocks of at most `max_block_size` examples
  (TF-GAN assumes both sets are in random order).

  Args:
    real_activations: [N_r, D] features of real images.
    fake_activations: [N_f, D] features of generated images.
    max_block_size: the largest block TF-GAN's estimator uses.

  Returns:
    The distance; unbiased, so it can be slightly negative for equal
    distributions.

  Raises:
    ValueError: if the arrays are not 2-D, differ in D, or have < 2 rows.
  """
  real, fake = _check_pair(real_activations, fake_activations)
  return float(_tfgan().eval.kernel_classifier_distance_from_activations(
      real, fake, max_block_size=max_block_size, dtype=tf.float64))


def _unavailable(location: str, reason: str) -> ClassifierUnavailableError:
  return ClassifierUnavailableError(
      f'Inception weights could not be loaded from {location} ({reason}); '
      + _OBTAIN_INSTRUCTIONS.format(handle=INCEPTION_HANDLE))


def _hub_cached_dir(handle: str) -> Optional[str]:
  """Returns TF Hub's cache directory of `handle` if filled, else None."""
  try:
    # tensorflow_hub caches a downloaded module under sha1(handle); reading
    # the same location lets a cached module load without any network.
    from tensorflow_hub import resolver  # pylint: disable=g-import-not-at-top
    cache_dir = resolver.tfhub_cache_dir(use_temp=True)
  except Exception:  # pylint: disable=broad-except
    return None  # Unknown hub internals: fall back to the network check.
  module_dir = os.path.join(cache_dir,
                            hashlib.sha1(handle.encode('utf8')).hexdigest())
  if tf.io.gfile.isdir(module_dir) and tf.io.gfile.listdir(module_dir):
    return module_dir
  return None


def _probe(url: str, timeout_s: float) -> Optional[str]:
  """Returns None if `url` answers an HTTP HEAD within timeout_s, else a reason.

  urllib honours the proxy settings, as hub.load does. The request runs in a
  daemon thread because name resolution (getaddrinfo) ignores socket
  timeouts and can itself block for long.
  """
  result = {}

  def probe():
    request = urllib.request.Request(url, method='HEAD')
    try:
      urllib.request.urlopen(request, timeout=timeout_s).close()
      result['error'] = None
    except urllib.error.HTTPError:
      result['error'] = None  # The server answered; hub.load reports details.
    except (OSError, ValueError) as e:  # URLError, timeouts, bad URLs.
      reason = getattr(e, 'reason', e)
      # A TLS error means something answered; hub.load may still succeed
      # (TFHUB_DISABLE_CERT_VALIDATION) and otherwise fails fast by itself.
      result['error'] = (None if isinstance(reason, ssl.SSLError) else
                         f'unreachable: {reason}')

  thread = threading.Thread(target=probe, daemon=True)
  thread.start()
  thread.join(timeout_s)
  if 'error' not in result:
    return f'no answer within {timeout_s:g} s'
  return result['error']


def _load_module(handle_or_path: str):
  """Loads the SavedModel behind a TF Hub handle or a local / gs:// path."""
  if handle_or_path.startswith(('http://', 'https://')):
    hub = tfgan_compat.import_dependency('tensorflow_hub')
    if _hub_cached_dir(handle_or_path) is None:
      reason = _probe(handle_or_path, _PROBE_TIMEOUT_S)
      if reason is not None:
        raise _unavailable(handle_or_path, reason)
    try:
      return hub.load(handle_or_path)
    except Exception as e:  # pylint: disable=broad-except
      # Download / HTTP / unpacking errors: report them in one line rather
      # than as a network stack trace.
      raise _unavailable(handle_or_path, f'{type(e).__name__}: {e}') from None

  path = handle_or_path
  if not tf.io.gfile.exists(path):
    raise _unavailable(path, 'no such file or directory')
  if not tf.io.gfile.isdir(path):
    raise _unavailable(
        path, 'not a directory; if it is the downloaded .tar.gz, unpack it '
        'first')
  if not tf.io.gfile.exists(os.path.join(path, 'saved_model.pb')):
    raise _unavailable(path, 'the directory holds no saved_model.pb')
  # TF1 Hub-format modules are saved with no tags; TF2 SavedModels with
  # 'serve'. hub.load makes the same distinction.
  is_hub_v1 = tf.io.gfile.exists(os.path.join(path, 'tfhub_module.pb'))
  try:
    return tf.saved_model.load(path, tags=[] if is_hub_v1 else None)
  except Exception as e:  # pylint: disable=broad-except
    raise _unavailable(path, f'{type(e).__name__}: {e}') from None


def _module_call(module) -> Callable[[tf.Tensor], Mapping[str, tf.Tensor]]:
  """Returns the module's image -> outputs function."""
  if callable(module):
    # TF-GAN's module is a TF2 SavedModel whose __call__ takes the images
    # (TF-GAN's classifier_fn_from_tfhub calls `hub.load(handle)(images)`).
    return module
  signatures = getattr(module, 'signatures', {})
  if 'default' not in signatures:
    raise ValueError(
        'The loaded SavedModel is not callable and has no "default" signature '
        f'(signatures: {sorted(signatures)}); pass TF-GAN\'s Inception module.')
  signature = signatures['default']
  input_names = list(signature.structured_input_signature[1])
  if len(input_names) != 1:
    raise ValueError(f'The "default" signature takes inputs {input_names}; '
                     'expected a single image input.')
  return lambda images: signature(**{input_names[0]: images})


def load_inception(handle_or_path: str = INCEPTION_HANDLE) -> ClassifierFn:
  """Loads TF-GAN's Inception network as a classifier function.

  A handle starting with http(s):// is loaded with `hub.load` (from TF Hub's
  cache if it was downloaded before, else from the network); anything else is
  a local or gs:// SavedModel directory loaded with `tf.saved_model.load`.
  Without network access the call fails within ~10 s: an HTTP HEAD probe with
  a timeout runs before `hub.load`, which has none and would otherwise wait
  for the OS connect timeout on networks that drop packets.

  Args:
    handle_or_path: TF Hub handle (default: TF-GAN's Inception) or directory
      of the unpacked SavedModel.

  Returns:
    fn(images) -> {'logits': [N, 1008], 'pool_3': [N, 2048]} (float32
    tensors), where images are float [N, H, W, 3] in [-1, 1] of any size;
    they are resized to 299x299 (bilinear) inside, as TF-GAN's examples do.

  Raises:
    ClassifierUnavailableError: if the weights cannot be loaded (no network,
      missing path, not a SavedModel). The message says how to get a copy.
    ValueError: if the SavedModel is neither callable nor has a 'default'
      signature with one input, or (at the first call) lacks the 'logits' or
      'pool_3' output.
  """
  module = _load_module(handle_or_path)
  call = _module_call(module)

  @tf.function(
      input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
  def classify(images):
    resized = tf.image.resize(
        images, [INCEPTION_IMAGE_SIZE, INCEPTION_IMAGE_SIZE],
        method=tf.image.ResizeMethod.BILINEAR)
    outputs = call(resized)
    missing = {LOGITS_KEY, POOL_KEY} - set(outputs)
    if missing:
      raise ValueError(
          f'The classifier at {handle_or_path} returned outputs '
          f'{sorted(outputs)}, lacking {sorted(missing)}; pass TF-GAN\'s '
          'Inception module.')
    batch = tf.shape(images)[0]
    return {key: tf.reshape(tf.cast(outputs[key], tf.float32), [batch, -1])
            for key in (LOGITS_KEY, POOL_KEY)}

  def classifier_fn(images: ArrayLike) -> Dict[str, tf.Tensor]:
    return classify(tf.cast(images, tf.float32))

  # A restored function's variables live only as long as the loaded object.
  classifier_fn.module = module
  return classifier_fn


def compute_activations(images_iter: Iterable[ArrayLike],
                        classifier_fn: ClassifierFn, *, num_examples: int,
                        progress: bool = True) -> Dict[str, np.ndarray]:
  """Runs a classifier over batches of images and concatenates its outputs.

  Args:
    images_iter: iterable of float [B, H, W, 3] batches in [-1, 1] (NumPy
      arrays, tensors, or a tf.data.Dataset of such batches). It must yield at
      least `num_examples` images; the last batch used is truncated.
    classifier_fn: fn(float32 [B, H, W, 3]) -> dict of [B, ...] outputs.
    num_examples: number of images to classify, >= 1.
    progress: show a progress bar (tqdm if installed, else a log line per
      ~10%).

  Returns:
    {output key: float32 [num_examples, D]} (each output flattened).

  Raises:
    ValueError: if num_examples < 1, the iterator runs out early, or the
      classifier does not return a dict.
  """
  if num_examples < 1:
    raise ValueError(f'num_examples must be >= 1; got {num_examples}.')
  chunks: Dict[str, list] = {}
  collected = 0
  bar = _progress_bar(num_examples) if progress else None
  next_log = 0.1
  start = time.time()
  for batch in images_iter:
    batch = tf.cast(batch, tf.float32)[:num_examples - collected]
    outputs = classifier_fn(batch)
    if not isinstance(outputs, Mapping):
      raise ValueError(
          f'classifier_fn must return a dict of outputs; got {type(outputs)}.')
    size = int(batch.shape[0])
    for key, value in outputs.items():
      chunks.setdefault(key, []).append(
          np.asarray(value, dtype=np.float32).reshape(size, -1))
    collected += size
    if bar is not None:
      bar.update(size)
    elif progress and collected >= next_log * num_examples:
      logging.info('Classified %d / %d images (%.0f s).', collected,
                   num_examples, time.time() - start)
      next_log = math.floor(collected / num_examples * 10 + 1) / 10
    if collected >= num_examples:
      break
  if bar is not None:
    bar.close()
  if collected < num_examples:
    raise ValueError(
        f'images_iter ran out after {collected} of num_examples={num_examples}'
        ' images; pass a longer (e.g. repeated) iterator or lower '
        'num_examples.')
  return {key: np.concatenate(values) for key, values in chunks.items()}


def _progress_bar(total: int):
  try:
    import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return tqdm.tqdm(total=total, unit='img', desc='classifier', leave=False)
