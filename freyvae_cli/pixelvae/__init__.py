"""PixelVAE, the stronger model: the seed's encoder with a PixelCNN decoder head (model.py); its
exact sampler, fixed-point iteration over many pixels at once (sampler.py); and the NumPy first
guess each CPU draw starts from (guess.py)."""
