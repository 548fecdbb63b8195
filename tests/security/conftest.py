"""The security suite drives real servers and clients like the e2e suite: docker_ready and base_image, which both
use, are in tests/conftest.py."""
