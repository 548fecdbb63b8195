import pytest

from tests.helpers import docker_available, require


@pytest.fixture(scope="session", autouse=True)
def docker_ready():
    require(docker_available(), "a Docker daemon")

