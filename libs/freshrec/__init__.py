"""freshrec: real-time recommendations with online training into a collisionless embedding table."""

__all__ = ["__version__"]

__version__ = "0.1.0"
