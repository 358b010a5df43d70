"""Scoring: cross-fitted probe scores per layer, the label-only choice of checkpoint x layer x probe, the
probe stage's memory plan, the issue finder (suggested labels, flagging rules, metrics) and the calibrated
label quality with the noise-rate estimate (quality)."""
