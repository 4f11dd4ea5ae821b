"""reinforcens: learned negative samplers that use exposure data (RNS and its baselines)."""

from reinforcens.errors import ConfigError, DataError, ReinforcensError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "ReinforcensError", "__version__"]
