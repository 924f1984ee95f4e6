"""Evaluation-only novel products (its own drawing style). Never import this from training code."""
