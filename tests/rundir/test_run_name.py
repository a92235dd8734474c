"""A run name is one directory under output_dir, never a path out of it."""

from __future__ import annotations

import pytest

from fedpeft.config import ConfigError, load_config


@pytest.mark.parametrize("name", [".", "..", ".hidden", "a/b", "../x", "", "x" * 201])
def test_a_name_that_is_not_one_safe_directory_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="one directory name") as caught:
        load_config(None, [f"name={name!r}"])
    assert "name = " in str(caught.value)


@pytest.mark.parametrize("name", ["default", "run-1", "lora_r8.seed0", "A", "1.5"])
def test_ordinary_names_are_accepted(name: str) -> None:
    cfg = load_config(None, ["output_dir=runs", f"name={name!r}"])
    assert cfg.run_dir.parent.name == "runs" and cfg.run_dir.name == name
