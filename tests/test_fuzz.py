"""Property-based API tests: schemathesis fuzzes every operation of the live OpenAPI schema.

The real `keel serve` runs in its own process on a throwaway migrated database, and every
response goes through all of schemathesis' default checks: no 5xx, status codes, content
types, headers and bodies conforming to the schema, and so on. Each operation is fuzzed
anonymously and signed in. New endpoints are covered as soon as they appear in /openapi.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.core.result import Ok
from schemathesis.specs.openapi import unregister_string_format

from keel.bulk.router import ROW_LEVEL_VALIDATION
from keel.core.openapi import BODY_ERRORS
from keel.migrations import runner
from tests.conftest import asyncpg_dsn, url_for_database
from tests.processes import free_port

MAX_EXAMPLES = 50  # per operation, in the fuzzing phase
# Every operation with a body may answer this 400 to a malformed body; it is not semantic.
BODY_400 = BODY_ERRORS["400"]
STARTUP_TIMEOUT_S = 60.0
# RFC 5322 dot-atom characters (no dots, so none can lead, trail or double).
EMAIL_LOCAL_CHARACTERS = string.ascii_lowercase + string.digits + "!#$%&'*+-/=?^_`{|}~"
# schemathesis' default for `positive_data_acceptance`.
POSITIVE_DATA_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
ADMIN_EMAIL, ADMIN_USERNAME, ADMIN_PASSWORD = (
    "fuzz-admin@example.com",
    "fuzz_admin",
    "fuzzing admin 123",
)


FASTAPI_422 = "Validation Error"  # FastAPI's own description of its request-validation 422


def _semantic_codes(responses: dict[str, Any], generic: dict[str, str]) -> list[str]:
    """The 4xx an operation documents with its own words, not the generic body/validation ones."""
    return [
        code
        for code, description in generic.items()
        if responses.get(code, {}).get("description", description) != description
    ]


@schemathesis.serializer("application/x-ndjson")
def _ndjson_as_text(context: schemathesis.SerializationContext, value: Any) -> bytes:
    """The import endpoints document NDJSON bodies as strings: send the string as is."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


def fuzz_config(document: dict[str, Any], base_url: str) -> dict[str, Any]:
    """All default checks, deterministic generation, and one documented exception.

    Some operations document their own 400 or 422 for input no schema can rule out, e.g. "the
    token is invalid or expired" or "an import row names an unknown author": a schema-valid
    random token is still not a valid token. For those operations only,
    `positive_data_acceptance` also accepts those documented statuses.
    """
    generic = {"400": BODY_400, "422": FASTAPI_422}
    operations = [
        operation
        for path_item in document.get("paths", {}).values()
        for operation in path_item.values()
        if isinstance(operation, dict) and "operationId" in operation
    ]
    semantic = [
        {
            "include-operation-id": operation["operationId"],
            "checks": {
                "positive_data_acceptance": {"expected-statuses": [*POSITIVE_DATA_ACCEPTED, *codes]}
            },
        }
        for operation in operations
        if (codes := _semantic_codes(operation.get("responses", {}), generic))
    ]
    # Imports validate row by row: with atomic=false a schema-violating row is reported in
    # a 200 and the valid rows land. That is the documented contract, not a missed rejection.
    row_level = [
        {
            "include-operation-id": operation["operationId"],
            "checks": {"negative_data_rejection": {"enabled": False}},
        }
        for operation in operations
        if operation.get(ROW_LEVEL_VALIDATION)
    ]
    return {
        "base-url": base_url,
        # Deterministic: the same cases on every run, so CI failures reproduce locally.
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "operations": semantic + row_level,
    }


def in_thread[T](function: Callable[..., T], *args: Any) -> T:
    """Run function in a worker thread: asyncio.run there can't disturb pytest's event loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


def run_async[T](coroutine_function: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return in_thread(lambda: asyncio.run(coroutine_function()))


def execute(dsn: str, sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run_async(go)


@pytest.fixture(scope="module")
def fuzz_database_url(database_url: str) -> Iterator[str]:
    """A migrated database of its own: fuzzed writes never reach the other tests' database."""
    admin_dsn = asyncpg_dsn(url_for_database(database_url, "postgres"))
    name = f"keel_fuzz_{uuid.uuid4().hex[:12]}"
    execute(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        url = url_for_database(database_url, name)
        in_thread(runner.upgrade, url)
        yield url
    finally:
        execute(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def live_server(fuzz_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real `keel serve` in its own process, on a free port; yields its base URL."""
    data_dir = tmp_path_factory.mktemp("fuzz-data")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "SMTP_HOST", "PROMETHEUS_MULTIPROC_DIR"}
    }
    env.update(
        DATABASE_URL=fuzz_database_url,
        ENVIRONMENT="testing",
        KEEL_DATA_DIR=str(data_dir),
        LOG_JSON="true",
        # Hundreds of requests a minute from one client: with limits on, nearly every case
        # would be a 429 and the endpoints themselves would go untested (limits have their
        # own tests).
        RATE_LIMIT_ENABLED="false",
        FIRST_SUPERUSER_EMAIL=ADMIN_EMAIL,
        FIRST_SUPERUSER_USERNAME=ADMIN_USERNAME,
        FIRST_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
    )
    port = free_port()
    log = (data_dir / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "keel", "serve", "--port", str(port), "--no-migrate"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _answers(f"{base_url}/health"):
            if server.poll() is not None:
                pytest.fail(f"keel serve exited during startup; see {log.name}")
            if time.monotonic() > deadline:
                pytest.fail(f"keel serve did not start within {STARTUP_TIMEOUT_S}s")
            time.sleep(0.1)
        yield base_url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(STARTUP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def deliverable_emails() -> Iterator[None]:
    """Generate `format: email` values in ordinary domains only.

    schemathesis draws some addresses from the special-use `.test` TLD, which email-validator
    (behind pydantic's EmailStr) rejects by design; JSON Schema cannot express that rule, so
    `positive_data_acceptance` would report those 422s as "schema-valid request rejected".
    Malformed addresses are still generated by the negative phase.
    """
    label = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8)
    local = st.text(alphabet=EMAIL_LOCAL_CHARACTERS, min_size=1, max_size=10)
    top_level = st.sampled_from(["com", "org", "net", "io", "dev"])
    schemathesis.openapi.format("email", st.builds("{}@{}.{}".format, local, label, top_level))
    yield
    unregister_string_format("email")


@pytest.fixture(scope="module")
def api_schema(live_server: str, deliverable_emails: None) -> schemathesis.BaseSchema:
    """The schema exactly as the live server publishes it."""
    response = httpx.get(f"{live_server}/openapi.json", timeout=30)
    response.raise_for_status()
    document = response.json()
    config = schemathesis.Config.from_dict(fuzz_config(document, live_server))
    return schemathesis.openapi.from_dict(document, config=config)


@pytest.fixture(autouse=True)
def _pytest9_node_id_shim(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's lazy loader reads `item._nodeid`, which pytest 9.2 no longer has.

    It only uses it to decorate report names (pytest 9 reports each operation as a subtest
    labelled "METHOD /path" anyway), so the public node id is a faithful stand-in.
    """
    if not hasattr(request.node, "_nodeid"):
        setattr(request.node, "_nodeid", request.node.nodeid)  # noqa: B010


def test_schema_lists_the_health_endpoints(api_schema: schemathesis.BaseSchema) -> None:
    """Guards against fuzzing nothing: an empty or unreachable schema would pass vacuously."""
    results = list(api_schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results
    labels = {result.ok().label for result in results if isinstance(result, Ok)}
    assert {"GET /health", "GET /health/ready", "GET /health/startup"} <= labels


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_api_conforms_to_its_schema_anonymously(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate()


class SignedIn:
    """A regular user's access token, renewed whenever fuzzing ends the session.

    Fuzzed calls may log the session out, or rename the account; then a fresh account
    is signed up and signed in, so every case runs with a working token.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.headers: dict[str, str] = {}
        self.user_id = ""  # also the id of the account's personal organization

    def current(self) -> dict[str, str]:
        if self.headers:
            me = httpx.get(f"{self.base_url}/api/v1/users/me", headers=self.headers, timeout=10)
            if me.status_code == 200:
                self.user_id = me.json()["id"]
                return self.headers
        self.headers = {"Authorization": f"Bearer {self.fresh_token()}"}
        me = httpx.get(f"{self.base_url}/api/v1/users/me", headers=self.headers, timeout=10)
        self.user_id = me.json()["id"]
        return self.headers

    def fresh_token(self) -> str:
        name = f"fuzzer_{uuid.uuid4().hex[:10]}"
        password = "fuzzing password 123"
        signup = httpx.post(
            f"{self.base_url}/api/v1/auth/signup",
            json={"email": f"{name}@example.com", "username": name, "password": password},
            timeout=10,
        )
        signup.raise_for_status()
        return self.login(name, password)

    def login(self, username: str, password: str) -> str:
        login = httpx.post(
            f"{self.base_url}/api/v1/auth/login",
            data={"username": username, "password": password},
            timeout=10,
        )
        login.raise_for_status()
        token: str = login.json()["access_token"]
        return token


@pytest.fixture(scope="module")
def signed_in(live_server: str) -> SignedIn:
    return SignedIn(live_server)


def in_own_organization(case: schemathesis.Case[Any], caller: SignedIn) -> None:
    """Point a well-formed `org_id` at the caller's personal organization, so the
    organization's operations are fuzzed past the membership check (a random id is a
    404 before the body is read). A malformed one stays: it is what the case tests."""
    parameters = case.path_parameters or {}
    try:
        uuid.UUID(str(parameters.get("org_id")))
    except ValueError:
        return
    parameters["org_id"] = caller.user_id


@schema.parametrize()
def test_api_conforms_to_its_schema_signed_in(
    case: schemathesis.Case[Any], signed_in: SignedIn
) -> None:
    headers = signed_in.current()
    in_own_organization(case, signed_in)
    case.call_and_validate(headers=headers)


class SignedInAdmin(SignedIn):
    """The first superuser's access token (the server creates that account at startup)."""

    def fresh_token(self) -> str:
        return self.login(ADMIN_USERNAME, ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def signed_in_admin(live_server: str) -> SignedInAdmin:
    return SignedInAdmin(live_server)


# Admins may do anything, including disabling accounts, so the admin-only operations are
# fuzzed as an admin; the rest already run anonymously and as a regular user above.
@schema.include(path_regex="^/api/v1/admin/").parametrize()
def test_admin_operations_conform_to_their_schema(
    case: schemathesis.Case[Any], signed_in_admin: SignedInAdmin
) -> None:
    case.call_and_validate(headers=signed_in_admin.current())
