"""Export a run's final adapter in the HF PEFT format.

``OUT_DIR`` gets, for methods peft implements (prompt, prefix, LoRA, IA3),
``adapter_config.json`` + ``adapter_model.safetensors`` written by
``PeftModel.save_pretrained``, loadable with
``peft.PeftModel.from_pretrained(AutoModel.from_pretrained(BACKBONE), OUT_DIR)``.
Every method also gets ``head.safetensors`` (the classifier's ``weight``
``(classes, dim)`` and ``bias``) and ``fedpeft.json``, which says how logits
are formed from the PEFT model's ``last_hidden_state``:

1. drop the first ``virtual_tokens`` positions (soft prompt only),
2. pool: ``"mean"`` over real tokens (attention mask) for encoders,
   ``"last"`` = the last real token for decoders,
3. ``logits = pooled @ head.weight.T + head.bias``.

Methods peft does not implement (BitFit, full fine-tuning) are written as
``model_tensors.safetensors``: the tuned tensors under the base model's own
names, to load with ``base.load_state_dict(tensors, strict=False)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from fedpeft.config import load_config
from fedpeft.models import load_backbone
from fedpeft.peft.base import AdapterClassifier, build_adapter
from fedpeft.wire import deserialize

logger = logging.getLogger(__name__)


def load_run_adapter(run_dir: Path) -> AdapterClassifier:
    """Rebuild a finished run's final adapter from ``RUN_DIR/adapter``.

    Raises:
        FileNotFoundError: if the run has no final adapter or config.
        ValueError: for a device run (mixed LoRA sizes), which has no single
            exportable adapter.
    """
    if (run_dir / "allocation.json").exists():
        raise ValueError(
            f"{run_dir} is a device run (mixed LoRA sizes, allocation.json): its "
            "global adapter is the server's rank-r_max merge state, not one "
            "client's adapter, and export does not support it yet; export a run "
            "without [devices]"
        )
    adapter_dir = run_dir / "adapter"
    meta_path, blob_path = (
        adapter_dir / "adapter_config.json",
        adapter_dir / ("adapter.safetensors"),
    )
    config_path = run_dir / "config.toml"
    for path in (meta_path, blob_path, config_path):
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: export needs a finished run directory "
                "(written by `fedpeft run`)"
            )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    cfg = load_config(config_path)
    adapter = build_adapter(
        cfg.peft,
        load_backbone(meta["backbone"]),
        int(meta["num_classes"]),
        torch.Generator().manual_seed(0),  # every tensor is overwritten below
        tuple(meta["label_names"]),
    )
    adapter.load_trainable_state(deserialize(blob_path.read_bytes()))
    return adapter


def export_adapter(
    adapter: AdapterClassifier, out_dir: Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``adapter`` to ``out_dir`` (see the module docstring)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    method = type(adapter).__name__
    model = adapter.peft_model()
    if model is not None:
        model.save_pretrained(out_dir)
        fmt = "peft"
    else:
        tensors = {
            name.split(".", 1)[1]: t.detach().contiguous()
            for name, t in adapter.trainable_parameters().items()
            if not name.startswith(adapter.head_prefix)
        }
        save_file(tensors, str(out_dir / "model_tensors.safetensors"))
        fmt = "model_tensors"
    head = {k: v.detach().contiguous() for k, v in adapter.head.state_dict().items()}
    save_file(head, str(out_dir / "head.safetensors"))
    virtual = int(getattr(adapter, "virtual_tokens", 0))  # soft prompts only
    info = {
        "format": fmt,
        "class": method,
        "backbone": adapter.backbone.name,
        "pooling": "last" if adapter.backbone.kind == "decoder" else "mean",
        "virtual_tokens": virtual,
        **(extra or {}),
    }
    (out_dir / "fedpeft.json").write_text(json.dumps(info, indent=2), "utf-8")
    logger.info("exported %s adapter (%s format) to %s", method, fmt, out_dir)
    return out_dir
