import pytest
import ray

from mmdist.runtime import init_ray


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the session, started as the jobs start it."""
    init_ray({"address": None, "num_cpus": 4})
    yield
    ray.shutdown()
