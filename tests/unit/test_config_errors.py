"""One ConfigError family: every package's settings error is a fedhft.config.ConfigError, so one
``except ConfigError`` catches them all, and each keeps its own name and message."""

from __future__ import annotations

import pytest

import edge_runtime
from server.broker import FleetConfigError, fleet_init
from fedhft.config import ConfigError
from server import ServerConfig, ServerConfigError


def test_each_package_error_is_a_config_error():
    assert issubclass(ServerConfigError, ConfigError) and issubclass(FleetConfigError, ConfigError)
    assert edge_runtime.ConfigError is ConfigError
    assert issubclass(ConfigError, ValueError)  # every existing `except ValueError` still catches them


def test_a_list_is_counted_and_a_single_message_kept_as_it_is():
    many = ConfigError(["rounds must be >= 1", "fleet is required"], "server.yaml")
    assert str(many) == "2 problem(s) in server.yaml:\n  - rounds must be >= 1\n  - fleet is required"
    one = ServerConfigError("invalid server config:\n  - rounds must be >= 1")
    assert str(one) == "invalid server config:\n  - rounds must be >= 1" and one.errors == [str(one)]


def test_one_except_catches_the_server_and_the_fleet_errors(tmp_path):
    with pytest.raises(ConfigError, match="invalid server config"):
        ServerConfig(fleet="demo", bundles_dir=str(tmp_path), rounds=0)
    with pytest.raises(ConfigError, match="duplicate device ids"):
        fleet_init(tmp_path / "fleet", ["dev-1", "dev-1"])
