"""Files: atomic writes and readers (`atomic`) and the layout of a run directory (`run_dir`)."""
