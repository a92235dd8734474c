"""Shared fixtures: one tiny real experiment (real backbone, real corpus slice)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import settings

from fedpeft.config import RunConfig, load_config
from fedpeft.data.images import FASHION_MNIST_DIR
from fedpeft.experiment import Experiment, build_experiment
from fedpeft.models.backbone import Backbone

# Property tests draw the same examples on every run, so CI is reproducible
# (a random draw once found a test bug on one run only).
settings.register_profile("fedpeft", derandomize=True)
settings.load_profile("fedpeft")

needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (make test installs "
    "it where apt-get can run)",
)
"""Skip a test (or, as ``pytestmark``, a module) that needs the images."""

TINY = (
    "data.corpus=bbc-news",
    "data.max_train=160",
    "data.max_test=80",
    "data.max_chars=400",
    "model.max_length=32",
    "federation.num_clients=4",
    "federation.rounds=2",
    "partition.min_size=10",
    "peft.prompt_length=4",
    "client.batch_size=16",
    "client.probe_iters=50",
    "baselines.run=[]",
    # Many tests hold two engines equal (batched vs alone, embedded vs remote)
    # within float tolerance: fp32 keeps that tolerance tight. The bf16 default
    # runs in the image, CLI and main-job tests.
    "model.precision=fp32",
)


def tiny_config(tmp_path: object, *extra: str) -> RunConfig:
    """The tiny test configuration writing under ``tmp_path`` (its soft-prompt
    options are left out when ``extra`` picks another PEFT method)."""
    other_method = any(
        e.startswith("peft.method=") and e != "peft.method=prompt" for e in extra
    )
    base = [t for t in TINY if not (other_method and t.startswith("peft.prompt_"))]
    return load_config(None, [*base, f"output_dir={tmp_path}", *extra])


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    return build_experiment(tiny_config(tmp_path_factory.mktemp("runs")))


def overrides(*items: str) -> Sequence[str]:
    return list(items)


@pytest.fixture(scope="session")
def tiny_decoder() -> Backbone:
    """A random 2-layer Llama backbone (GQA) with a word-level tokenizer."""
    from tests.models.conftest import tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    return Backbone("tiny-llama", tiny_llama(), tokenizer, "decoder")


TINY_BLACKBOX = (
    "peft.method=blackbox",
    "peft.prompt_length=4",
    "peft.intrinsic_dim=16",
    "peft.popsize=4",
    "peft.iterations=2",
    "peft.search_batch=4",
)
"""A black-box search small enough for a test on the tiny model."""
