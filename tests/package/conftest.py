"""smoke_installed.py reuses the integration suite's `herald` fixture (start on 127.0.0.1 port 0,
wait for /healthz, stop by PID and check the exit status); loaded under its own module name as in
tests/hostile/conftest.py."""

import importlib.util
import os
import sys

INTEGRATION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration")
sys.path.insert(0, INTEGRATION)

_spec = importlib.util.spec_from_file_location("herald_integration_conftest",
                                               os.path.join(INTEGRATION, "conftest.py"))
_it = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _it
_spec.loader.exec_module(_it)

herald = _it.herald
herald_bin = _it.herald_bin
