"""Recipes: the validated data that says what to do to a model, and the named presets.

A recipe is checked completely (and against the model's config.json) before any compute starts, so a
bad one is rejected at submission with the field that is wrong, never half-way through a GPU job.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compress.errors import RecipeError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WeightQuantModifier(_Strict):
    """Integer weight-only quantization of the targeted Linear layers; methods subclass it."""

    method: str
    bits: Literal[4, 8]
    group_size: int | None = Field(default=None, gt=0, description="None: one scale per output channel")
    symmetric: bool = True
    targets: list[str] = Field(default_factory=lambda: ["Linear"], min_length=1)
    ignore: list[str] = Field(default_factory=lambda: ["lm_head"])

    @field_validator("symmetric")
    @classmethod
    def _symmetric_only(cls, value: bool) -> bool:
        # Measured: transformers 5.24 + compressed-tensors 0.20 cannot load back the packed zero points of an
        # asymmetric pack-quantized checkpoint (shape mismatch), so such a recipe would fail at validation.
        if not value:
            raise ValueError("asymmetric weights cannot be exported loadably yet; use symmetric: true")
        return value


class RTNModifier(WeightQuantModifier):
    """Round-to-nearest: no calibration data needed; the baseline every other method must beat."""

    method: Literal["rtn"] = "rtn"


# method name -> modifier class. A new method (GPTQ, SparseGPT, ...) adds one class here.
MODIFIERS: dict[str, type[WeightQuantModifier]] = {"rtn": RTNModifier}

Modifier = Annotated[Union[tuple(MODIFIERS.values())], Field(discriminator="method")]  # noqa: UP007


class CalibrationSettings(_Strict):
    samples: int = Field(default=128, gt=0)
    seq_len: int = Field(default=512, ge=2)


class ValidationSettings(_Strict):
    seq_len: int = Field(default=512, ge=2)
    max_windows: int | None = Field(default=None, gt=0)


class Recipe(_Strict):
    modifiers: list[Modifier] = Field(min_length=1)
    calibration: CalibrationSettings = Field(default_factory=CalibrationSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)

    @model_validator(mode="before")
    @classmethod
    def _known_methods(cls, data: object) -> object:
        """Name the unknown method with the list of known ones (pydantic's message lists tags only)."""
        if isinstance(data, dict) and isinstance(data.get("modifiers"), list):
            for index, modifier in enumerate(data["modifiers"]):
                if isinstance(modifier, dict) and modifier.get("method") not in MODIFIERS:
                    raise RecipeError(
                        f"recipe.modifiers.{index}.method",
                        f"unknown method {modifier.get('method')!r}; known: {sorted(MODIFIERS)}",
                    )
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


PRESETS: dict[str, Recipe] = {
    "w4a16-rtn": Recipe(modifiers=[RTNModifier(bits=4, group_size=128, symmetric=True)]),
    "w8a16-rtn": Recipe(modifiers=[RTNModifier(bits=8, group_size=None, symmetric=True)]),
}


def resolve_recipe(preset: str | None = None, recipe: dict | str | None = None) -> Recipe:
    """Exactly one of a preset name or a recipe (a dict, or YAML/JSON text) -> a validated Recipe."""
    if (preset is None) == (recipe is None):
        raise RecipeError("recipe", "give exactly one of a preset name or a recipe")
    if preset is not None:
        if preset not in PRESETS:
            raise RecipeError("preset", f"unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
        return PRESETS[preset].model_copy(deep=True)
    data = _parse(recipe) if isinstance(recipe, str) else recipe
    if not isinstance(data, dict):
        raise RecipeError("recipe", "must be a mapping with a 'modifiers' list")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        # Drop the discriminator tag pydantic puts in the location ("modifiers.0.rtn.bits").
        parts = [str(part) for part in first["loc"] if str(part) not in MODIFIERS]
        raise RecipeError(".".join(["recipe", *parts]), first["msg"]) from exc


def _parse(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError("recipe", f"neither JSON nor YAML: {exc}") from exc


def linear_widths(config: dict) -> dict[str, int]:
    """Input width of each Linear of a Llama-like config.json, by its name in decoder layer 0."""
    hidden = config.get("hidden_size")
    if not isinstance(hidden, int):
        raise RecipeError("model", "config.json has no integer hidden_size")
    heads = config.get("num_attention_heads") or 1
    head_dim = config.get("head_dim") or hidden // heads
    widths = {f"model.layers.0.self_attn.{name}": hidden for name in ("q_proj", "k_proj", "v_proj")}
    widths["model.layers.0.self_attn.o_proj"] = heads * head_dim
    widths |= {f"model.layers.0.mlp.{name}": hidden for name in ("gate_proj", "up_proj")}
    if isinstance(config.get("intermediate_size"), int):
        widths["model.layers.0.mlp.down_proj"] = config["intermediate_size"]
    widths["lm_head"] = hidden
    return widths


def _matches(name: str, patterns: list[str]) -> bool:
    """compressed-tensors' matching on names: `re:` searches a regex, else the name or its last part."""
    return any(
        re.match(p[3:], name) if p.startswith("re:") else p in (name, name.rsplit(".", 1)[-1], "Linear")
        for p in patterns
    )


def validate_recipe_for_model(recipe: Recipe, config: dict) -> None:
    """Reject a recipe whose group size does not divide the input width of a layer it would quantize.

    Groups run along the input dimension, so only in_features matters.
    """
    for index, modifier in enumerate(recipe.modifiers):
        if modifier.group_size is None:
            continue
        for name, width in linear_widths(config).items():
            if not _matches(name, modifier.targets) or _matches(name, modifier.ignore):
                continue
            if width % modifier.group_size:
                raise RecipeError(
                    f"recipe.modifiers.{index}.group_size",
                    f"{modifier.group_size} does not divide the input width {width} of {name}; "
                    "choose a divisor, or null for per-channel scales",
                )
