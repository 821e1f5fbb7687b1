"""Recipes: the validated data that says what to do to a model, and the named presets.

A recipe is checked completely (and against the model's config.json) before any compute starts, so a
bad one is rejected at submission with the field that is wrong, never half-way through a GPU job.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal, Union

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from compress.errors import RecipeError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WeightQuantModifier(_Strict):
    """Integer weight-only quantization of the targeted Linear layers; methods subclass it."""

    method: str
    bits: Literal[3, 4, 8]
    group_size: int | None = Field(default=None, gt=0, description="None: one scale per output channel")
    symmetric: bool = Field(
        default=True,
        description="asymmetric weights carry a zero point per group; they are stored unpacked (int8 codes)",
    )
    targets: list[str] = Field(default_factory=lambda: ["Linear"], min_length=1)
    ignore: list[str] = Field(default_factory=lambda: ["lm_head"])


class RTNModifier(WeightQuantModifier):
    """Round-to-nearest: no calibration data needed; the baseline every other method must beat."""

    method: Literal["rtn"] = "rtn"


class GPTQModifier(WeightQuantModifier):
    """GPTQ (Frantar et al. 2022): quantize column by column, pushing each column's error onto the rest
    through the inverse Hessian of the layer's calibration inputs."""

    method: Literal["gptq"] = "gptq"
    act_order: bool = Field(default=True, description="quantize columns in order of decreasing Hessian diagonal")
    damp: float = Field(default=0.01, gt=0, le=1, description="fraction of the mean Hessian diagonal added to it")
    block_size: int = Field(default=128, gt=0, description="columns per lazy batch update")


# method name -> modifier class. A new method adds one class here.
MODIFIERS: dict[str, type[WeightQuantModifier]] = {"rtn": RTNModifier, "gptq": GPTQModifier}

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
    "w4a16": Recipe(modifiers=[GPTQModifier(bits=4, group_size=128)]),
    "w3a16": Recipe(modifiers=[GPTQModifier(bits=3, group_size=128)]),
    "w4a16-rtn": Recipe(modifiers=[RTNModifier(bits=4, group_size=128, symmetric=True)]),
    "w8a16-rtn": Recipe(modifiers=[RTNModifier(bits=8, group_size=None, symmetric=True)]),
    "w8a16": Recipe(modifiers=[GPTQModifier(bits=8, group_size=None)]),
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


def linear_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of every Linear, by name: the architecture built on the meta device from
    config.json alone, so any model transformers knows is checked without reading a weight."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if config.get("auto_map"):
        raise RecipeError("model", "config.json asks for remote code (auto_map); it is never run")
    try:
        fields = {key: value for key, value in config.items() if key != "model_type"}
        model_config = AutoConfig.for_model(str(config.get("model_type")), **fields)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model_config)
    except (ValueError, KeyError, TypeError) as exc:
        raise RecipeError("model", f"transformers cannot build this architecture: {exc}") from exc
    return {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
    }


def _matches(name: str, patterns: list[str]) -> bool:
    """compressed-tensors' matching on names: `re:` searches a regex, else the name or its last part."""
    return any(_pattern_matches(name, pattern) for pattern in patterns)


def _pattern_matches(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.match(pattern[3:], name) is not None
    return pattern in (name, name.rsplit(".", 1)[-1], "Linear")


def validate_recipe_for_model(recipe: Recipe, config: dict) -> None:
    """Reject, before any compute, a recipe that cannot apply to this model: a target or ignore pattern that
    matches no Linear, or a group size that does not divide the input width of a layer it would quantize
    (groups run along the input dimension, so only in_features matters)."""
    shapes = linear_shapes(config)
    for index, modifier in enumerate(recipe.modifiers):
        for field in ("targets", "ignore"):
            for pattern in getattr(modifier, field):
                if not any(_pattern_matches(name, pattern) for name in shapes):
                    raise RecipeError(
                        f"recipe.modifiers.{index}.{field}", f"{pattern!r} matches no Linear layer of this model"
                    )
        if modifier.group_size is None:
            continue
        for name, (width, _out) in shapes.items():
            if not _matches(name, modifier.targets) or _matches(name, modifier.ignore):
                continue
            if width % modifier.group_size:
                raise RecipeError(
                    f"recipe.modifiers.{index}.group_size",
                    f"{modifier.group_size} does not divide the input width {width} of {name}; "
                    "choose a divisor, or null for per-channel scales",
                )
