"""Scoring maths: knows models and token ids, nothing of HTTP or settings."""
