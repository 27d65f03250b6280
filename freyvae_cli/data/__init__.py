"""The faces a model trains on and reads: the Frey Face file (frey.py), read by a plain MATLAB v5
reader (matfile.py); the other sources `--data` takes, a folder of images or a .npy/.npz
(sources.py); and your own pictures made into 28x20 faces (images.py)."""
