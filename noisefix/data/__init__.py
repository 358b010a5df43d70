"""Data: image folders and labels files, image decoding, built-in datasets, label noise, and the
stratified splits (folds, hold-out, draws)."""
