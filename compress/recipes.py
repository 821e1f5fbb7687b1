"""Recipes: the validated data that says what to do to a model, and the named presets.

A recipe is checked completely (and against the model's config.json) before any compute starts, so a
bad one is rejected at submission with the field that is wrong, never half-way through a GPU job.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from typing import Annotated, ClassVar, Literal, Union

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from compress.errors import RecipeError
from compress.layers import unsupported_reason


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaseModifier(_Strict):
    """What every modifier has: its method and the Linear layers it applies to (compressed-tensors' matching:
    a class name, a layer name or its last part, or `re:` and a regex)."""

    stage: ClassVar[Literal["smooth", "prune", "quantize"]]
    method: str
    targets: list[str] = Field(default_factory=lambda: ["Linear"], min_length=1)
    ignore: list[str] = Field(default_factory=lambda: ["lm_head"])


class WeightQuantModifier(BaseModifier):
    """Weight quantization of the targeted Linear layers, optionally with their inputs quantized at run time
    (W8A8, W4A8); methods subclass it."""

    stage: ClassVar[Literal["quantize"]] = "quantize"
    bits: Literal[3, 4, 8]
    type: Literal["int", "float"] = Field(
        default="int", description="float: FP8 E4M3 weights (bits 8, symmetric, one scale per output channel)"
    )
    group_size: int | None = Field(default=None, gt=0, description="None: one scale per output channel")
    symmetric: bool = Field(
        default=True,
        description="asymmetric weights carry a zero point per group; they are stored unpacked (int8 codes)",
    )
    activations: Literal["int8", "fp8"] | None = Field(
        default=None, description="quantize the layer inputs per token at run time (dynamic scales): W8A8, W4A8"
    )
    integer_scale: bool = Field(
        default=False,
        description="group scales = a per-row power of two x an integer <= 1024, stored fp32 (integer-only W4A8)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> WeightQuantModifier:
        if self.type == "float" and (self.bits != 8 or self.group_size is not None or not self.symmetric):
            raise ValueError("float (FP8 E4M3) weights take bits 8, group_size null and symmetric true")
        if self.activations is not None and (self.activations == "fp8") != (self.type == "float"):
            raise ValueError("int8 activations go with int weights and fp8 activations with float weights")
        if self.integer_scale and (self.type != "int" or self.group_size is None):
            raise ValueError("integer_scale needs integer weights with a group_size")
        if self.activations is not None and not self.symmetric:
            raise ValueError("quantized activations need symmetric weights (integer kernels have no zero points)")
        return self


class SmoothQuantModifier(BaseModifier):
    """SmoothQuant (Xiao et al. 2023): move activation outliers into the weights with per-channel scales folded
    into the norm before each group of Linears, so int8 activations lose less. Runs before quantization, on the
    groups whose every reader it targets; the full-precision model computes the same function after it."""

    stage: ClassVar[Literal["smooth"]] = "smooth"
    method: Literal["smoothquant"] = "smoothquant"
    alpha: float = Field(default=0.8, ge=0, le=1, description="migration strength: 0 keeps it all in activations")


class PruneModifier(BaseModifier):
    """Sparsity: a fraction of every row's weights (unstructured) or N of every M consecutive input weights
    (semi-structured, e.g. 2:4, which sparse tensor cores run) are set to zero. Runs before quantization."""

    stage: ClassVar[Literal["prune"]] = "prune"
    sparsity: float | None = Field(default=None, gt=0, lt=1, description="unstructured: fraction of zeros")
    pattern: str | None = Field(
        default=None, pattern=r"^[1-9][0-9]*:[1-9][0-9]*$", description="'N:M': N kept of every M"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> PruneModifier:
        if (self.sparsity is None) == (self.pattern is None):
            raise ValueError("give exactly one of sparsity (unstructured) or pattern ('2:4')")
        if self.pattern is not None:
            kept, of = self.n_m
            if kept >= of:
                raise ValueError(f"pattern {self.pattern!r} keeps every weight; N must be below M")
        return self

    @property
    def n_m(self) -> tuple[int, int]:
        """(kept, group) of the N:M pattern."""
        assert self.pattern is not None
        kept, of = self.pattern.split(":")
        return int(kept), int(of)


class SparseGPTModifier(PruneModifier):
    """SparseGPT (Frantar & Alistarh 2023): choose the weights to drop by their OBS saliency and update the
    kept ones to compensate, through the inverse Hessian of the layer's inputs."""

    method: Literal["sparsegpt"] = "sparsegpt"
    damp: float = Field(default=0.01, gt=0, le=1, description="fraction of the mean Hessian diagonal added to it")
    block_size: int = Field(default=128, gt=0, description="columns per lazy batch update")


class WandaModifier(PruneModifier):
    """Wanda (Sun et al. 2023): drop the weights with the smallest |W|·‖X‖ per row; no weight update."""

    method: Literal["wanda"] = "wanda"


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

    @model_validator(mode="after")
    def _integer_only(self) -> GPTQModifier:
        if self.type != "int":
            raise ValueError("GPTQ rounds to an integer grid; use method 'rtn' for FP8 weights")
        return self


class AWQModifier(WeightQuantModifier):
    """AWQ (Lin et al. 2024): per input channel, search the power of the mean activation magnitude that, folded
    into the producing norm and the Linears, minimises the quantized output error; then round to nearest.
    Linears whose input no norm produces (o_proj, down_proj in Llama) are rounded unscaled."""

    method: Literal["awq"] = "awq"
    grid: int = Field(default=20, ge=2, le=100, description="candidate exponents between 0 and 1")
    samples: int = Field(default=16384, gt=0, description="input tokens per group the search sees")


# method name -> modifier class. A new method adds one class here.
MODIFIERS: dict[str, type[BaseModifier]] = {
    "rtn": RTNModifier,
    "gptq": GPTQModifier,
    "awq": AWQModifier,
    "smoothquant": SmoothQuantModifier,
    "sparsegpt": SparseGPTModifier,
    "wanda": WandaModifier,
}

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
    "w8a16": Recipe(modifiers=[GPTQModifier(bits=8, group_size=None)]),
    "w4a16-rtn": Recipe(modifiers=[RTNModifier(bits=4, group_size=128, symmetric=True)]),
    "w4a16-awq": Recipe(modifiers=[AWQModifier(bits=4, group_size=128)]),
    "w8a16-rtn": Recipe(modifiers=[RTNModifier(bits=8, group_size=None, symmetric=True)]),
    "w8a8-int8": Recipe(
        modifiers=[SmoothQuantModifier(alpha=0.8), GPTQModifier(bits=8, group_size=None, activations="int8")]
    ),
    "w8a8-fp8": Recipe(modifiers=[RTNModifier(bits=8, type="float", activations="fp8")]),
    "w8a16-fp8": Recipe(modifiers=[RTNModifier(bits=8, type="float")]),
    "w4a8": Recipe(modifiers=[GPTQModifier(bits=4, group_size=128, activations="int8")]),
    "2of4": Recipe(modifiers=[SparseGPTModifier(pattern="2:4")]),
    "2of4-w4a16": Recipe(modifiers=[SparseGPTModifier(pattern="2:4"), GPTQModifier(bits=4, group_size=128)]),
    "sparse50": Recipe(modifiers=[SparseGPTModifier(sparsity=0.5)]),
    "2of4-wanda": Recipe(modifiers=[WandaModifier(pattern="2:4")]),
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
    config.json alone, so any model transformers knows is checked without reading a weight (and one Shrinkray
    cannot compress is refused: unsupported_reason)."""
    if config.get("auto_map"):
        raise RecipeError("model", "config.json asks for remote code (auto_map); it is never run")
    linears, unsupported = _linear_shapes(json.dumps(config, sort_keys=True))
    if unsupported is not None:
        raise RecipeError("model", unsupported)
    return {name: (fan_in, fan_out) for name, fan_in, fan_out in linears}


# transformers builds a model under torch's process-wide default dtype, set and restored around the build; two
# threads of the API interleaving that would leave the wrong default behind (seen: bf16 after concurrent
# submissions), so builds take turns. Catalogs check many recipes against one config: the shapes are cached.
_BUILD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=64)
def _linear_shapes(config_json: str) -> tuple[tuple[tuple[str, int, int], ...], str | None]:
    """The Linears' (name, in, out) and, for a model that cannot be compressed, why (unsupported_reason)."""
    config = json.loads(config_json)
    try:
        with _BUILD_LOCK:  # transformers' lazy first import is not thread-safe either
            from transformers import AutoConfig, AutoModelForCausalLM

            fields = {key: value for key, value in config.items() if key != "model_type"}
            model_config = AutoConfig.for_model(str(config.get("model_type")), **fields)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)
    except (ValueError, KeyError, TypeError) as exc:
        raise RecipeError("model", f"transformers cannot build this architecture: {exc}") from exc
    linears = tuple((name, module.in_features, module.out_features)
                    for name, module in model.named_modules() if isinstance(module, nn.Linear))
    return linears, unsupported_reason(model)


def _matches(name: str, patterns: list[str]) -> bool:
    """compressed-tensors' matching on names: `re:` searches a regex, else the name or its last part."""
    return any(_pattern_matches(name, pattern) for pattern in patterns)


def _pattern_matches(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.match(pattern[3:], name) is not None
    return pattern in (name, name.rsplit(".", 1)[-1], "Linear")


def assign_layers(recipe: Recipe, names: list[str]) -> dict[str, dict[str, int]]:
    """Layer name -> {stage: index of the modifier that applies}. A layer gets at most one modifier per stage
    (prune, quantize); where several of one stage match, the later one wins, which is how a recipe overrides
    its general rule for chosen layers. A modifier left with no layer at all is an error."""
    owner: dict[str, dict[str, int]] = {}
    for index, modifier in enumerate(recipe.modifiers):
        for name in names:
            if _matches(name, modifier.targets) and not _matches(name, modifier.ignore):
                owner.setdefault(name, {})[modifier.stage] = index
    owned = {index for stages in owner.values() for index in stages.values()}
    for index, _modifier in enumerate(recipe.modifiers):
        if index not in owned:
            raise RecipeError(
                f"recipe.modifiers.{index}.targets",
                "applies to no layer: its targets match nothing outside ignore, or later modifiers override them all",
            )
    return owner


def _width_rule(modifier: BaseModifier) -> tuple[str, int, str] | None:
    """(field, divisor, hint) for a modifier whose layers need an input width divisible by something."""
    if isinstance(modifier, WeightQuantModifier) and modifier.group_size is not None:
        return "group_size", modifier.group_size, "choose a divisor, or null for per-channel scales"
    if isinstance(modifier, PruneModifier) and modifier.pattern is not None:
        return "pattern", modifier.n_m[1], "N:M groups run along the input dimension"
    return None


def validate_recipe_for_model(recipe: Recipe, config: dict) -> None:
    """Reject, before any compute, a recipe that cannot apply to this model: a target or ignore pattern that
    matches no Linear, a modifier left with no layer, or a group size or N:M group that does not divide the
    input width of a layer it applies to (both run along the input dimension, so only in_features matters)."""
    shapes = linear_shapes(config)
    for index, modifier in enumerate(recipe.modifiers):
        for field in ("targets", "ignore"):
            for pattern in getattr(modifier, field):
                if not any(_pattern_matches(name, pattern) for name in shapes):
                    raise RecipeError(
                        f"recipe.modifiers.{index}.{field}", f"{pattern!r} matches no Linear layer of this model"
                    )
    check_widths(recipe, assign_layers(recipe, list(shapes)), {name: shape[0] for name, shape in shapes.items()})


def check_widths(recipe: Recipe, owner: dict[str, dict[str, int]], widths: dict[str, int]) -> None:
    """Every group size and N:M group divides the input width of each layer its modifier applies to."""
    for name, stages in owner.items():
        for index in stages.values():
            rule = _width_rule(recipe.modifiers[index])
            if rule is not None and widths[name] % rule[1]:
                field, divisor, hint = rule
                raise RecipeError(
                    f"recipe.modifiers.{index}.{field}",
                    f"{divisor} does not divide the input width {widths[name]} of {name}; {hint}",
                )
