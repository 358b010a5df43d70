"""What users see: the Reporter protocol (Null / Rich console reporters) and the plots."""
