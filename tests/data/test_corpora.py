"""Tests for fedpeft.data.corpus and fedpeft.data.corpora."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedpeft.data import Corpus, TextDataset, available_corpora, load_corpus

# name -> (train size or None, test size or None, total, classes): as read, with
# every row (data.drop_duplicates = false)
SHIPPED = {
    "rotten-tomatoes": (None, None, 12_808, 2),
    "tweets-sentiment": (None, None, 38_158, 3),
    "20newsgroups": (11_293, 7_528, 18_821, 20),
    "reuters-r8": (5_485, 2_189, 7_674, 8),
    "reuters-r52": (6_532, 2_568, 9_100, 52),
    "bbc-news": (None, None, 2_225, 5),
}
# the same with repeated texts dropped (the default): no test text in training
DEDUPLICATED = {
    "rotten-tomatoes": (None, None, 12_752, 2),
    "tweets-sentiment": (None, None, 37_243, 3),
    "20newsgroups": (11_293, 7_521, 18_814, 20),
    "reuters-r8": (5_485, 2_185, 7_670, 8),
    "reuters-r52": (6_532, 2_562, 9_094, 52),
    "bbc-news": (None, None, 2_127, 5),
}


def _write_csv(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"csv:{path}"


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> str:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return f"jsonl:{path}"


@pytest.mark.parametrize("dedup", [False, True])
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_corpus_loads_with_expected_sizes(name: str, dedup: bool) -> None:
    n_train, n_test, total, num_classes = (DEDUPLICATED if dedup else SHIPPED)[name]

    corpus = load_corpus(name, max_chars=None, drop_duplicates=dedup)

    assert len(corpus.train) + len(corpus.test) == total
    if n_train is not None:
        assert (len(corpus.train), len(corpus.test)) == (n_train, n_test)
    else:  # seeded split with the default test_fraction 0.2
        assert len(corpus.test) == round(0.2 * total)
    assert corpus.train.num_classes == num_classes
    assert (set(corpus.train.texts) & set(corpus.test.texts) == set()) or not dedup
    for split in (corpus.train, corpus.test):
        assert split.labels.dtype == np.int64
        assert split.labels.min() >= 0 and split.labels.max() < num_classes
        assert all(text.strip() for text in split.texts)
        assert all(len(col) == len(split) for col in split.metadata.values())


def test_every_registered_corpus_is_listed() -> None:
    usages = [usage for usage, _ in available_corpora()]

    assert set(SHIPPED) <= set(usages)
    assert {"csv:PATH", "jsonl:PATH"} <= set(usages)
    assert all(description for _, description in available_corpora())


def test_rotten_tomatoes_drops_plots_and_keeps_movie_names() -> None:
    corpus = load_corpus("rotten-tomatoes", drop_duplicates=False)

    assert corpus.label_names == ("fresh", "rotten")
    counts = corpus.train.class_counts() + corpus.test.class_counts()
    assert counts.tolist() == [7403, 5405]
    deduplicated = load_corpus("rotten-tomatoes")
    counts = deduplicated.train.class_counts() + deduplicated.test.class_counts()
    assert counts.tolist() == [7368, 5384]
    assert corpus.train.metadata["movie_name"].shape == (len(corpus.train),)


def test_tweets_keep_confidence_as_float_metadata() -> None:
    corpus = load_corpus("tweets-sentiment")

    confidence = corpus.train.metadata["confidence"]
    assert corpus.label_names == ("negative", "neutral", "positive")
    assert confidence.dtype == np.float64
    assert np.nanmin(confidence) >= 0.0 and np.nanmax(confidence) <= 1.0  # NaN: blank


def test_split_is_deterministic_and_depends_on_split_seed() -> None:
    first = load_corpus("bbc-news", split_seed=3)
    again = load_corpus("bbc-news", split_seed=3)
    other = load_corpus("bbc-news", split_seed=4)

    assert first.test.texts == again.test.texts
    assert np.array_equal(first.train.labels, again.train.labels)
    assert first.test.texts != other.test.texts


def test_split_is_stratified() -> None:
    corpus = load_corpus("bbc-news", test_fraction=0.25)

    total = corpus.train.class_counts() + corpus.test.class_counts()
    assert np.all(np.abs(corpus.test.class_counts() - 0.25 * total) <= 1)


def test_split_is_a_disjoint_cover(tmp_path: Path) -> None:
    rows = [f"text {i},{i % 4}" for i in range(50)]
    name = _write_csv(tmp_path / "u.csv", ["text,label", *rows])

    corpus = load_corpus(name, test_fraction=0.3)

    assert len(corpus.test) == 15
    assert sorted(corpus.train.texts + corpus.test.texts) == sorted(
        r.split(",")[0] for r in rows
    )


def test_max_train_takes_a_deterministic_stratified_subsample() -> None:
    full = load_corpus("20newsgroups")

    small = load_corpus("20newsgroups", max_train=200, max_test=100)
    again = load_corpus("20newsgroups", max_train=200, max_test=100)

    assert (len(small.train), len(small.test)) == (200, 100)
    assert small.train.texts == again.train.texts
    expected = 200 * full.train.class_counts() / len(full.train)
    assert np.all(np.abs(small.train.class_counts() - expected) < 1)


def test_max_train_does_not_change_the_test_set() -> None:
    full = load_corpus("rotten-tomatoes")

    capped = load_corpus("rotten-tomatoes", max_train=500)

    assert capped.test.texts == full.test.texts
    assert set(capped.train.texts) <= set(full.train.texts)


def test_max_chars_truncates_long_texts() -> None:
    corpus = load_corpus("20newsgroups", max_chars=100)
    whole = load_corpus("20newsgroups", max_chars=None)

    assert max(len(t) for t in corpus.train.texts) == 100
    assert max(len(t) for t in whole.train.texts) > 10_000


def test_unknown_corpus_names_the_closest_choice() -> None:
    with pytest.raises(KeyError, match="Did you mean 'rotten-tomatoes'"):
        load_corpus("rotten-tomato")


def test_csv_corpus_keeps_extra_columns_as_metadata(tmp_path: Path) -> None:
    rows = [
        f"review {i},{'pos' if i % 2 else 'neg'},site{i % 3},{i}" for i in range(20)
    ]
    name = _write_csv(tmp_path / "reviews.csv", ["text,label,site,score", *rows])

    corpus = load_corpus(name, test_fraction=0.5)

    assert corpus.label_names == ("neg", "pos")
    assert len(corpus.train) == 10 and len(corpus.test) == 10
    assert corpus.train.metadata["site"].dtype.kind == "U"
    assert corpus.train.metadata["score"].dtype == np.int64
    assert np.array_equal(corpus.test.class_counts(), [5, 5])


def test_csv_integer_labels_sort_numerically(tmp_path: Path) -> None:
    rows = [f"doc {i},{[2, 10, 1][i % 3]}" for i in range(9)]
    name = _write_csv(tmp_path / "docs.csv", ["body,y", *rows])

    corpus = load_corpus(name, text_column="body", label_column="y")

    assert corpus.label_names == ("1", "2", "10")


def test_csv_missing_column_lists_available_columns(tmp_path: Path) -> None:
    name = _write_csv(tmp_path / "x.csv", ["sentence,label", "a,0", "b,1"])

    with pytest.raises(
        ValueError, match="no column 'text'; available columns: sentence, label"
    ):
        load_corpus(name)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        load_corpus(f"csv:{tmp_path / 'nope.csv'}")


def test_file_corpus_needs_a_path_and_shipped_corpus_takes_none() -> None:
    with pytest.raises(ValueError, match="csv:PATH"):
        load_corpus("csv")
    with pytest.raises(ValueError, match="takes no argument"):
        load_corpus("bbc-news:/tmp/x")


def test_single_class_is_rejected(tmp_path: Path) -> None:
    name = _write_csv(tmp_path / "one.csv", ["text,label", "a,x", "b,x"])

    with pytest.raises(ValueError, match="at least 2"):
        load_corpus(name)


def test_empty_text_is_rejected_with_its_row(tmp_path: Path) -> None:
    name = _write_csv(tmp_path / "e.csv", ["text,label", "a,x", '" ",y', "c,y"])

    with pytest.raises(ValueError, match=r"empty text.*rows \[1\]"):
        load_corpus(name)


def test_jsonl_corpus_with_integer_labels(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": i % 3, "user": f"u{i % 4}"} for i in range(30)]
    name = _write_jsonl(tmp_path / "d.jsonl", rows)

    corpus = load_corpus(name)

    assert corpus.label_names == ("0", "1", "2")
    assert len(corpus.train) + len(corpus.test) == 30
    assert set(corpus.train.metadata) == {"user"}
    train_texts = np.array(corpus.train.texts)
    assert np.array_equal(corpus.train.labels, [int(t[1:]) % 3 for t in train_texts])


def test_jsonl_missing_key_names_the_row(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"text": "a", "label": 0}, {"text": "b"}]
    name = _write_jsonl(tmp_path / "d.jsonl", rows)

    with pytest.raises(
        ValueError, match="row 1 has no column 'label'; available columns: text"
    ):
        load_corpus(name)


def test_jsonl_invalid_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{oops\n', encoding="utf-8")

    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        load_corpus(f"jsonl:{path}")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"split_seed": -1}, "split_seed"),
        ({"max_train": 0}, "max_train"),
        ({"max_chars": 0}, "max_chars"),
    ],
)
def test_bad_load_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_corpus("bbc-news", **kwargs)  # type: ignore[arg-type]


def test_subset_selects_texts_labels_and_metadata_together() -> None:
    data = TextDataset(
        texts=("a", "b", "c"),
        labels=np.array([0, 1, 0]),
        label_names=("x", "y"),
        metadata={"m": np.array([10, 11, 12])},
    )

    part = data.subset(np.array([2, 1]))

    assert part.texts == ("c", "b")
    assert part.labels.tolist() == [0, 1]
    assert part.metadata["m"].tolist() == [12, 11]
    assert part.label_names == ("x", "y") and len(part) == 2


def test_text_dataset_rejects_out_of_range_labels() -> None:
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        TextDataset(texts=("a",), labels=np.array([2]), label_names=("x", "y"))


def test_corpus_requires_shared_label_names() -> None:
    train = TextDataset(texts=("a",), labels=np.array([0]), label_names=("x", "y"))
    test = TextDataset(texts=("a",), labels=np.array([0]), label_names=("x", "z"))

    with pytest.raises(ValueError, match="label_names"):
        Corpus(name="c", train=train, test=test)
