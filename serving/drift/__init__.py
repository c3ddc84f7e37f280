"""Prediction drift: statistics, reference distributions, per-output monitors and the scoring engine."""
