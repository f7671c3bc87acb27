"""Jiedao (街道): digital governance platform for a city district and its street offices."""

__version__ = "0.1.0"
