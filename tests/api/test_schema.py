import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db

PATHS = [
    "/api/auth/token/",
    "/api/datasets/",
    "/api/datasets/{id}/",
    "/api/datasets/imports/",
    "/api/images/",
    "/api/images/{id}/",
    "/api/regions/",
    "/api/regions/{id}/",
    "/api/runs/",
    "/api/runs/{id}/",
]


def test_the_schema_is_openapi_3_with_every_endpoint(api):
    response = api.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert set(PATHS) <= set(schema["paths"])
    region_params = {p["name"] for p in schema["paths"]["/api/regions/"]["get"]["parameters"]}
    assert {"dataset", "image", "status", "origin", "cursor", "page_size"} <= region_params
    box = schema["components"]["schemas"]["Region"]["properties"]["box"]
    assert (box["type"], box["minItems"], box["maxItems"]) == ("array", 4, 4)
    assert schema["paths"]["/api/auth/token/"]["post"].get("security", []) == []


def test_the_schema_generates_without_warnings_and_validates(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert set(PATHS) <= set(yaml.safe_load(target.read_text())["paths"])


def test_the_docs_page_renders_from_local_assets(api):
    response = api.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn." not in html
