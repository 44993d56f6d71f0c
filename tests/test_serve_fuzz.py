"""schemathesis fuzzes every operation of the server's OpenAPI schema: no answer is a 5xx,
and every status, content type and body is one the schema documents (issue #13)."""

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


@pytest.fixture(scope="module")
def api_schema(tiny_run: Path, phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("fuzz") / "idx"
    build_phantom_index(tiny_run, phantom_dir, out, keep_source_names=True)
    app = create_app(out, max_upload_bytes=200_000)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples in every run: CI is repeatable
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_a_server_error(case: schemathesis.Case) -> None:
    # Not positive_data_acceptance: a schema cannot say which bytes are a radiograph, so
    # schema-valid uploads are rightly refused (422) when they are not one.
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
    )
