"""schemathesis fuzzes the server's OpenAPI schema with writes enabled and the token sent, so
that ``POST /api/cases`` and ``DELETE /api/cases/{id}`` get past the token to their own
checks: no 5xx, and every status, content type and body as the schema documents."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from conftest import build_phantom_index
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from cxrhash.serve import create_app

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def api_schema(tiny_run: Path, phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("fuzz-writes") / "idx"
    build_phantom_index(tiny_run, phantom_dir, out)
    app = create_app(out, max_upload_bytes=200_000, api_token=TOKEN.encode(), upload_rate=None)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_a_server_error_with_the_token(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
