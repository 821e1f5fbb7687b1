"""Submission-time check of the model a job names: its config.json alone is read (never a weight), so a recipe
that cannot apply to the architecture, or a model that is not there, is refused before anything is queued."""

from __future__ import annotations

import json

from compress.recipes import Recipe, validate_recipe_for_model
from shrinkray.services import artifact_store
from shrinkray.settings import Settings
from storage.errors import StorageError
from storage.uris import SourceUri

MAX_CONFIG_BYTES = 1024 * 1024


class ModelUnreadable(Exception):
    """The model's config.json is missing, too large, not a JSON object, or its store cannot be reached."""


def read_model_config(source: SourceUri, settings: Settings) -> dict:
    try:
        if source.scheme == "file":
            assert source.path is not None
            path = source.path / "config.json"
            if not path.is_file():
                raise ModelUnreadable(f"no config.json in {source.path}")
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise ModelUnreadable(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
            data = path.read_bytes()
        else:
            prefix = (source.key or "").strip("/")
            key = f"{prefix}/config.json" if prefix else "config.json"
            data = artifact_store(settings, url=f"s3://{source.bucket}").get_bytes(key)
            if len(data) > MAX_CONFIG_BYTES:
                raise ModelUnreadable(f"s3://{source.bucket}/{key} is larger than {MAX_CONFIG_BYTES} bytes")
        config = json.loads(data)
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
