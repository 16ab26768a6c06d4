"""Grid layout, reconstruction interleaving and atomic PNG writing."""

import os

import numpy as np
from PIL import Image
import tensorflow as tf

from bigbigan_tf import grids


def _cell(grid, row, col, *, height, width, padding):
  top = padding + row * (height + padding)
  left = padding + col * (width + padding)
  return grid[top:top + height, left:left + width]


def _constant_images(values, height=4, width=6):
  """Image i is filled with values[i] (float in [-1, 1])."""
  return np.stack([np.full((height, width, 3), v, np.float32) for v in values])


class ToUint8Test(tf.test.TestCase):

  def test_mapping_and_clipping(self):
    values = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], np.float32)
    # (v + 1) * 127.5 rounded; out-of-range values are clipped first.
    self.assertAllEqual(grids.to_uint8(values), [0, 0, 128, 191, 255, 255])


class ImageGridTest(tf.test.TestCase):

  def test_cells_padding_and_blank_cells(self):
    rng = np.random.default_rng(0)
    height, width, padding, rows, cols = 4, 6, 2, 2, 3
    images = rng.uniform(-1.2, 1.2, size=(5, height, width, 3))
    grid = grids.image_grid(images, rows=rows, cols=cols, padding=padding)
    self.assertEqual(grid.dtype, np.uint8)
    self.assertEqual(grid.shape, (rows * height + (rows + 1) * padding,
                                  cols * width + (cols + 1) * padding, 3))
    self.assertEqual(grid.shape, (14, 26, 3))
    for i in range(5):
      row, col = divmod(i, cols)  # Row-major.
      expected = np.round((np.clip(images[i], -1, 1) + 1) * 127.5)
      self.assertAllEqual(
          _cell(grid, row, col, height=height, width=width, padding=padding),
          expected.astype(np.uint8))
    # The sixth cell has no image: all padding colour.
    self.assertAllEqual(
        _cell(grid, 1, 2, height=height, width=width, padding=padding),
        np.full((height, width, 3), 255, np.uint8))
    # Border rows / columns and the lines between cells are padding.
    between_rows = grid[padding + height:2 * padding + height]
    between_cols = grid[:, padding + width:2 * padding + width]
    for line in (grid[:padding], grid[-padding:], grid[:, :padding],
                 grid[:, -padding:], between_rows, between_cols):
      self.assertTrue(np.all(line == 255))

  def test_pad_value_and_zero_padding(self):
    images = _constant_images([-1.0, 1.0])
    grid = grids.image_grid(images, rows=1, cols=3, padding=0, pad_value=7)
    self.assertEqual(grid.shape, (4, 18, 3))
    self.assertTrue(np.all(grid[:, :6] == 0))
    self.assertTrue(np.all(grid[:, 6:12] == 255))
    self.assertTrue(np.all(grid[:, 12:] == 7))  # Blank cell.

  def test_rejects_bad_input(self):
    with self.assertRaisesRegex(ValueError, '3 images do not fit a 1x2 grid'):
      grids.image_grid(_constant_images([0, 0, 0]), rows=1, cols=2)
    with self.assertRaisesRegex(ValueError, r'\[N, H, W, 3\]'):
      grids.image_grid(np.zeros((2, 4, 4, 1)), rows=1, cols=2)


class ReconstructionGridTest(tf.test.TestCase):

  def test_real_rows_directly_above_their_reconstructions(self):
    height, width, padding, cols = 4, 6, 1, 3
    real_values = [-1.0, -0.8, -0.6, -0.4, -0.2]
    recon_values = [0.2, 0.4, 0.6, 0.8, 1.0]
    grid = grids.reconstruction_grid(
        _constant_images(real_values), _constant_images(recon_values),
        cols=cols, padding=padding)
    # 5 images in rows of 3: 2 pairs of rows -> 4 grid rows.
    self.assertEqual(grid.shape, (4 * height + 5 * padding,
                                  cols * width + 4 * padding, 3))
    expected_rows = [real_values[:3], recon_values[:3],
                     real_values[3:] + [None], recon_values[3:] + [None]]
    for row, values in enumerate(expected_rows):
      for col, value in enumerate(values):
        cell = _cell(grid, row, col, height=height, width=width,
                     padding=padding)
        expected = 255 if value is None else round((value + 1) * 127.5)
        self.assertTrue(np.all(cell == expected), (row, col, cell[0, 0]))

  def test_shape_mismatch(self):
    with self.assertRaisesRegex(ValueError, 'same shape'):
      grids.reconstruction_grid(np.zeros((2, 4, 4, 3)), np.zeros((2, 8, 8, 3)),
                                cols=2)


class SampleAndReconstructionGridsTest(tf.test.TestCase):

  def test_both_grids_by_name(self):
    samples = _constant_images([-1.0, 0.0, 1.0, 0.5])
    real, recon = _constant_images([-1.0, -0.5]), _constant_images([1.0, 0.5])
    named = grids.sample_and_reconstruction_grids(samples, real, recon,
                                                  cols=2)
    self.assertCountEqual(named, ['samples', 'reconstructions'])
    self.assertAllEqual(named['samples'],
                        grids.image_grid(samples, rows=2, cols=2))
    self.assertAllEqual(named['reconstructions'],
                        grids.reconstruction_grid(real, recon, cols=2))


class WritePngTest(tf.test.TestCase):

  def test_round_trip_creates_dirs_and_leaves_no_temp_file(self):
    rng = np.random.default_rng(1)
    grid = grids.image_grid(rng.uniform(-1, 1, (3, 8, 8, 3)), rows=2, cols=2)
    directory = os.path.join(self.get_temp_dir(), 'a', 'b')
    path = os.path.join(directory, 'grid.png')
    grids.write_png(path, grid)
    with Image.open(path) as image:
      self.assertEqual(image.mode, 'RGB')
      self.assertAllEqual(np.asarray(image), grid)
    # Overwriting replaces the file; no temporary file stays behind.
    grids.write_png(path, 255 - grid)
    with Image.open(path) as image:
      self.assertAllEqual(np.asarray(image), 255 - grid)
    self.assertEqual(os.listdir(directory), ['grid.png'])

  def test_rejects_float_grid(self):
    with self.assertRaisesRegex(ValueError, 'uint8'):
      grids.write_png(os.path.join(self.get_temp_dir(), 'x.png'),
                      np.zeros((4, 4, 3), np.float32))


if __name__ == '__main__':
  tf.test.main()
