"""The 'folder:PATH' source: image files under a local or gs:// folder.

Lists the files (labels from the top-level subfolders), decodes them with
Pillow to RGB, skips unreadable files and reports them in the log.
"""

from __future__ import annotations

import io
import os
import threading

from absl import logging
import numpy as np
import PIL.Image
import tensorflow as tf

from bigbigan_tf.data.common import DataError, Source

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')

# How many corrupt files a folder's skip report names.
_MAX_EXAMPLE_PATHS = 3

# Design. Files are listed once, in Python, and decoded inside tf.data by a
# `tf.numpy_function` that runs Pillow and returns (valid, image); a `filter`
# then drops the invalid ones. Pillow rather than `tf.io.decode_image`
# because (1) a tf.data op that raises cannot be caught per element: the only
# in-graph option, `ignore_errors`, drops failures silently, so they could not
# be counted or named; (2) Pillow handles palette and transparency, 16-bit
# and CMYK images, which are converted to RGB the same way for every format.
# Speed: Pillow releases the GIL while it decodes, so the AUTOTUNE-parallel
# map decodes on several cores; eval decodes JPEGs at reduced scale (`draft`)
# when they are much larger than the output. Listing does not stat files that
# carry an image extension, which matters on gs:// where each stat is a
# request.


def folder_source(path: str, *, training: bool, seed: int,
                   input_context: tf.distribute.InputContext | None,
                   min_decode_size: int) -> Source:
  """Examples from the image files under `path`; see `make_dataset`."""
  root = path.rstrip('/') or '/'
  if not tf.io.gfile.isdir(root):
    what = ('is a file, not a folder' if tf.io.gfile.exists(root)
            else 'does not exist')
    raise DataError(f'data.name=folder:{path}: {root} {what}. Point it at a '
                    'folder of images (class subfolders optional).')
  paths, labels = _list_image_files(root)
  if not paths:
    raise DataError(
        f'data.name=folder:{path}: no image files under {root} (searched '
        f'recursively for {", ".join(IMAGE_EXTENSIONS)}, any case).')
  _check_one_readable(root, paths)

  if input_context and input_context.num_input_pipelines > 1:
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    paths, labels = paths[i::n], labels[i::n]
  if training:
    # Listing order groups classes; a full permutation up front lets the
    # (bounded) shuffle buffer start from well-mixed files.
    order = np.random.RandomState(seed).permutation(len(paths))
    paths, labels = [paths[j] for j in order], [labels[j] for j in order]
  report = _SkipReport(root, num_files=len(paths))

  def load(index: np.int64, file_path: bytes) -> tuple[np.bool_, np.ndarray]:
    name = file_path.decode('utf-8')
    try:
      image = _read_rgb(name, min_size=min_decode_size)
    except Exception as e:  # pylint: disable=broad-except
      # Any failure to read or decode means "skip this file".
      report.record(int(index), name, e)
      return np.bool_(False), np.zeros((1, 1, 3), np.uint8)
    report.record(int(index), name, None)
    return np.bool_(True), image

  def decode(raw):
    index, file_path = raw
    valid, image = tf.numpy_function(
        load, [index, file_path], [tf.bool, tf.uint8], stateful=False)
    valid.set_shape([])
    image.set_shape([None, None, 3])
    return valid, image

  ds = tf.data.Dataset.from_tensor_slices(
      ((np.arange(len(paths), dtype=np.int64), np.array(paths, dtype=object)),
       np.array(labels, np.int32)))
  return Source(ds, decode, may_fail=True, sharded=True)


def _list_image_files(root: str) -> tuple[list[str], list[int]]:
  """Image paths under `root` (sorted) and their labels.

  Labels index the top-level subfolders (sorted by name) that hold images;
  if there are none, every label is 0. Images lying directly in `root` next to
  class subfolders get label -1. Hidden files and folders are skipped.
  """
  found = []  # (top-level subfolder or '', path)
  pending = [(root, '')]
  while pending:
    folder, top_level = pending.pop()
    for item in tf.io.gfile.listdir(folder):
      name = item.rstrip('/')
      if not name or name.startswith('.'):
        continue
      full = f'{folder}/{name}' if folder != '/' else f'/{name}'
      is_image = os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
      if item.endswith('/') or (not is_image and tf.io.gfile.isdir(full)):
        pending.append((full, top_level or name))
      elif is_image:
        found.append((top_level, full))
  found.sort(key=lambda entry: entry[1])
  classes = sorted({top for top, _ in found if top})
  if not classes:
    return [p for _, p in found], [0] * len(found)
  index = {name: i for i, name in enumerate(classes)}
  loose = [p for top, p in found if not top]
  if loose:
    logging.warning('%d image(s) lie directly in %s, outside the class '
                    'subfolders; they get label -1 (e.g. %s).', len(loose),
                    root, loose[0])
  logging.info('Found %d image files in %d class folders under %s.',
               len(found), len(classes), root)
  return [p for _, p in found], [index.get(top, -1) for top, _ in found]


def _check_one_readable(root: str, paths: list[str]) -> None:
  """Fails now, rather than looping forever later, if nothing decodes."""
  errors = []
  for path in paths:
    try:
      _read_rgb(path, min_size=0)
      return
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f'{path}: {type(e).__name__}: {e}')
  raise DataError(
      f'None of the {len(paths)} image files under {root} could be read or '
      f'decoded, e.g. {"; ".join(errors[:_MAX_EXAMPLE_PATHS])}. Check the '
      'files (and read permissions).')


def _read_rgb(path: str, *, min_size: int) -> np.ndarray:
  """Reads and decodes an image file to uint8 [H, W, 3] RGB.

  Args:
    path: local or gs:// path.
    min_size: if > 0, JPEGs may be decoded at a reduced scale as long as both
      sides stay >= min_size (much faster for large photos).

  Returns:
    The first frame of the image as RGB; transparency composited over white.

  Raises:
    Exception: whatever reading or decoding raises (OSError for truncated or
      unrecognised files, etc.).
  """
  with tf.io.gfile.GFile(path, 'rb') as f:
    encoded = f.read()
  with PIL.Image.open(io.BytesIO(encoded)) as image:
    if min_size:
      image.draft('RGB', (min_size, min_size))
    image.load()  # Decodes now, so truncated files fail here.
    return _pil_to_rgb(image)


def _pil_to_rgb(image: PIL.Image.Image) -> np.ndarray:
  if image.mode in ('I', 'I;16', 'I;16B', 'I;16L'):
    # 16-bit grayscale: scale 0..65535 to 0..255 instead of clipping.
    grey = np.asarray(image, dtype=np.float64) / 257.0
    grey = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  if image.mode in ('RGBA', 'RGBa', 'LA', 'La', 'PA') or (
      'transparency' in image.info):
    rgba = image.convert('RGBA')
    white = PIL.Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    image = PIL.Image.alpha_composite(white, rgba)
  return np.ascontiguousarray(np.asarray(image.convert('RGB'), np.uint8))


class _SkipReport:
  """Counts the files of one folder pipeline that fail to decode, and logs it.

  Each file is recorded on its first decode. The first failure is logged at
  once (short runs may never finish a pass); once every file has been tried,
  one warning gives the count and a few example paths. Later epochs skip the
  same files silently. Thread-safe: tf.data calls `record` from many threads.
  """

  def __init__(self, root: str, *, num_files: int):
    self._root = root
    self._num_files = num_files
    self._lock = threading.Lock()
    self._seen = np.zeros(num_files, bool)
    self._num_seen = 0
    self._failures: list[str] = []
    self._num_failed = 0

  def record(self, index: int, path: str, error: Exception | None) -> None:
    with self._lock:
      if self._seen[index]:
        return
      self._seen[index] = True
      self._num_seen += 1
      if error is not None:
        self._num_failed += 1
        if len(self._failures) < _MAX_EXAMPLE_PATHS:
          self._failures.append(f'{path} ({type(error).__name__}: {error})')
        if self._num_failed == 1:
          logging.warning(
              'Skipping unreadable image file %s (%s: %s); a count of all '
              'skipped files follows after one pass over %s.', path,
              type(error).__name__, error, self._root)
      if self._num_seen == self._num_files and self._num_failed:
        logging.warning(
            'Skipped %d of %d image files under %s that could not be read or '
            'decoded, e.g. %s. The pipeline goes on without them.',
            self._num_failed, self._num_files, self._root,
            '; '.join(self._failures))
