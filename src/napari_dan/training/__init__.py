"""Training and evaluation: data sets, the training loop, recipes, the Gaussian8 evaluation
(the physics they use lives in :mod:`napari_dan.imaging`)."""
