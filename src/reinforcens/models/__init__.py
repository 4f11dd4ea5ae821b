"""Scoring models."""

from reinforcens.models.gmf import GMF

__all__ = ["GMF"]
