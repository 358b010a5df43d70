"""Scoring: cross-fitted probe scores per layer, the label-only choice of checkpoint x layer x probe, the
probe stage's memory plan, and the issue finder (suggested labels, metrics)."""
