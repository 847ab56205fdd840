"""svblur: space-variant blur estimation with semantics, and blind super-resolution."""

__version__ = "0.1.0"
