"""The fedpeft Flower app as ``flwr run`` sees it: the bundle's
``pyproject.toml`` and the run-config values it is submitted with."""

from __future__ import annotations

from fedpeft.flower.server_app import (
    CONFIG,
    NODE_DATA,
    NODES,
    OVERWRITE,
    RESUME,
    TIMEOUT,
)

APP_PYPROJECT = {
    "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
    "project": {
        "name": "fedpeft-app",
        "version": "1.0.0",
        "description": "fedpeft's round loop as a Flower app",
        "license": "Apache-2.0",
        "dependencies": [],
    },
    "tool": {
        "hatch": {"build": {"targets": {"wheel": {"packages": ["."]}}}},
        "flwr": {
            "app": {
                "publisher": "fedpeft",
                "components": {
                    "serverapp": "fedpeft.flower.server_app:app",
                    "clientapp": "fedpeft.flower.client_app:app",
                },
                "config": {
                    CONFIG: "",
                    RESUME: False,
                    OVERWRITE: False,
                    TIMEOUT: 120.0,
                    NODES: 0,
                    NODE_DATA: False,
                },
            }
        },
    },
}
"""The app bundle: code lives in the installed fedpeft package, so the bundle
holds only this file (Flower bundles are limited to 10 MB)."""


def run_config_argument(
    config: str, resume: bool, overwrite: bool, timeout: float, nodes: int, data: bool
) -> str:
    """``flwr run --run-config``'s argument for one run of the app: the run's
    config file, whether to resume or overwrite, the exchange timeout, how
    many nodes to wait for and whether they hold data of their own."""
    values = {
        CONFIG: config,
        RESUME: resume,
        OVERWRITE: overwrite,
        TIMEOUT: float(timeout),
        NODES: nodes,
        NODE_DATA: data,
    }
    return " ".join(f"{k}={run_config_value(v)}" for k, v in values.items())


def run_config_value(value: object) -> str:
    """A run-config value as ``flwr run --run-config`` parses it (TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
