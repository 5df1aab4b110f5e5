"""Flax ports of ImageNet CNNs. Each returns a dict of named features; see registry.py."""
