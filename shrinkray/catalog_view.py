"""A catalog as the CLI prints it: one line per model x recipe with its numbers, then each model's pick."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_catalog_file(path: Path) -> dict[str, Any]:
    """The catalog document of a YAML or JSON file; model and data paths without a scheme become file://
    URIs, relative to the file's directory. ValueError with a readable message for a malformed file."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML or JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"{path} must hold a mapping with 'models' and 'recipes'")
    for model in document.get("models") or []:
        if not isinstance(model, dict):
            continue
        for field in ("uri", "calibration_uri", "eval_uri"):
            value = model.get(field)
            if isinstance(value, str) and "://" not in value:
                model[field] = (path.parent / value).resolve().as_uri()
    return document


def _number(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_catalog(catalog: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(catalog["counts"].items()))
    lines = [f"catalog {catalog['id']} {catalog.get('name') or ''}".rstrip() + f": {counts}",
             f"{'model':<24} {'recipe':<18} {'status':<10} {'size MB':>9} {'ratio':>6} {'ppl before':>10} "
             f"{'ppl after':>10} {'change %':>9} {'speedup':>8}"]
    for cell in catalog["cells"]:
        size = None if cell["size_bytes"] is None else cell["size_bytes"] / 1e6
        lines.append(f"{cell['model'][:24]:<24} {cell['recipe'][:18]:<18} {cell['status']:<10} "
                     f"{_number(size, '.1f'):>9} {_number(cell['size_ratio'], '.2f'):>6} "
                     f"{_number(cell['ppl_before'], '.3f'):>10} {_number(cell['ppl_after'], '.3f'):>10} "
                     f"{_number(cell['ppl_change_pct'], '+.2f'):>9} {_number(cell['decode_speedup'], '.2f'):>8}")
        if cell["error"]:
            lines.append(f"{'':<24} error: {cell['error'][:200]}")
    lines.append(f"recommended (smallest within +{catalog['tolerance_pct']:g}% ppl):")
    for pick in catalog["recommendations"]:
        choice = pick["recipe"] or "none yet"
        lines.append(f"  {pick['model']}: {choice} ({pick['reason']})")
    return "\n".join(lines)
