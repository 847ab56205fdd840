"""Tensor helpers with no knowledge of networks or training: patch and tile geometry,
colour maps. Every other floor may import them (see :mod:`svblur.floors`)."""
