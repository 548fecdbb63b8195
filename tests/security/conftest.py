"""The security suite drives real servers and clients like the e2e suite: it shares that suite's fixtures."""
from tests.e2e.conftest import base_image, docker_ready  # noqa: F401  (pytest fixtures)
