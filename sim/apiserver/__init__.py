"""Simulated Kubernetes API server: the in-memory Store and its HTTP front end."""

from .errors import ApiError
from .store import Event, Store, Watch

__all__ = ["ApiError", "Event", "Store", "Watch"]
