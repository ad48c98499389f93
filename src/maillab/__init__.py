"""maillab: a complete little mail system that runs inside a Jupyter kernel, for teaching."""

__version__ = "0.1.0"
