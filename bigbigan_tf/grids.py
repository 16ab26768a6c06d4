"""PNG grids of samples and reconstructions, written through `tf.io.gfile`.

Used by training (sample grids every few steps) and by `eval/`
(reconstruction grids laid out as in the paper's figures).
"""

import io
import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from bigbigan_tf import files

# Colour of the padding lines and of blank cells: white separates the cells of
# both dark (digits) and natural images clearly.
_DEFAULT_PAD_VALUE = 255


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Maps images from [-1, 1] to uint8 [0, 255], clipping values outside.

  Args:
    images: float array of any shape, values nominally in [-1, 1].

  Returns:
    uint8 array of the same shape: -1 -> 0, 1 -> 255, rounded to nearest.
  """
  images = np.clip(np.asarray(images, dtype=np.float32), -1.0, 1.0)
  return np.round((images + 1.0) * 127.5).astype(np.uint8)


def _check_images(images: np.ndarray, name: str) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(
        f'{name} must have shape [N, H, W, 3] (RGB in [-1, 1]), got shape '
        f'{images.shape}. Expand grayscale images to 3 channels first.')
  return images


def _grid_from_cells(cells: Sequence[Optional[np.ndarray]], *, rows: int,
                     cols: int, cell_shape: Sequence[int], padding: int,
                     pad_value: int) -> np.ndarray:
  """Lays out uint8 [H, W, 3] cells row-major; None cells stay blank."""
  height, width = cell_shape[0], cell_shape[1]
  grid = np.full(
      (rows * height + (rows + 1) * padding,
       cols * width + (cols + 1) * padding, 3),
      pad_value, dtype=np.uint8)
  for index, cell in enumerate(cells):
    if cell is None:
      continue
    row, col = divmod(index, cols)
    top = padding + row * (height + padding)
    left = padding + col * (width + padding)
    grid[top:top + height, left:left + width] = cell
  return grid


def image_grid(images: np.ndarray, *, rows: int, cols: int, padding: int = 2,
               pad_value: int = _DEFAULT_PAD_VALUE) -> np.ndarray:
  """Tiles images into one uint8 RGB grid, row-major.

  Every cell is surrounded by `padding` pixels of `pad_value`, borders
  included, so cell (r, c) starts at row `padding + r * (H + padding)` and
  column `padding + c * (W + padding)`.

  Args:
    images: float [N, H, W, 3] in [-1, 1] (values outside are clipped), with
      N <= rows * cols. Image i goes to row i // cols, column i % cols.
    rows: number of grid rows, >= 1.
    cols: number of grid columns, >= 1.
    padding: pixels between cells and around the border, >= 0.
    pad_value: uint8 grey level of the padding and of blank cells (cells past
      the last image).

  Returns:
    uint8 [rows * H + (rows + 1) * padding, cols * W + (cols + 1) * padding, 3].

  Raises:
    ValueError: if the images are not [N, H, W, 3], if N > rows * cols, or if
      rows, cols or padding are out of range.
  """
  images = _check_images(images, 'images')
  if rows < 1 or cols < 1 or padding < 0:
    raise ValueError(f'Need rows >= 1, cols >= 1 and padding >= 0; got '
                     f'rows={rows}, cols={cols}, padding={padding}.')
  if len(images) > rows * cols:
    raise ValueError(
        f'{len(images)} images do not fit a {rows}x{cols} grid; pass at most '
        f'{rows * cols} images or a larger grid.')
  return _grid_from_cells(
      list(to_uint8(images)), rows=rows, cols=cols,
      cell_shape=images.shape[1:3], padding=padding, pad_value=pad_value)


def reconstruction_grid(real: np.ndarray, recon: np.ndarray, *, cols: int,
                        padding: int = 2,
                        pad_value: int = _DEFAULT_PAD_VALUE) -> np.ndarray:
  """Lays out real images and their reconstructions G(E(x)) as in the paper.

  Rows alternate: a row of `cols` real images, directly below it the row of
  their reconstructions, then the next row of real images, and so on. The
  last pair of rows is padded with blank cells when N is not a multiple of
  `cols`.

  Args:
    real: float [N, H, W, 3] in [-1, 1], the inputs x.
    recon: float [N, H, W, 3] in [-1, 1], recon[i] = G(E(real[i])).
    cols: images per row, >= 1.
    padding: pixels between cells and around the border, >= 0.
    pad_value: uint8 grey level of the padding and of blank cells.

  Returns:
    uint8 [2 * ceil(N / cols) * H + pads, cols * W + pads, 3] (see
    `image_grid` for the padding arithmetic).

  Raises:
    ValueError: if the shapes differ, are not [N, H, W, 3], N is 0 or
      cols < 1.
  """
  real = _check_images(real, 'real')
  recon = _check_images(recon, 'recon')
  if real.shape != recon.shape:
    raise ValueError(
        f'real and recon must have the same shape; got {real.shape} and '
        f'{recon.shape}. Resize the reconstructions to the input resolution '
        f'first.')
  if cols < 1 or not len(real):
    raise ValueError(f'Need cols >= 1 and at least one image; got cols={cols}'
                     f', {len(real)} images.')
  pair_rows = math.ceil(len(real) / cols)
  real_cells, recon_cells = list(to_uint8(real)), list(to_uint8(recon))
  cells = []
  for row in range(pair_rows):
    for source in (real_cells, recon_cells):
      chunk = source[row * cols:(row + 1) * cols]
      cells.extend(chunk + [None] * (cols - len(chunk)))
  return _grid_from_cells(
      cells, rows=2 * pair_rows, cols=cols, cell_shape=real.shape[1:3],
      padding=padding, pad_value=pad_value)


def sample_and_reconstruction_grids(samples: np.ndarray, real: np.ndarray,
                                    recon: np.ndarray, *, cols: int
                                    ) -> dict[str, np.ndarray]:
  """The two grids training and evaluation write, by name.

  Args:
    samples: float [cols * cols, R, R, 3] in [-1, 1], G(z) for fixed z (fewer
      leave blank cells).
    real: float [N, R, R, 3] in [-1, 1], inputs x at G's resolution.
    recon: float [N, R, R, 3] in [-1, 1], G(E(x).z_mean).
    cols: images per grid row.

  Returns:
    {'samples': uint8 cols x cols grid, 'reconstructions': rows of x over
    rows of their reconstructions (`reconstruction_grid`)}.
  """
  return {
      'samples': image_grid(samples, rows=cols, cols=cols),
      'reconstructions': reconstruction_grid(real, recon, cols=cols),
  }


def write_png(path: str, grid: np.ndarray) -> None:
  """Writes a uint8 image as PNG, atomically, through `tf.io.gfile`.

  The bytes go to a temporary file beside `path` which is then renamed over
  it, so a run killed mid-write never leaves a truncated PNG under `path`.
  Works for local and `gs://` paths; missing parent directories are created.

  Args:
    path: destination file, e.g. 'gs://bucket/workdir/samples/step_1000.png'.
    grid: uint8 [H, W, 3] (RGB) or [H, W] (grayscale).

  Raises:
    ValueError: if grid is not uint8 [H, W, 3] or [H, W].
  """
  grid = np.asarray(grid)
  if grid.dtype != np.uint8 or not (
      grid.ndim == 2 or (grid.ndim == 3 and grid.shape[-1] == 3)):
    raise ValueError(
        f'grid must be uint8 [H, W, 3] or [H, W]; got dtype {grid.dtype}, '
        f'shape {grid.shape}. Build it with image_grid() or to_uint8().')
  buffer = io.BytesIO()
  Image.fromarray(grid).save(buffer, format='PNG')
  files.write_atomic(path, buffer.getvalue())
