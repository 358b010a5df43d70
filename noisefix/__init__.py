"""noisefix: find and fix wrong labels in image-classification datasets with MASC probes."""

__version__ = "0.1.0"
