"""Submission-time check of the model a job names, without reading a weight: a local directory gets every check
the fetch stage makes (pickle files, remote code, links out, malformed or oversized JSON, broken safetensors
headers); an S3 prefix has its object names checked and its config.json read. A recipe that cannot apply to the
architecture, or a model that is not there, is refused before anything is queued."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from compress.errors import ModelRejected
from compress.model_io import JSON_LIMITS, PICKLE_SUFFIXES, check_model_dir
from compress.recipes import Recipe, validate_recipe_for_model
from shrinkray.services import artifact_store
from shrinkray.settings import Settings
from storage.errors import StorageError
from storage.uris import SourceUri


class ModelUnreadable(Exception):
    """The model is missing, refused by the checks above, or its store cannot be reached."""


def read_model_config(source: SourceUri, settings: Settings) -> dict:
    try:
        if source.scheme == "file":
            assert source.path is not None
            return check_model_dir(source.path)[0]
        prefix = (source.key or "").strip("/")
        store = artifact_store(settings, url=f"s3://{source.bucket}")
        names = store.list_keys(f"{prefix}/" if prefix else "")
        refused = [name for name in names if PurePosixPath(name).suffix in PICKLE_SUFFIXES]
        if refused:
            raise ModelUnreadable(f"{refused[0]}: pickle checkpoints are refused; convert to safetensors")
        if names and not any(name.endswith(".safetensors") for name in names):
            raise ModelUnreadable(f"s3://{source.bucket}/{prefix} holds no *.safetensors weights")
        key = f"{prefix}/config.json" if prefix else "config.json"
        data = store.get_bytes(key)
        if len(data) > JSON_LIMITS["config.json"]:
            raise ModelUnreadable(f"s3://{source.bucket}/{key} is larger than {JSON_LIMITS['config.json']} bytes")
        config = json.loads(data)
    except ModelRejected as exc:
        raise ModelUnreadable(str(exc)) from exc
    except StorageError as exc:
        raise ModelUnreadable(f"cannot read the model's config.json: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelUnreadable(f"config.json is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelUnreadable("config.json must hold a JSON object")
    return config


def check_recipe_against_model(recipe: Recipe, source: SourceUri, settings: Settings) -> None:
    """RecipeError naming the recipe field, or ModelUnreadable."""
    validate_recipe_for_model(recipe, read_model_config(source, settings))
