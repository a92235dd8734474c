"""Split a labelled dataset across federated clients: pure math over label arrays.

Every partitioner maps a label array of length ``n`` to one int64 index array per
client. The arrays are a disjoint cover of ``range(n)``: every example goes to
exactly one client, and no partitioner drops examples (a configuration that
would force a drop raises :class:`PartitionError` instead). Every draw comes
from a ``numpy.random.Generator`` seeded with ``seed``, so the same labels, options
and seed give the same partition. The order of indices inside a client is a
seeded shuffle, never grouped by class.

Methods (choose by name from :data:`PARTITIONERS`; each has its own options
class beside it, selected by ``partition.method``):

* ``iid``: a uniform random split into near-equal shards.
* ``dirichlet``: label skew; each class is split across clients in proportions
  drawn from Dir(alpha) (Yurochkin et al. 2019; Li et al. 2022), redrawn up to
  ``max_draws`` times until every client has ``min_size`` examples.
* ``dirichlet-balanced``: label skew at equal client sizes.
* ``quantity``: quantity skew; client sizes drawn from a power law or a
  log-normal, labels IID inside each client.
* ``feature``: feature skew; whole natural groups (e.g. one movie's reviews) or
  k-means clusters of embeddings go to one client each.
* ``pathological``: each client holds exactly ``classes_per_client`` classes
  (McMahan et al. 2017, sec. 3; Li et al. 2022, arXiv:2102.02079).

Layout: :mod:`.config` holds the options base class and the registry (pydantic
only); :mod:`.base` holds :func:`partition_indices`, its checks and
:func:`register_partitioner`; one module per method family (:mod:`.iid`,
:mod:`.dirichlet`, :mod:`.quantity`, :mod:`.feature`, :mod:`.pathological`)
holds its options class and registers itself on import, which this package
does below for every module in it (a new partitioner is one new module);
:mod:`.stats` holds per-client splits and statistics.
"""

from fedpeft.data.partition.base import (
    PARTITIONERS,
    IntArray,
    PartitionConfig,
    Partitioner,
    PartitionError,
    PartitionFn,
    PartitionInputs,
    partition_indices,
    register_partitioner,
)
from fedpeft.data.partition.config import partition_config
from fedpeft.data.partition.stats import (
    allocate_proportional,
    label_distribution,
    label_skew,
    split_train_val,
)
from fedpeft.registry import register_submodules

register_submodules(__name__, __path__)

__all__ = [
    "PARTITIONERS",
    "IntArray",
    "PartitionConfig",
    "PartitionError",
    "PartitionFn",
    "PartitionInputs",
    "Partitioner",
    "allocate_proportional",
    "label_distribution",
    "label_skew",
    "partition_config",
    "partition_indices",
    "register_partitioner",
    "split_train_val",
]
