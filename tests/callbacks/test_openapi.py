"""openapi.yaml and the app agree: the same routes, and the examples pass the app's validators."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from openapi_spec_validator import validate

from callbacks.app import create_app
from callbacks.routes.verify_endpoints import VerifyCheckRequest, VerifyStartRequest
from schemas.twilio import TwilioInboundMessage, TwilioStatusCallback
from sms_relay.kinds.order_shipped import ORDER_SHIPPED
from sms_relay.kinds.registry import EVENT_KINDS
from sms_relay.kinds.support_ticket_created import SUPPORT_TICKET_CREATED
from sms_relay.settings import Settings, TwilioSettings

ROOT = Path(__file__).resolve().parents[2]

# The app's own validator of each request body in the document.
VALIDATORS: dict[tuple[str, str], Any] = {
    ("post", "/twilio/status-callback"): TwilioStatusCallback.model_validate,
    ("post", "/twilio/inbound"): TwilioInboundMessage.model_validate,
    ("post", "/api/verify/start"): VerifyStartRequest.model_validate,
    ("post", "/api/verify/check"): VerifyCheckRequest.model_validate,
    ("post", "/api/order-shipped-sms"): lambda body: ORDER_SHIPPED.parse(json.dumps(body).encode()),
    ("post", "/api/events/{kind}"): lambda body: SUPPORT_TICKET_CREATED.parse(
        json.dumps(body).encode()
    ),
}


def load_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    return document


def test_the_document_is_valid_openapi() -> None:
    document = load_document()
    validate(document)  # raises OpenAPIValidationError with the offending path
    assert document_operations(document), "an empty document would be valid too"


def app_routes() -> set[tuple[str, str]]:
    settings = Settings(twilio=TwilioSettings(account_sid="AC" + "0" * 32, auth_token="t"))
    app: web.Application = create_app(settings)
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def document_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def check(document: dict[str, Any], schema: dict[str, Any], value: Any, where: str) -> None:
    """The subset of JSON Schema the document uses; fails with the location."""
    schema = resolve(document, schema)
    kinds = {
        "object": dict,
        "string": str,
        "array": list,
        "integer": int,
        "boolean": bool,
        "null": type(None),
    }
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert isinstance(value, tuple(kinds[t] for t in allowed)), f"{where}: not {allowed}"
    if "const" in schema:
        assert value == schema["const"], where
    if "enum" in schema:
        assert value in schema["enum"], where
    if isinstance(value, str):
        assert len(value) >= schema.get("minLength", 0), where
        assert len(value) <= schema.get("maxLength", len(value)), where
        assert re.search(schema.get("pattern", ""), value), f"{where}: pattern"
    if isinstance(value, dict):
        check_object(document, schema, value, where)
    if isinstance(value, list):
        for index, item in enumerate(value):
            check(document, schema.get("items", {}), item, f"{where}[{index}]")


def check_object(
    document: dict[str, Any], schema: dict[str, Any], value: dict[str, Any], where: str
) -> None:
    for name in schema.get("required", []):
        assert name in value, f"{where}: {name} missing"
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            check(document, properties[name], item, f"{where}.{name}")
        else:
            assert extra is not False, f"{where}: unexpected {name}"
            if isinstance(extra, dict):
                check(document, extra, item, f"{where}.{name}")


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    document = load_document()
    assert document["openapi"].startswith("3.1")
    assert document_operations(document) == app_routes()


def test_every_kind_parameter_lists_the_registrys_kinds() -> None:
    document = load_document()
    kinds = {
        (path, parameter["in"]): parameter["schema"]["enum"]
        for path, item in document["paths"].items()
        for operation in item.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "kind"
    }
    assert set(kinds) == {("/api/events/{kind}", "path"), ("/twilio/status-callback", "query")}
    assert all(listed == list(EVENT_KINDS) for listed in kinds.values()), kinds


def test_every_reference_resolves() -> None:
    document = load_document()
    references = re.findall(r'"\$ref": "([^"]+)"', json.dumps(document))
    assert references
    for reference in references:
        resolve(document, {"$ref": reference})


@pytest.mark.parametrize(("method", "path"), sorted(VALIDATORS))
def test_request_examples_match_the_schema_and_the_app_accepts_them(method: str, path: str) -> None:
    document = load_document()
    body = document["paths"][path][method]["requestBody"]
    ((_media, content),) = body["content"].items()
    example = content["example"]
    check(document, content["schema"], example, f"{method} {path}")
    assert VALIDATORS[(method, path)](example) is not None  # raises when the app refuses it


def test_response_examples_match_their_schemas() -> None:
    document = load_document()
    checked = 0
    for path, item in document["paths"].items():
        for operation in item.values():
            for status, response in operation["responses"].items():
                for media, content in response.get("content", {}).items():
                    if "example" in content and media == "application/json":
                        check(document, content["schema"], content["example"], f"{path} {status}")
                        checked += 1
    assert checked >= 5
