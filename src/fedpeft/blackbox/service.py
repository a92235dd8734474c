"""The model as an API: what a black-box client may ask and get back.

A client sends prompt embeddings ``(P, L, dim)`` with its token ids, and gets
back, as numpy arrays, either the pooled features of every (prompt, sequence)
pair (an encoder behind an embedding API; the client keeps its own head) or a
decoder's logits of the label words at the last position (a completion API's
label-word scores). Nothing else leaves the service: no tensors, no
gradients, no weights. The model sits in a name-mangled attribute and the
methods return copies computed in inference mode. Every call is billed to the
client that made it, in sequences ("queries") and tokens, prompt included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedpeft.models.backbone import Backbone
from fedpeft.models.precision import autocast


@dataclass
class Usage:
    """One client's bill: calls made, sequences scored, tokens sent."""

    calls: int = 0
    queries: int = 0
    tokens: int = 0


class ModelService:
    """A frozen model answering prompt + token queries (module docstring).

    Args:
        backbone: The model behind the API.
        precision: Its compute precision (``"auto"``, ``"bf16"`` or ``"fp32"``).
        max_sequences: Sequences per forward pass (a population times a batch
            is cut into chunks of this many). On two CPU cores 64 measured
            best (bench/blackbox.py; 256 was 1.3x slower); a GPU wants more.
    """

    def __init__(
        self, backbone: Backbone, precision: str = "auto", max_sequences: int = 64
    ) -> None:
        self.__backbone = backbone
        self.__precision = precision
        self.__max_sequences = max_sequences
        self.__usage: dict[int, Usage] = {}
        table = backbone.word_embeddings.weight.detach().float()
        self.hidden_size = int(table.shape[1])
        self.embedding_std = float(table.std())
        self.kind = backbone.kind

    def usage(self, client_id: int) -> Usage:
        """A copy of ``client_id``'s bill so far."""
        return dataclasses.replace(self.__usage.get(client_id, Usage()))

    def features(
        self,
        client_id: int,
        prompts: np.ndarray,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
    ) -> np.ndarray:
        """Pooled features ``(P, B, dim)`` float32 of every prompt with every
        sequence (the real tokens' states; the prompt's are left out)."""
        return self.__score(client_id, prompts, input_ids, attention_mask, None)

    def label_logits(
        self,
        client_id: int,
        prompts: np.ndarray,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        label_words: Sequence[str],
    ) -> np.ndarray:
        """A decoder's next-token logits ``(P, B, C)`` of the label words
        (each word's first token) after every prompt + sequence.

        Raises:
            ValueError: for an encoder (it has no LM head).
        """
        backbone = self.__backbone
        if backbone.kind != "decoder":
            raise ValueError(
                f"{backbone.name} is an encoder: it returns features, not label-word "
                "logits; use peft.head = 'local'"
            )
        rows = backbone.lm_head_rows(backbone.verbalizer_ids(tuple(label_words)))
        return self.__score(client_id, prompts, input_ids, attention_mask, rows)

    def __score(
        self,
        client_id: int,
        prompts: np.ndarray,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        rows: torch.Tensor | None,
    ) -> np.ndarray:
        prompts = np.asarray(prompts, dtype=np.float32)
        ids, mask = np.asarray(input_ids), np.asarray(attention_mask)
        if prompts.ndim != 3 or prompts.shape[2] != self.hidden_size:
            raise ValueError(
                f"prompts of shape {prompts.shape}: expected (P, L, {self.hidden_size})"
            )
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(
                f"input_ids {ids.shape} and attention_mask {mask.shape} must be the "
                "same (batch, seq) shape"
            )
        if not np.isfinite(prompts).all():
            raise ValueError("prompts hold NaN or Inf values")
        pop, length = prompts.shape[:2]
        bsz = ids.shape[0]
        backbone = self.__backbone
        device = backbone.device
        pairs = [(p, b) for p in range(pop) for b in range(bsz)]
        out: list[torch.Tensor] = []
        with torch.inference_mode(), autocast(self.__precision, device):
            p_all = torch.from_numpy(prompts).to(device)
            ids_all = torch.from_numpy(ids.astype(np.int64)).to(device)
            mask_all = torch.from_numpy(mask.astype(np.int64)).to(device)
            for start in range(0, len(pairs), self.__max_sequences):
                chunk = pairs[start : start + self.__max_sequences]
                p_idx = torch.tensor([p for p, _ in chunk], device=device)
                b_idx = torch.tensor([b for _, b in chunk], device=device)
                tokens = backbone.embed(ids_all[b_idx])
                inputs = torch.cat([p_all[p_idx].to(tokens.dtype), tokens], dim=1)
                real = mask_all[b_idx]
                full = torch.cat([real.new_ones(len(chunk), length), real], dim=1)
                hidden = backbone.encode(inputs, full)
                pooled = backbone.pool(hidden[:, length:], real).float()
                out.append(
                    pooled if rows is None else pooled @ rows.float().T.to(device)
                )
        result = torch.cat(out).view(pop, bsz, -1).cpu().numpy().copy()
        bill = self.__usage.setdefault(client_id, Usage())
        bill.calls += 1
        bill.queries += pop * bsz
        bill.tokens += int(pop * (mask.sum() + bsz * length))
        return result
