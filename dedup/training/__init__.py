"""Training data, augmentations and the training loop for the siamese embedding (imports TensorFlow lazily)."""
