"""Config files must be UTF-8; data files take their encoding from data.encoding."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpeft.config import ConfigError, load_config


def test_non_utf8_config_names_file_offset_and_line(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    text = 'name = "x"\n# r\u00e9sum\u00e9 of the run\n[peft]\nprompt_length = 8\n'
    path.write_bytes(text.encode("latin-1"))
    offset = text.index("\u00e9")  # all bytes before it are ASCII

    with pytest.raises(ConfigError) as info:
        load_config(path)

    message = str(info.value)
    assert str(path) in message
    assert f"byte 0xe9 at offset {offset} (line 2)" in message
    assert "must be UTF-8" in message


def test_utf8_config_with_non_ascii_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('name = "x"\n# r\u00e9sum\u00e9\n', encoding="utf-8")

    assert load_config(path).name == "x"


def test_data_encoding_defaults_to_utf8_and_can_be_set() -> None:
    assert load_config().data.encoding == "utf-8"
    assert load_config(None, ["data.encoding=latin-1"]).data.encoding == "latin-1"
