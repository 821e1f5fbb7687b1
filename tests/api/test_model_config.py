"""Submission lists an S3 model's objects (refusing pickle files), reads its config.json (never a weight) and
checks the recipe against it."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save

from api.app import create_app
from shrinkray.settings import Settings
from tests.conftest import SHARED_MODEL


@pytest.fixture()
def s3_client(api_settings: Settings, moto_s3):  # type: ignore[no-untyped-def]
    config = (SHARED_MODEL / "config.json").read_bytes()
    moto_s3.store("models/tiny").put_bytes("config.json", config)
    moto_s3.store("models/tiny").put_bytes("model.safetensors", save({"stub": torch.zeros(1)}))
    moto_s3.store("models/pickled").put_bytes("config.json", config)
    moto_s3.store("models/pickled").put_bytes("pytorch_model.bin", b"\x80\x04")
    mixture = {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "vocab_size": 256, "hidden_size": 64,
               "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "num_local_experts": 4}
    moto_s3.store("models/mixture").put_bytes("config.json", json.dumps(mixture).encode())
    moto_s3.store("models/mixture").put_bytes("model.safetensors", save({"stub": torch.zeros(1)}))
    settings = api_settings.model_copy(update={
        "s3_endpoint_url": moto_s3.endpoint_url, "s3_access_key_id": "testing", "s3_secret_access_key": "testing",
    })
    with TestClient(create_app(settings, run_maintenance=False)) as client:
        yield client, moto_s3.bucket


def test_s3_models_are_checked_against_their_config(s3_client) -> None:  # type: ignore[no-untyped-def]
    client, bucket = s3_client
    ok = client.post("/v1/jobs", json={"model_uri": f"s3://{bucket}/models/tiny", "preset": "2of4-w4a16"})
    assert ok.status_code == 201, ok.text
    missing = client.post("/v1/jobs", json={"model_uri": f"s3://{bucket}/models/absent", "preset": "w4a16"})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "model_uri"]
    assert "config.json" in missing.json()["detail"][0]["msg"]
    pickled = client.post("/v1/jobs", json={"model_uri": f"s3://{bucket}/models/pickled", "preset": "w4a16"})
    assert pickled.status_code == 422
    assert "models/pickled/pytorch_model.bin: pickle checkpoints are refused" in pickled.json()["detail"][0]["msg"]
    bad_group = client.post("/v1/jobs", json={"model_uri": f"s3://{bucket}/models/tiny",
                                              "recipe": {"modifiers": [{"method": "rtn", "bits": 4, "group_size": 7}]}})
    assert bad_group.status_code == 422
    assert bad_group.json()["detail"][0]["loc"] == ["body", "recipe", "modifiers", "0", "group_size"]


def test_a_mixture_of_stacked_experts_is_refused_at_submission(s3_client) -> None:  # type: ignore[no-untyped-def]
    client, bucket = s3_client
    refused = client.post("/v1/jobs", json={"model_uri": f"s3://{bucket}/models/mixture", "preset": "w4a16"})
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"][0]
    assert detail["loc"][-1] == "model" and "experts" in detail["msg"] and "not supported" in detail["msg"]
