"""fedpeft: federated parameter-efficient adaptation of frozen foundation models."""

from fedpeft.types import ClientUpdate, Params

__all__ = ["ClientUpdate", "Params", "__version__"]
__version__ = "0.1.0"
