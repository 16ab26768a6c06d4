"""Evaluation of bigbigan-tf models: IS / FID / KID, linear probe, grids."""
