"""The site configuration: models, loading, validation and the commented example."""

from importlib.resources import files

from gxpgate.config.loader import ConfigError, LoadedConfig, default_config_path, load_config
from gxpgate.config.model import GatewayConfig

__all__ = [
    "ConfigError",
    "GatewayConfig",
    "LoadedConfig",
    "default_config_path",
    "example_config_text",
    "load_config",
]


def example_config_text() -> str:
    return files(__package__).joinpath("example.toml").read_text(encoding="utf-8")
