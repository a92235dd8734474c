"""A client that tunes a prompt without gradients: CMA-ES over z.

Each round the client starts a CMA-ES (the ``cma`` package, separable, that
is diagonal covariance) at the global mean z with the server's step size σ
and, when the server adapts one, its per-coordinate scales s
(:data:`~fedpeft.blackbox.server.SEARCH_STDS`, CMA's ``CMA_stds``).
Every iteration it asks for a population of candidates, turns them into
prompts ``A·z`` with the projection it regenerates from the shared seed,
scores the whole population on one draw of its training examples in a single
service call, and tells the losses back. The model is reached only through
:class:`~fedpeft.blackbox.service.ModelService`: prompts and token ids in,
features (or a decoder's label-word logits) out.

With an encoder the client keeps a linear head (``peft.head = "local"``): it
scores candidates with its current head and refits the head on the features
of its new mean after the search. With ``"fixed"`` the head (the round-0
warm start) comes as :data:`~fedpeft.messages.DOWNLINK` side information and
is never refitted: z alone goes back. With ``"verbalizer"`` a decoder's
label-word logits are the scores and only z is tuned.

The reply is the usual ΔP (z and head) with, as metrics, what FedBPT's server
needs: the fitness of the new mean on the client's data, the sum of the
squared step sizes over the iterations and the search's μ (parents per
iteration).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.blackbox.server import SEARCH_STDS
from fedpeft.blackbox.service import ModelService
from fedpeft.client.algorithm import ClientData
from fedpeft.client.probe import fit_linear_head
from fedpeft.messages import DOWNLINK, Instruction, reply_layout
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.peft.blackbox.config import BlackBoxConfig
from fedpeft.peft.blackbox.model import project, projection
from fedpeft.seeding import stream
from fedpeft.types import ClientUpdate, Params

FEATURE_CHUNK = 256  # sequences per service call when scoring a whole shard


@dataclass
class BlackBoxClient:
    """CMA-ES prompt search behind a model service (module docstring).

    Attributes:
        service: The model API.
        data_for: Client k's train/validation data (token ids and labels).
        options: The ``[peft]`` section of method ``blackbox``.
        seed: The run seed (the clients' search streams).
        label_names: The class names (a decoder's label words).
        probe_iters / probe_l2: The local head's L-BFGS fit.
    """

    service: ModelService
    data_for: Callable[[int], ClientData]
    options: BlackBoxConfig
    seed: int
    label_names: tuple[str, ...]
    probe_iters: int = 100
    probe_l2: float = 1e-3
    _projection: torch.Tensor | None = field(default=None, repr=False)

    def can_batch(self, shape: tuple[int, int] | None) -> bool:
        """Clients search one after another (each population is batched)."""
        return False

    def fit_many(self, instructions: Sequence[Instruction]) -> list[ClientUpdate]:
        """One search after another (each scores its population in one call)."""
        return [self.fit(ins) for ins in instructions]

    @property
    def projection(self) -> torch.Tensor:
        """A ``(L·dim, d)``, regenerated from the shared seed on first use."""
        if self._projection is None:
            o, dim = self.options, self.service.hidden_size
            self._projection = projection(
                o.projection_seed, o.intrinsic_dim, o.prompt_length * dim
            )
        return self._projection

    @property
    def scale(self) -> torch.Tensor:
        """A's scale: alpha · std(word embeddings) / √d (fp32, as the server's)."""
        o = self.options
        std = torch.tensor(self.service.embedding_std, dtype=torch.float32)
        return o.alpha * std / math.sqrt(o.intrinsic_dim)

    def prompts(self, z: np.ndarray) -> np.ndarray:
        """Prompts ``(P, L, dim)`` float32 of candidates ``(P, d)``."""
        z_t = torch.from_numpy(np.asarray(z, dtype=np.float32))
        flat = project(z_t, self.projection, self.scale)
        return flat.view(len(z), self.options.prompt_length, -1).numpy()

    def scores(self, k: int, z: np.ndarray, data: TokenizedDataset) -> np.ndarray:
        """What the service returns for candidates ``z`` ``(P, d)`` on ``data``:
        features ``(P, B, dim)`` or label-word logits ``(P, B, C)``."""
        prompts = self.prompts(z)
        width = int(data.lengths.max())
        ids = data.input_ids[:, :width]
        mask = (np.arange(width)[None, :] < data.lengths[:, None]).astype(np.int64)
        if self.options.head == "verbalizer":
            return self.service.label_logits(k, prompts, ids, mask, self.label_names)
        return self.service.features(k, prompts, ids, mask)

    def _losses(
        self, scores: np.ndarray, labels: np.ndarray, head: Params
    ) -> np.ndarray:
        """Mean cross-entropy per candidate ``(P,)``."""
        logits = torch.from_numpy(scores)
        if self.options.head != "verbalizer":
            weight = torch.from_numpy(head["head.weight"])
            logits = logits @ weight.T + torch.from_numpy(head["head.bias"])
        target = torch.from_numpy(labels).expand(len(scores), -1)
        loss = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        return np.asarray(loss.mean(dim=1).double().numpy())

    def _shard_scores(
        self, k: int, z: np.ndarray, data: TokenizedDataset
    ) -> np.ndarray:
        parts = [
            self.scores(
                k, z[None], data.subset(np.arange(i, min(i + FEATURE_CHUNK, len(data))))
            )[0]
            for i in range(0, len(data), FEATURE_CHUNK)
        ]
        return np.concatenate(parts)

    def fit(self, ins: Instruction) -> ClientUpdate:
        import cma  # the search's own package; heavy to import

        o, k = self.options, ins.client_id
        train = self.data_for(k).train
        if len(train) == 0:
            raise ValueError(f"client {k} has no training data")
        rng = stream(self.seed, "search", ins.round, k)
        before = self.service.usage(k)
        start = {n: np.asarray(v) for n, v in reply_layout(ins.payload).items()}
        head = {
            n.removeprefix(DOWNLINK): np.asarray(v)
            for n, v in ins.payload.items()
            if n.removeprefix(DOWNLINK).startswith("head.")
        }
        sigma = float(ins.config.get("sigma", o.sigma0))
        stds = ins.payload.get(SEARCH_STDS)
        if stds is not None and not (
            stds.shape == start["z"].shape and np.all(np.isfinite(stds) & (stds > 0))
        ):
            raise ValueError(
                f"client {k}: the server's search scales {SEARCH_STDS!r} must be "
                f"{start['z'].shape} positive finite numbers"
            )
        es = cma.CMAEvolutionStrategy(
            start["z"].astype(np.float64),
            sigma,
            {
                **({} if stds is None else {"CMA_stds": stds.astype(np.float64)}),
                "popsize": o.popsize,
                "maxiter": o.iterations,
                "CMA_diagonal": True,
                "seed": np.nan,  # never reseed numpy's global generator
                "randn": lambda *shape: rng.standard_normal(shape),
                "verbose": -9,
                "verb_log": 0,
                "verb_disp": 0,
                "tolfun": 0,
                "tolx": 0,
            },
        )
        sigmas_sq = 0.0
        for _ in range(o.iterations):
            sigmas_sq += float(es.sigma) ** 2
            candidates = np.asarray(es.ask())
            draw = rng.choice(
                len(train), min(o.search_batch, len(train)), replace=False
            )
            batch = train.subset(np.sort(draw))
            losses = self._losses(self.scores(k, candidates, batch), batch.labels, head)
            es.tell(list(candidates), list(losses))
        z = np.asarray(es.mean, dtype=np.float32)
        shard = self._shard_scores(k, z, train)
        if o.head == "local":
            feats = torch.from_numpy(shard)
            num_classes = head["head.bias"].shape[0]
            head = fit_linear_head(
                feats, train.labels, num_classes, self.probe_iters, self.probe_l2, head
            )
        fitness = float(self._losses(shard[None], train.labels, head)[0])
        new = {"z": z, **{n: head[n] for n in start if n != "z"}}
        delta = {n: (new[n] - start[n]).astype(start[n].dtype) for n in start}
        bill = self.service.usage(k)
        return ClientUpdate(
            k,
            delta,
            len(train),
            {
                "train_loss": fitness,
                "fitness": fitness,
                "sigma_sq_sum": sigmas_sq,
                "search_mu": float(es.sp.weights.mu),
                "queries": float(bill.queries - before.queries),  # this round's
                "tokens": float(bill.tokens - before.tokens),
            },
        )

    def probe(self, ins: Instruction) -> ClientUpdate:
        """The local head fitted on the features of the global z (warm start)."""
        k = ins.client_id
        train = self.data_for(k).train
        head = {
            n: np.asarray(v) for n, v in ins.payload.items() if n.startswith("head.")
        }
        if self.options.head == "verbalizer":
            return ClientUpdate(k, head, len(train))
        feats = torch.from_numpy(
            self._shard_scores(k, np.asarray(ins.payload["z"]), train)
        )
        fitted = fit_linear_head(
            feats,
            train.labels,
            head["head.bias"].shape[0],
            self.probe_iters,
            self.probe_l2,
            head,
        )
        return ClientUpdate(k, fitted, len(train))

    def class_stats(self, ins: Instruction) -> ClientUpdate:
        raise ValueError(
            "peft.method = 'blackbox' has no class-means or lda warm start; use "
            "peft.head_init = 'probe' (the default for it) or 'zeros'"
        )

    calibrate = class_stats
