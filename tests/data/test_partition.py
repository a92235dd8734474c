"""Tests for fedpeft.data.partition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedpeft.config import ConfigError
from fedpeft.data.partition import (
    PARTITIONERS,
    PartitionError,
    PartitionInputs,
    allocate_proportional,
    label_distribution,
    label_skew,
    partition_indices,
    split_train_val,
)

METHODS = sorted(PARTITIONERS)
PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _balanced_labels(num_classes: int = 10, per_class: int = 100) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


def _method_kwargs(method: str, n: int, rng: np.random.Generator) -> dict[str, object]:
    """Inputs the feature method needs; nothing for the others."""
    if method == "feature":
        groups = rng.integers(0, max(n // 5, 1), n)
        return {"group_column": "g", "inputs": PartitionInputs({"g": groups})}
    return {}


def _drawn_options(draw: st.DrawFn, method: str, num_classes: int) -> dict[str, object]:
    """Random values of the method's own options (each method refuses others')."""
    if method.startswith("dirichlet"):
        return {"alpha": draw(st.sampled_from([0.1, 0.5, 5.0]))}
    if method == "pathological":
        return {"classes_per_client": draw(st.integers(1, num_classes))}
    if method == "quantity":
        distribution = draw(st.sampled_from(["power-law", "log-normal"]))
        return {"quantity_distribution": distribution}
    return {}


def _assert_cover(parts: list[np.ndarray], n: int) -> None:
    assert all(p.dtype == np.int64 for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


@st.composite
def _problems(draw: st.DrawFn) -> dict[str, object]:
    """A random label array and partition request."""
    n = draw(st.integers(20, 200))
    num_classes = draw(st.integers(2, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    method = draw(st.sampled_from(METHODS))
    return {
        "labels": rng.integers(0, num_classes, n),
        "num_clients": draw(st.integers(1, 6)),
        "method": method,
        "seed": draw(st.integers(0, 2**16)),
        "min_size": draw(st.integers(1, 5)),
        **_drawn_options(draw, method, num_classes),
        **_method_kwargs(method, n, rng),
    }


@PROPERTY_SETTINGS
@given(problem=_problems())
def test_partition_is_a_disjoint_cover_respecting_min_size(
    problem: dict[str, object],
) -> None:
    labels = problem["labels"]
    assert isinstance(labels, np.ndarray)

    try:
        parts = partition_indices(**problem)  # type: ignore[arg-type]
    except PartitionError:
        # iid and quantity skew fit whenever there are examples enough
        enough = problem["num_clients"] * problem["min_size"] <= len(labels)  # type: ignore[operator]
        assert not (problem["method"] in ("iid", "quantity") and enough)
        return

    assert len(parts) == problem["num_clients"]
    _assert_cover(parts, len(labels))
    assert min(len(p) for p in parts) >= problem["min_size"]  # type: ignore[operator]


@PROPERTY_SETTINGS
@given(problem=_problems())
def test_partition_is_deterministic_for_a_seed(problem: dict[str, object]) -> None:
    try:
        first = partition_indices(**problem)  # type: ignore[arg-type]
    except PartitionError:
        return

    second = partition_indices(**problem)  # type: ignore[arg-type]

    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("method", METHODS)
def test_each_method_partitions_a_balanced_dataset(method: str) -> None:
    labels = _balanced_labels()
    kwargs = _method_kwargs(method, len(labels), np.random.default_rng(0))

    parts = partition_indices(labels, 8, method, seed=1, **kwargs)  # type: ignore[arg-type]
    other = partition_indices(labels, 8, method, seed=2, **kwargs)  # type: ignore[arg-type]

    _assert_cover(parts, len(labels))
    assert min(len(p) for p in parts) >= 10
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


@pytest.mark.parametrize("method", METHODS)
def test_impossible_min_size_raises(method: str) -> None:
    labels = _balanced_labels(num_classes=5, per_class=10)  # 50 examples
    kwargs = _method_kwargs(method, len(labels), np.random.default_rng(0))

    with pytest.raises(PartitionError, match="num_clients <= 5 or min_size <= 8"):
        partition_indices(labels, 6, method, seed=0, min_size=10, **kwargs)  # type: ignore[arg-type]


def test_smaller_alpha_gives_more_label_skew() -> None:
    labels = _balanced_labels()

    def mean_skew(alpha: float) -> float:
        skews = [
            label_skew(
                labels,
                partition_indices(
                    labels, 10, "dirichlet", seed=s, alpha=alpha, min_size=5
                ),
                10,
            )
            for s in range(4)
        ]
        return float(np.mean(skews))

    assert mean_skew(0.1) > mean_skew(10.0) + 0.3


def test_dirichlet_failure_says_what_to_change() -> None:
    labels = _balanced_labels(num_classes=10, per_class=25)  # 250 examples

    with pytest.raises(
        PartitionError, match="fewer clients, a larger alpha or a smaller min_size"
    ):
        partition_indices(labels, 20, "dirichlet", seed=0, alpha=0.01, min_size=10)


def test_pathological_gives_each_client_exactly_k_classes() -> None:
    labels = _balanced_labels(num_classes=10, per_class=60)

    parts = partition_indices(labels, 7, "pathological", seed=3, classes_per_client=3)

    counts = label_distribution(labels, parts, 10)
    assert np.all((counts > 0).sum(axis=1) == 3)
    _assert_cover(parts, len(labels))


def test_pathological_refuses_to_drop_classes() -> None:
    labels = _balanced_labels(num_classes=10, per_class=60)

    with pytest.raises(PartitionError, match="classes_per_client >= 4"):
        partition_indices(labels, 3, "pathological", seed=0, classes_per_client=2)
    with pytest.raises(PartitionError, match="classes_per_client <= 10"):
        partition_indices(labels, 3, "pathological", seed=0, classes_per_client=11)


def test_feature_groups_stay_whole_and_balance_sizes() -> None:
    rng = np.random.default_rng(0)
    groups = np.array([f"movie{g}" for g in rng.integers(0, 60, 1000)])
    labels = rng.integers(0, 2, 1000)

    parts = partition_indices(
        labels,
        5,
        "feature",
        seed=0,
        group_column="movie",
        inputs=PartitionInputs({"movie": groups}),
    )

    owners = [set(groups[p]) for p in parts]
    assert sum(len(o) for o in owners) == len(set(groups))  # no group split
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= max(np.unique(groups, return_counts=True)[1])


def test_feature_clusters_separate_embedding_blobs() -> None:
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    blob = np.repeat(np.arange(3), 40)
    features = centers[blob] + rng.normal(0, 0.5, (120, 2))

    parts = partition_indices(
        blob, 3, "feature", seed=0, inputs=PartitionInputs(features=lambda: features)
    )

    assert sorted(len(set(blob[p])) for p in parts) == [1, 1, 1]


def test_feature_needs_groups_or_features() -> None:
    with pytest.raises(PartitionError, match=r"group_column .* or embeddings"):
        partition_indices(_balanced_labels(), 4, "feature", seed=0)


def test_feature_names_the_missing_group_column() -> None:
    inputs = PartitionInputs({"movie_name": np.zeros(1000)})

    with pytest.raises(PartitionError, match=r"'genre' .* columns: \['movie_name'\]"):
        partition_indices(
            _balanced_labels(),
            4,
            "feature",
            seed=0,
            group_column="genre",
            inputs=inputs,
        )


def test_feature_with_fewer_groups_than_clients_raises() -> None:
    groups = np.repeat(np.arange(3), 100)

    with pytest.raises(PartitionError, match="only 3 groups"):
        partition_indices(
            _balanced_labels(3, 100),
            4,
            "feature",
            seed=0,
            group_column="g",
            inputs=PartitionInputs({"g": groups}),
        )


@pytest.mark.parametrize("distribution", ["power-law", "log-normal"])
def test_quantity_skew_gives_unequal_sizes_above_min_size(distribution: str) -> None:
    labels = _balanced_labels()

    parts = partition_indices(
        labels, 10, "quantity", seed=0, min_size=20, quantity_distribution=distribution
    )

    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 20 and sizes.max() > 2 * sizes.min()
    _assert_cover(parts, len(labels))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_clients": 0}, "num_clients=0"),
        ({"method": "dirichlet", "alpha": 0.0}, "partition.alpha = 0.0"),
        ({"min_size": 0}, "partition.min_size = 0"),
        ({"seed": -1}, "seed=-1"),
        ({"method": "quantity", "quantity_distribution": "zipf"}, "zipf"),
        (
            {
                "method": "feature",
                "group_column": "g",
                "inputs": PartitionInputs({"g": np.zeros(3)}),
            },
            r"'g' has shape \(3,\)",
        ),
        (
            {"alpha": 0.5},
            "partition.alpha is not an option of partition.method='iid'; "
            "its options: min_size, val_fraction; alpha is an option of "
            "partition.method='dirichlet', 'dirichlet-balanced'",
        ),
    ],
)
def test_bad_arguments_name_the_value(kwargs: dict[str, object], message: str) -> None:
    call: dict[str, object] = {"num_clients": 2, "method": "iid", "seed": 0, **kwargs}

    with pytest.raises(ValueError, match=message):
        partition_indices(_balanced_labels(), **call)  # type: ignore[arg-type]


def test_unknown_method_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'dirichlet'"):
        partition_indices(_balanced_labels(), 2, "dirichlett", seed=0)


@given(
    n=st.integers(1, 200),
    val_fraction=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
)
def test_split_train_val_is_a_split_keeping_a_train_example(
    n: int, val_fraction: float, seed: int
) -> None:
    indices = np.arange(100, 100 + n)

    train, val = split_train_val(indices, val_fraction, np.random.default_rng(seed))

    assert np.array_equal(np.sort(np.concatenate([train, val])), indices)
    assert len(train) >= 1
    assert len(val) == 0 if val_fraction == 0 else len(val) >= min(1, n - 1)


def test_split_train_val_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match=r"val_fraction=1\.0"):
        split_train_val(np.arange(5), 1.0, np.random.default_rng(0))


def test_label_distribution_counts_classes_per_client() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 3]), np.array([1, 2, 4, 5])]

    counts = label_distribution(labels, parts, 3)

    assert counts.tolist() == [[1, 0, 1], [0, 2, 2]]


def test_label_skew_is_zero_for_identical_mixes_and_one_for_disjoint_classes() -> None:
    labels = np.array([0, 1, 0, 1])

    assert label_skew(labels, [np.array([0, 1]), np.array([2, 3])], 2) == 0.0
    assert label_skew(labels, [np.array([0, 2]), np.array([1, 3])], 2) == 0.5


@given(
    total=st.integers(0, 10_000),
    weights=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=20).filter(
        lambda w: sum(w) > 0
    ),
)
def test_allocate_proportional_sums_to_total_within_one_of_share(
    total: int, weights: list[float]
) -> None:
    parts = allocate_proportional(total, weights)

    exact = total * np.array(weights) / sum(weights)
    assert parts.sum() == total
    assert np.all(np.abs(parts - exact) < 1)


def test_too_few_examples_for_min_size_is_refused_even_for_iid() -> None:
    labels = np.zeros(20, dtype=np.int64)
    with pytest.raises(PartitionError, match="num_clients <= 4 or min_size <= 4"):
        partition_indices(labels, num_clients=5, method="iid", seed=0, min_size=5)


def test_too_few_examples_for_any_client_gives_advice_that_can_be_followed() -> None:
    labels = np.zeros(20, dtype=np.int64)

    with pytest.raises(PartitionError) as err:
        partition_indices(labels, num_clients=5, method="iid", seed=0, min_size=30)

    assert "num_clients <= 0" not in str(err.value)  # no client would be left
    assert "min_size <= 4 or at least 150 training examples" in str(err.value)
    assert "data.max_train" in str(err.value)


@pytest.mark.parametrize("method", METHODS)
def test_options_round_trip_through_a_config(method: str) -> None:
    from fedpeft.config import RunConfig, build_config

    options = PARTITIONERS.options(method)()
    tree = RunConfig(partition=options).to_dict()

    again = build_config(tree)

    assert type(again.partition) is type(options)
    assert again.partition == options
    assert again.to_dict() == tree
