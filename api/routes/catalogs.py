"""/v1/catalogs: a whole model catalog (models x recipes) in one request, its live results and recommendations.

A catalog is validated whole before anything is written: every recipe against every model's config.json, every
URI against the allowed roots and buckets. One bad entry rejects the catalog with a 422 naming that entry, and
no job is created or enqueued."""

from __future__ import annotations

import json
import logging
from pathlib import PurePosixPath
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from api.auth import PrincipalDep
from api.catalog_view import catalog_out, catalog_summary
from api.deps import CeleryDep, SessionDep, SessionFactoryDep, SettingsDep
from api.errors import field_error
from api.idempotency import IdempotencyKey, replay
from api.model_config import ModelUnreadable, read_model_config
from api.schemas import MAX_OFFSET, CatalogCreate, CatalogOut, CatalogPage, problems
from api.scoped import CatalogDep
from compress.errors import RecipeError
from compress.recipes import Recipe, resolve_recipe, validate_recipe_for_model
from shrinkray.services import source_policy
from shrinkray.settings import Settings
from storage.catalogs import (
    CatalogPair,
    cancel_catalog,
    catalog_by_idempotency_key,
    catalog_cells,
    cells_of_catalogs,
    create_catalog,
    list_catalogs,
    retry_failed_cells,
)
from storage.jobs import canonical_sha256
from storage.tenants import Principal
from storage.uris import SourceRejected, parse_source_uri
from workers.outbox import relay_outbox

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/catalogs", tags=["catalogs"], responses=problems(401, 429))

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


class CatalogRejected(Exception):
    """A catalog entry that cannot run, with where it is (["models", 1, "uri"]) and why."""

    def __init__(self, location: list[str | int], message: str, status: int = 422) -> None:
        super().__init__(message)
        self.location, self.message, self.status = location, message, status


async def _document(request: Request, settings: Settings) -> dict[str, Any]:
    """The request body parsed as JSON or YAML (by Content-Type), within the size limit."""
    body = await request.body()
    if len(body) > settings.catalog_max_bytes:
        raise CatalogRejected([], f"the catalog is {len(body)} bytes; the limit is {settings.catalog_max_bytes}",
                              status=413)
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    try:
        if content_type in YAML_TYPES:
            document = yaml.safe_load(body.decode("utf-8"))
        elif content_type == "application/json":
            document = json.loads(body)
        else:
            raise CatalogRejected([], f"send the catalog as application/json or application/yaml, not {content_type}",
                                  status=415)
    except yaml.YAMLError as exc:
        raise CatalogRejected([], f"malformed YAML: {exc}".replace("\n", " ")) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogRejected([], f"malformed JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise CatalogRejected([], "the catalog must be a mapping with 'models' and 'recipes'")
    return document


def _unique(names: list[str], field: str) -> None:
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise CatalogRejected([field, index, "name"], f"name {name!r} is already used by {field}[{seen[name]}]")
        seen[name] = index


def _pairs(spec: CatalogCreate, settings: Settings, principal: Principal) -> list[CatalogPair]:
    """Every model x recipe pair, each checked the way a single job submission is."""
    policy = source_policy(settings, principal.tenant_name)
    recipes: list[tuple[str, Recipe, str | None]] = []
    for index, entry in enumerate(spec.recipes):
        try:
            recipe = resolve_recipe(preset=entry.preset, recipe=entry.recipe)
        except RecipeError as exc:
            raise CatalogRejected(["recipes", index, *exc.field.split(".")], exc.message) from exc
        recipes.append((entry.name or entry.preset or f"recipe-{index}", recipe, entry.preset))
    model_names = [model.name or PurePosixPath(model.uri.rstrip("/")).name or f"model-{index}"
                   for index, model in enumerate(spec.models)]
    _unique(model_names, "models")
    _unique([name for name, _, _ in recipes], "recipes")
    if len(spec.models) * len(recipes) > settings.catalog_max_pairs:
        raise CatalogRejected([], f"{len(spec.models)} models x {len(recipes)} recipes = "
                                  f"{len(spec.models) * len(recipes)} pairs; the limit is {settings.catalog_max_pairs}")
    pairs = []
    for model_index, model in enumerate(spec.models):
        for field in ("uri", "calibration_uri", "eval_uri"):
            value = getattr(model, field)
            if value is not None:
                try:
                    source = parse_source_uri(value, policy)
                except SourceRejected as exc:
                    raise CatalogRejected(["models", model_index, field], str(exc)) from exc
                if field == "uri":
                    try:
                        config = read_model_config(source, settings)
                    except ModelUnreadable as exc:
                        raise CatalogRejected(["models", model_index, "uri"], str(exc)) from exc
        for recipe_index, (recipe_name, recipe, preset) in enumerate(recipes):
            try:
                validate_recipe_for_model(recipe, config)
            except RecipeError as exc:
                raise CatalogRejected(["recipes", recipe_index, *exc.field.split(".")],
                                      f"{exc.message} (for model {model_names[model_index]!r})") from exc
            pairs.append(CatalogPair(
                model_index=model_index, recipe_index=recipe_index, model_name=model_names[model_index],
                recipe_name=recipe_name, model_uri=model.uri, recipe=recipe.model_dump(mode="json"), preset=preset,
                queue="gpu" if spec.device == "gpu" else "cpu", calibration_uri=model.calibration_uri,
                eval_uri=model.eval_uri))
    return pairs


_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": CatalogCreate.model_json_schema(ref_template="#/components/schemas/{model}")},
    "application/yaml": {"schema": {"type": "string", "description": "the same document in YAML"}},
}}}


@router.post("", status_code=201, response_model=CatalogOut, openapi_extra=_BODY, responses=problems(413, 415, 422))
async def submit_catalog(request: Request, session: SessionDep, sessions: SessionFactoryDep, settings: SettingsDep,
                         celery: CeleryDep, principal: PrincipalDep, response: Response,
                         idempotency_key: IdempotencyKey = None) -> CatalogOut:
    """Validate the whole catalog, then create (or reuse) one job per pair and enqueue the new ones."""
    try:
        document = await _document(request, settings)
        try:
            spec = CatalogCreate.model_validate(document)
        except ValidationError as exc:
            raise CatalogRejected(list(exc.errors()[0]["loc"]), exc.errors()[0]["msg"]) from exc
        pairs = _pairs(spec, settings, principal)
    except CatalogRejected as exc:
        return field_error(exc.location, exc.message, status=exc.status)
    document = spec.model_dump(mode="json")
    fingerprint = canonical_sha256(document)
    earlier = None
    try:
        with session.begin():
            if idempotency_key:
                earlier = catalog_by_idempotency_key(session, principal.tenant_id, idempotency_key)
            if earlier is None:
                catalog = create_catalog(session, tenant_id=principal.tenant_id, name=spec.name,
                                         tolerance_pct=spec.tolerance_pct, spec=document, pairs=pairs,
                                         fingerprint=fingerprint, idempotency_key=idempotency_key)
    except IntegrityError:  # a concurrent request committed the same key a moment ago
        earlier = catalog_by_idempotency_key(session, principal.tenant_id, idempotency_key) if idempotency_key else None
        if earlier is None:
            raise
    if earlier is not None:
        replay(response, idempotency_key or "", earlier.fingerprint, fingerprint)
        return catalog_out(earlier, catalog_cells(session, earlier.id))
    _relay(sessions, celery)
    return catalog_out(catalog, catalog_cells(session, catalog.id))


def _relay(sessions, celery) -> None:  # type: ignore[no-untyped-def]
    try:
        relay_outbox(sessions, celery)
    except Exception:  # committed; the maintenance loop relays once the broker is back
        log.warning("could not relay catalog jobs now", exc_info=True)


@router.get("", response_model=CatalogPage)
def get_catalogs(session: SessionDep, principal: PrincipalDep, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                 offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> CatalogPage:
    catalogs, total = list_catalogs(session, tenant_id=principal.tenant_id, limit=limit, offset=offset)
    cells = cells_of_catalogs(session, [catalog.id for catalog in catalogs])
    return CatalogPage(items=[catalog_summary(c, cells.get(c.id, [])) for c in catalogs], total=total,
                       limit=limit, offset=offset)


@router.get("/{catalog_id}", response_model=CatalogOut, responses=problems(404))
def get_catalog(catalog: CatalogDep, session: SessionDep) -> CatalogOut:
    return catalog_out(catalog, catalog_cells(session, catalog.id))


@router.post("/{catalog_id}/retry", response_model=CatalogOut, responses=problems(404))
def retry_catalog(catalog: CatalogDep, session: SessionDep, sessions: SessionFactoryDep,
                  celery: CeleryDep) -> CatalogOut:
    """A new job for every failed or cancelled pair."""
    retry_failed_cells(session, catalog.id)
    session.commit()
    _relay(sessions, celery)
    return catalog_out(catalog, catalog_cells(session, catalog.id))


@router.post("/{catalog_id}/cancel", response_model=CatalogOut, responses=problems(404))
def cancel(catalog: CatalogDep, session: SessionDep) -> CatalogOut:
    """Cancel the unfinished jobs this catalog created; jobs it reused from earlier submissions carry on."""
    cancel_catalog(session, catalog.id)
    session.commit()
    return catalog_out(catalog, catalog_cells(session, catalog.id))
