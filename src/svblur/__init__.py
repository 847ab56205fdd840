"""svblur: space-variant blur estimation with semantics, and blind super-resolution.

The subpackages are imported on demand (``import svblur.models``); this module only says
which version is installed. The version is written once, in ``pyproject.toml``, and read
here from the installed package's metadata.
"""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__: str = version("svblur")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
