"""The hostile-input battery: every request here must be refused with a 4xx that says why. It runs against a shared
deployment (API keys required, two tenants, a revoked key, one job and one catalog of the first tenant for the
second to reach for); tests/security asserts every case and bench/hostile_inputs.py prints the figures."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from shrinkray.services import session_factory
from shrinkray.settings import Settings
from storage.db import transaction
from storage.tenants import revoke_key
from tests.conftest import SHARED, SHARED_MODEL, model_stub, tenant_keys

MISSING = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    method: str
    path: str
    as_tenant: str = "a"  # "a", "b" or "anonymous"
    request: dict[str, Any] = field(default_factory=dict)  # httpx keyword arguments
    statuses: tuple[int, ...] = (422,)  # the refusals that are right for this case


@dataclass(frozen=True)
class Outcome:
    case: Case
    status: int
    message: str

    @property
    def refused(self) -> bool:
        """A 4xx that the case allows, with a message a person can act on."""
        return self.status in self.case.statuses and len(self.message) >= 10


def _job(uri: str, **extra: Any) -> dict[str, Any]:
    return {"json": {"model_uri": uri, "preset": "w4a16-rtn", **extra}}


def bad_models(root: Path) -> dict[str, Path]:
    """Model directories, each wrong in one way the API must notice before queueing anything."""
    made: dict[str, Path] = {}

    def stub(name: str, **config: Any) -> Path:
        made[name] = model_stub(root / name, **config)
        return made[name]

    stub("pickle-bin").joinpath("pytorch_model.bin").write_bytes(b"\x80\x04")
    nested = stub("pickle-nested") / "checkpoints"
    nested.mkdir()
    (nested / "step-10.pt").write_bytes(b"\x80\x04")
    stub("remote-code", auto_map={"AutoModelForCausalLM": "modeling_x.X"})
    stub("remote-tokenizer").joinpath("tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": [
        "tokenization_x.X", None]}}))
    stub("config-oversized").joinpath("config.json").write_text(json.dumps({"model_type": "llama",
                                                                           "pad": "x" * (1 << 20)}))
    stub("config-malformed").joinpath("config.json").write_text('{"model_type": "llama",')
    stub("config-not-object").joinpath("config.json").write_text("[]")
    stub("tokenizer-malformed").joinpath("tokenizer_config.json").write_bytes(b"\xff\xfe{")
    with stub("tokenizer-oversized").joinpath("tokenizer.json").open("wb") as sparse:
        sparse.truncate((128 << 20) + 1)  # sparse: the size is checked, never the bytes
    stub("safetensors-truncated").joinpath("model.safetensors").write_bytes(b"\x10\x00")
    stub("safetensors-forged-header").joinpath("model.safetensors").write_bytes(
        (1 << 40).to_bytes(8, "little") + b"{}")
    stub("no-weights").joinpath("model.safetensors").unlink()
    secret = root / "outside-secret"
    secret.write_text("aws_secret_access_key=...")
    os.symlink(secret, stub("link-out") / "tokenizer.model")
    os.symlink("/etc", stub("link-dir-out") / "extra")
    made["no-config"] = root / "no-config"
    made["no-config"].mkdir()
    return made


def battery(models: dict[str, Path], job_id: str, catalog_id: str, artifact_bucket: str,
            revoked_key: str, max_body_bytes: int) -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    # Authentication and tenancy: no key, bad keys, another tenant's ids (404, as if they did not exist).
    for name, header in (("no key", None), ("basic auth", "Basic YTpi"), ("malformed key", "Bearer abc"),
                         ("forged key", f"Bearer srk_{'0' * 12}_{'A' * 43}"), ("revoked key", f"Bearer {revoked_key}")):
        add(Case("auth", name, "GET", "/v1/jobs", "anonymous",
                 {"headers": {"Authorization": header} if header else {}}, (401,)))
    add(Case("auth", "submit without key", "POST", "/v1/jobs", "anonymous", _job(SHARED_MODEL.as_uri()), (401,)))
    for method, path in (("GET", f"/v1/jobs/{job_id}"), ("POST", f"/v1/jobs/{job_id}/cancel"),
                         ("GET", f"/v1/jobs/{job_id}/artifacts"), ("GET", f"/v1/catalogs/{catalog_id}"),
                         ("POST", f"/v1/catalogs/{catalog_id}/retry"), ("POST", f"/v1/catalogs/{catalog_id}/cancel")):
        add(Case("tenancy", f"{method} another tenant's {path.split('/')[2]} {path.split('/')[-1]}", method, path,
                 "b", statuses=(404,)))
    # Model URIs: traversal, hosts, schemes, places outside the tenant's.
    for name, uri in (
            ("dot-dot", "file:///models/../etc"), ("encoded dot-dot", "file:///models/%2e%2e/etc"),
            ("file host", "file://evil.example/x"), ("metadata service", "http://169.254.169.254/latest/meta-data/"),
            ("loopback redis", "http://127.0.0.1:6379/"), ("private v6", "https://[fd00::1]/m"),
            ("ftp", "ftp://10.0.0.1/m"), ("hub", "hf://org/model"), ("no scheme", "/etc/passwd"),
            ("outside roots", "file:///etc"), ("control char", "file:///m\r\nX-Injected: 1"),
            ("very long", "file:///" + "a" * 3000), ("artifact store", f"s3://{artifact_bucket}/jobs/{job_id}/"),
            ("unlisted bucket", "s3://someone-elses-bucket/model"), ("s3 dot-dot", "s3://models/a/../../b"),
            ("bad bucket", "s3://UPPER_CASE/x")):
        add(Case("uri", name, "POST", "/v1/jobs", request=_job(uri)))
    add(Case("uri", "eval text outside roots", "POST", "/v1/jobs", request=_job(SHARED_MODEL.as_uri(),
                                                                               eval_uri="file:///etc/shadow")))
    # Checkpoints: refused at submission, naming the file.
    for name, path in models.items():
        add(Case("checkpoint", name, "POST", "/v1/jobs", request=_job(path.as_uri())))
    # Limits and malformed documents.
    add(Case("limits", "body over the limit (declared)", "POST", "/v1/jobs",
             request=_job(SHARED_MODEL.as_uri(), padding="x" * max_body_bytes), statuses=(413,)))
    add(Case("limits", "body over the limit (streamed)", "POST", "/v1/jobs", request={
        "content": iter([b'{"x": "', b"x" * max_body_bytes, b'"}']), "headers": {"Content-Type": "application/json"}},
        statuses=(413,)))
    add(Case("limits", "catalog of 501 pairs", "POST", "/v1/catalogs", request={"json": {
        "models": [{"uri": SHARED_MODEL.as_uri(), "name": f"m{i}"} for i in range(167)],
        "recipes": [{"preset": "w4a16-rtn"}, {"preset": "w8a16-rtn"}, {"preset": "w4a16"}]}}))
    add(Case("limits", "malformed YAML catalog", "POST", "/v1/catalogs", request={
        "content": b"models: [\n  - uri: x\n recipes", "headers": {"Content-Type": "application/yaml"}}))
    add(Case("limits", "YAML with a python tag", "POST", "/v1/catalogs", request={
        "content": b"models: !!python/object/apply:os.system ['id']\nrecipes: []",
        "headers": {"Content-Type": "application/yaml"}}))
    add(Case("limits", "YAML alias bomb", "POST", "/v1/catalogs", request={
        "content": b"a: &a ['x','x','x','x','x','x','x','x','x']\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                   b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                   b"models: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nrecipes: [*d,*d,*d,*d,*d,*d,*d,*d,*d]",
        "headers": {"Content-Type": "application/yaml"}}))
    add(Case("limits", "empty catalog", "POST", "/v1/catalogs", request={"json": {"models": [], "recipes": []}}))
    add(Case("limits", "catalog as text/plain", "POST", "/v1/catalogs",
             request={"content": b"x", "headers": {"Content-Type": "text/plain"}}, statuses=(415,)))
    add(Case("limits", "unknown preset", "POST", "/v1/jobs", request={"json": {
        "model_uri": SHARED_MODEL.as_uri(), "preset": "w3a16-magic"}}))
    add(Case("limits", "recipe with 5-bit weights", "POST", "/v1/jobs", request={"json": {
        "model_uri": SHARED_MODEL.as_uri(), "recipe": {"modifiers": [{"method": "rtn", "bits": 5}]}}}))
    add(Case("limits", "recipe as a YAML bomb string", "POST", "/v1/jobs", request={"json": {
        "model_uri": SHARED_MODEL.as_uri(), "recipe": "a: &a [x,x,x,x,x,x,x,x]\nb: [*a,*a,*a,*a,*a,*a,*a,*a]"}}))
    add(Case("limits", "negative offset", "GET", "/v1/jobs?offset=-1"))
    add(Case("limits", "offset past bigint", "GET", "/v1/jobs?offset=99999999999999999999"))
    add(Case("limits", "malformed job id", "GET", "/v1/jobs/not-a-uuid%00"))
    add(Case("limits", "Idempotency-Key with control characters", "POST", "/v1/jobs",
             request={**_job(SHARED_MODEL.as_uri()), "headers": {"Idempotency-Key": "a\tb"}}))
    add(Case("limits", "Idempotency-Key reused for another submission", "POST", "/v1/jobs",
             request={**_job(SHARED_MODEL.as_uri(), device="gpu"), "headers": {"Idempotency-Key": "setup-job"}}))
    return cases


def run(cases: list[Case], clients: dict[str, TestClient]) -> list[Outcome]:
    outcomes = []
    for case in cases:
        response = clients[case.as_tenant].request(case.method, case.path, **case.request)
        try:
            detail = response.json().get("detail", "")
        except ValueError:
            detail = response.text
        message = "; ".join(str(item.get("msg")) for item in detail) if isinstance(detail, list) else str(detail)
        outcomes.append(Outcome(case, response.status_code, message))
    return outcomes


@dataclass
class Deployment:
    settings: Settings
    clients: dict[str, TestClient]
    cases: list[Case]


@contextmanager
def deployment_under_attack(database_url: str, broker_url: str, root: Path) -> Iterator[Deployment]:
    """An app on a migrated database; `root` holds its artifacts and the bad model directories."""
    settings = Settings(home=root / "home", database_url=database_url, broker_url=broker_url,
                        artifact_url=(root / "artifacts").as_uri(), auth_required=True,
                        model_roots=[str(SHARED), str(root / "models")], model_buckets=["models"])
    app = create_app(settings, run_maintenance=False)
    keys = {"a": tenant_keys(database_url, "team-a")[0], "b": tenant_keys(database_url, "team-b")[0]}
    revoked = tenant_keys(database_url, "team-gone")[0]
    with transaction(session_factory(settings)) as session:
        revoke_key(session, revoked.split("_")[1])
    with TestClient(app) as a, TestClient(app) as b, TestClient(app) as anonymous:
        a.headers["Authorization"] = f"Bearer {keys['a']}"
        b.headers["Authorization"] = f"Bearer {keys['b']}"
        job = a.post("/v1/jobs", json={"model_uri": SHARED_MODEL.as_uri(), "preset": "w4a16-rtn"},
                     headers={"Idempotency-Key": "setup-job"})
        catalog = a.post("/v1/catalogs", json={"models": [{"uri": SHARED_MODEL.as_uri()}],
                                               "recipes": [{"preset": "w8a16-rtn"}]})
        assert job.status_code == 201 and catalog.status_code == 201, (job.text, catalog.text)
        cases = battery(bad_models(root / "models"), job.json()["id"], catalog.json()["id"], "artifacts",
                        revoked, settings.max_body_bytes)
        yield Deployment(settings, {"a": a, "b": b, "anonymous": anonymous}, cases)
