"""A catalog as users read it: its cells with the numbers each job's report gives, counts per state, overall
progress, and per model the recommendation (the smallest artifact within the catalog's ppl tolerance)."""

from __future__ import annotations

from collections import Counter

from api.schemas import CatalogCell, CatalogOut, CatalogRecommendation, CatalogSummary
from storage.models import Catalog, CatalogEntry, Job, JobStatus


def _cell(entry: CatalogEntry, job: Job) -> CatalogCell:
    report = job.report or {}
    perplexity = report.get("perplexity") or {}
    sizes = report.get("size_bytes") or {}
    speed = report.get("speed") or {}
    speedup = next((row["speedup"] for row in speed.get("rows", []) if row.get("batch") == 1), None)
    return CatalogCell(
        model=entry.model_name, recipe=entry.recipe_name, job_id=job.id, status=job.status,
        progress=1.0 if JobStatus(job.status).terminal else job.progress, reused=entry.reused,
        size_bytes=sizes.get("after"), size_ratio=sizes.get("ratio"), ppl_before=perplexity.get("before"),
        ppl_after=perplexity.get("after"), ppl_change_pct=perplexity.get("change_pct"),
        decode_speedup=speedup, error=job.error, artifacts=f"/v1/jobs/{job.id}/artifacts",
    )


def recommend(model: str, cells: list[CatalogCell], tolerance_pct: float) -> CatalogRecommendation:
    """The smallest succeeded artifact whose ppl increase is within the tolerance."""
    done = [cell for cell in cells if cell.status == JobStatus.SUCCEEDED and cell.size_bytes is not None
            and cell.ppl_change_pct is not None]
    within = [cell for cell in done if cell.ppl_change_pct <= tolerance_pct]
    if within:
        best = min(within, key=lambda cell: (cell.size_bytes, cell.ppl_change_pct))
        return CatalogRecommendation(model=model, recipe=best.recipe, job_id=best.job_id, size_bytes=best.size_bytes,
                                     ppl_change_pct=best.ppl_change_pct,
                                     reason=f"smallest of {len(within)} artifacts within +{tolerance_pct:g}% ppl")
    pending = sum(not JobStatus(cell.status).terminal for cell in cells)
    reason = (f"none of {len(done)} finished artifacts is within +{tolerance_pct:g}% ppl"
              + (f"; {pending} still running" if pending else ""))
    return CatalogRecommendation(model=model, recipe=None, job_id=None, size_bytes=None, ppl_change_pct=None,
                                 reason=reason)


def _counts(jobs: list[Job]) -> dict[str, int]:
    return dict(Counter(job.status for job in jobs))


def _progress(cells: list[tuple[CatalogEntry, Job]]) -> float:
    if not cells:
        return 0.0
    return sum(1.0 if JobStatus(job.status).terminal else job.progress for _, job in cells) / len(cells)


def catalog_out(catalog: Catalog, cells: list[tuple[CatalogEntry, Job]]) -> CatalogOut:
    rows = [_cell(entry, job) for entry, job in cells]
    models = list(dict.fromkeys(entry.model_name for entry, _ in cells))
    recipes = list(dict.fromkeys(entry.recipe_name for entry, _ in cells))
    return CatalogOut(
        id=catalog.id, name=catalog.name, tolerance_pct=catalog.tolerance_pct, created_at=catalog.created_at,
        models=models, recipes=recipes, counts=_counts([job for _, job in cells]), progress=_progress(cells),
        cells=rows,
        recommendations=[recommend(model, [row for row in rows if row.model == model], catalog.tolerance_pct)
                         for model in models],
    )


def catalog_summary(catalog: Catalog, cells: list[tuple[CatalogEntry, Job]]) -> CatalogSummary:
    return CatalogSummary(id=catalog.id, name=catalog.name, created_at=catalog.created_at, pairs=len(cells),
                          counts=_counts([job for _, job in cells]), progress=_progress(cells))
