"""fedhft: the vocabulary both sides speak (layout and mask math, manifest, protocol) and the CLI."""

__version__ = "0.1.0"

__all__ = ["__version__"]
