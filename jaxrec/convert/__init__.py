"""Weight converters: explicit name tables from PyTorch and Keras files onto the Flax variables."""
