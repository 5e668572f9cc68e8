import os

import pytest
from hypothesis import HealthCheck, settings

from fastwire._fastwire import receive_buffer_pool

# CI gets more examples than a developer's inner loop; both are deterministic
# enough to reproduce from the printed seed.
settings.register_profile("ci", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def empty_receive_pool():
    """The out-of-band receive pool emptied, with its default bounds (4 blocks,
    256 MiB); its bounds restored afterwards."""
    before = receive_buffer_pool()
    receive_buffer_pool(max_blocks=0)
    receive_buffer_pool(max_blocks=4, max_bytes=256 * 1024 * 1024)
    yield
    receive_buffer_pool(max_blocks=0)
    receive_buffer_pool(max_blocks=before["max_blocks"], max_bytes=before["max_bytes"])
