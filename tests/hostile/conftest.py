"""Hostile-client tests reuse the integration suite's fixtures and helpers (no copies).

The integration conftest is loaded under its own module name (pytest already owns the name
`conftest` for this file) and its fixtures and names are re-exported here, so `herald` /
`herald_module` work as in tests/integration and modules there that do `from conftest import ...`
(test_tls's TlsHerald) import cleanly from this directory too.
"""

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.join(os.path.dirname(HERE), "integration")
if not os.path.isfile(os.path.join(INTEGRATION, "conftest.py")):
    raise RuntimeError(f"tests/hostile needs the integration suite at {INTEGRATION}")
for d in (INTEGRATION, HERE):
    if d not in sys.path:
        sys.path.insert(0, d)

_spec = importlib.util.spec_from_file_location("herald_integration_conftest",
                                               os.path.join(INTEGRATION, "conftest.py"))
_it = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _it
_spec.loader.exec_module(_it)

# fixtures
herald = _it.herald
herald_module = _it.herald_module

# names other modules import from `conftest`
Herald = _it.Herald
HeraldFactory = _it.HeraldFactory
LISTEN_RE = _it.LISTEN_RE
REPO_ROOT = _it.REPO_ROOT
SANITIZER_PATTERNS = _it.SANITIZER_PATTERNS
binary_is_sanitized = _it.binary_is_sanitized
clean_env = _it.clean_env
herald_bin = _it.herald_bin
