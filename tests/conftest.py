import os

from hypothesis import HealthCheck, settings

# CI gets more examples than a developer's inner loop; both are deterministic
# enough to reproduce from the printed seed.
settings.register_profile("ci", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
