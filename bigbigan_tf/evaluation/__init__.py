"""Evaluation of bigbigan-tf models: IS / FID / KID, linear probe, grids.

  evaluate_lib      `evaluate()`: runs the metrics on a workdir or an export
                    and writes the results (eval/evaluate.py is its command)
  features          G and E from a checkpoint or an exported module, and the
                    real images and E features the metrics consume
  metrics           Inception Score, FID and KID through TF-GAN
  linear_probe      the paper's logistic-regression probe on E's features
  digit_classifier  a small MNIST CNN for an offline digit Frechet distance
"""
