"""ssl3d-harness: organizer-side evaluation of SSL3D pre-training submissions."""

__version__ = "0.1.0"
