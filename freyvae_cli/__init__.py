"""freyvae: train and explore a convolutional VAE on the Frey Face data set."""

__version__ = "0.1.0"
