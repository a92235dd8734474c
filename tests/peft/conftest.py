"""The small Fashion-MNIST experiment the image-adapter tests share."""

from __future__ import annotations

import pytest

from fedpeft.config import load_config
from fedpeft.experiment import Experiment, build_experiment

IMAGES = (
    "data.corpus=fashion-mnist",
    "model.backbone=efficientnet-lite0",
    "model.image_size=32",
    "data.max_train=400",
    "data.max_test=200",
    "federation.num_clients=4",
    "federation.rounds=1",
    "partition.min_size=10",
    "client.batch_size=16",
    "baselines.run=[]",
    "peft.method=head",
)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    out = tmp_path_factory.mktemp("runs")
    return build_experiment(load_config(None, [*IMAGES, f"output_dir={out}"]))
