"""schemathesis against the OpenAPI spec, on real Postgres and Redis: generated requests to every operation
must never get a 5xx, and every response must match what the spec documents (status code, body schema); once
as the single-user deployment and once as a shared one, with a tenant's API key."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from shrinkray.settings import Settings
from tests.conftest import tenant_keys

EXAMPLES_PER_OPERATION = 100
# Not "schema-valid data must be accepted": a valid-looking model URI that names no model is refused on purpose.
CHECKS = [schemathesis.checks.not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


@pytest.mark.parametrize("shared", [False, True], ids=["single-user", "api-keys"])
def test_no_server_errors_and_responses_match_the_spec(api_settings: Settings, shared: bool) -> None:
    settings_used = api_settings.model_copy(update={"auth_required": shared, "rate_limit_requests": 0})
    headers = {}
    if shared:
        headers["Authorization"] = f"Bearer {tenant_keys(settings_used.database_url, 'fuzz')[0]}"
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings_used, run_maintenance=False))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    calls: dict[str, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case) -> None:  # type: ignore[no-untyped-def]
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
            case.call_and_validate(checks=CHECKS, headers=headers)

        call()
    print(calls)
    # every operation with parameters was really exercised (GET /healthz takes none: one case)
    assert all(count >= 50 for label, count in calls.items() if label != "GET /healthz"), calls
