"""Data layer: text corpora, non-IID partitioning and partition reports.

Importing this package registers the shipped corpora (:mod:`.corpora`) and the
partitioners (:mod:`.partition`). Heavy libraries (datasets, flwr-datasets,
scikit-learn, matplotlib) are imported only by the functions that need them.
"""

from fedpeft.data import corpora as _corpora  # noqa: F401  (registers corpora)
from fedpeft.data.corpus import (
    CORPORA,
    Corpus,
    TextDataset,
    available_corpora,
    load_corpus,
)
from fedpeft.data.partition import (
    PARTITIONERS,
    PartitionError,
    label_distribution,
    label_skew,
    partition_indices,
    split_train_val,
)
from fedpeft.data.report import partition_table, plot_partition, render_partition_table
from fedpeft.data.splits import stratified_sample

__all__ = [
    "CORPORA",
    "PARTITIONERS",
    "Corpus",
    "PartitionError",
    "TextDataset",
    "available_corpora",
    "label_distribution",
    "label_skew",
    "load_corpus",
    "partition_indices",
    "partition_table",
    "plot_partition",
    "render_partition_table",
    "split_train_val",
    "stratified_sample",
]
