"""A run without differential privacy does not pay for importing dp-accounting."""

from __future__ import annotations

import subprocess
import sys


def test_the_engine_and_cli_import_without_dp_accounting() -> None:
    code = (
        "import sys, fedpeft.cli, fedpeft.engine.runner, fedpeft.privacy\n"
        "assert 'dp_accounting' not in sys.modules, 'dp_accounting was imported'\n"
        "from fedpeft.privacy import epsilon_for, client_level_event\n"
        "event = client_level_event(1.0, 'poisson', sample_rate=0.1)\n"
        "assert 'dp_accounting' in sys.modules and epsilon_for(event, 10, 1e-5) > 0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
