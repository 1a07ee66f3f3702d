"""Static checks of the deployment files and the Postman collection.

No Docker engine or running server is needed: docker-compose.yml and the Dockerfile are
parsed and their structure checked, and the collection is checked for the assertions
newman runs against a live server (scripts/newman.sh).
"""

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.cli import build_parser
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_CONFIG = ROOT / "ops/prometheus.yml"
DASHBOARD = ROOT / "ops/grafana/dashboards/engine.json"
# The PromQL functions and aggregations the dashboard may use; any other word before "(" is
# a typo, and any word not followed by "(" is a metric name.
PROMQL_FUNCTIONS = {
    "sum", "min", "max", "avg", "count", "rate", "increase", "irate", "histogram_quantile",
}  # fmt: skip
ENGINE_SERVICES = {"api": "python -m app", "worker": "python -m worker"}
STATUS_ASSERTION = re.compile(r"pm\.response\.to\.have\.status\((\d{3})\)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def collection() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "postman_collection.json").read_text())
    return data


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)  # grouping labels
    names = set()
    for word, call in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", expr):
        if call:
            assert word in PROMQL_FUNCTIONS, f"unknown PromQL function {word!r} in {expr!r}"
        else:
            names.add(word)
    return names


def _command(service: dict[str, Any]) -> str:
    command = service["command"]
    return " ".join(command) if isinstance(command, list) else " ".join(shlex.split(command))


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service["environment"]
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _healthcheck_test(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def _requests(items: list[dict[str, Any]], folder: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every request item as (folder name, item), depth first, in run order."""
    found: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        if "item" in item:
            found += _requests(item["item"], folder or item["name"])
        else:
            found.append((folder, item))
    return found


def _script(item: dict[str, Any], listen: str) -> str:
    return "\n".join(
        "\n".join(event["script"]["exec"])
        for event in item.get("event", [])
        if event["listen"] == listen
    )


# -- docker-compose.yml ---------------------------------------------------------------


def test_compose_has_the_engine_and_its_monitoring(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "postgres", "redis", "api", "worker", "prometheus", "grafana"
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(ENGINE_SERVICES))
def test_engine_service_builds_the_project_and_runs_its_process(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    build = service["build"]
    context = build["context"] if isinstance(build, dict) else build
    assert context in (".", "./")
    assert _command(service) == ENGINE_SERVICES[name]


def test_api_and_worker_run_the_same_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["api"].get("image") == services["worker"].get("image")


@pytest.mark.parametrize("name", sorted(ENGINE_SERVICES))
def test_engine_service_points_at_the_compose_databases(compose: dict[str, Any], name: str) -> None:
    env = _environment(compose["services"][name])
    database = urlsplit(env["DATABASE_URL"])
    redis = urlsplit(env["REDIS_URL"])
    assert (database.scheme, database.hostname, database.port) == ("postgresql", "postgres", 5432)
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)


@pytest.mark.parametrize("name", sorted(ENGINE_SERVICES))
def test_engine_service_waits_for_healthy_dependencies(compose: dict[str, Any], name: str) -> None:
    depends_on = compose["services"][name]["depends_on"]
    assert isinstance(depends_on, dict), "long syntax is needed for a health condition"
    for dependency in ("postgres", "redis"):
        assert depends_on[dependency]["condition"] == "service_healthy"


def test_api_publishes_port_3000_and_checks_health(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    published = set()
    for port in api["ports"]:
        if isinstance(port, dict):
            published.add((str(port["published"]), str(port["target"])))
        else:
            host, _, container = str(port).rpartition(":")
            published.add((host.rpartition(":")[2], container))
    assert ("3000", "3000") in published
    assert "/health" in _healthcheck_test(api)


def test_worker_scales_out(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "ports" not in worker, "replicas cannot share a published port"
    assert worker["deploy"]["replicas"] >= 2


@pytest.mark.parametrize(
    ("name", "image", "probe", "mount"),
    [
        ("postgres", "postgres:16", "pg_isready", "/var/lib/postgresql/data"),
        ("redis", "redis:7", "redis-cli ping", "/data"),
    ],
)
def test_datastore_has_healthcheck_and_named_volume(
    compose: dict[str, Any], name: str, image: str, probe: str, mount: str
) -> None:
    service = compose["services"][name]
    assert service["image"] == image
    assert probe in _healthcheck_test(service)
    volumes = [str(v).split(":") for v in service["volumes"]]
    assert [mount] == [target for source, target, *_ in volumes if source in compose["volumes"]]


def test_redis_persists_with_append_only_file(compose: dict[str, Any]) -> None:
    assert "--appendonly yes" in _command(compose["services"]["redis"])


def test_api_runs_in_keys_mode(compose: dict[str, Any]) -> None:
    assert _environment(compose["services"]["api"])["AUTH_MODE"] == "keys"


def test_compose_file_says_how_to_make_the_first_admin_key() -> None:
    """The documented command is the CLI's real syntax, run in the api service."""
    text = (ROOT / "docker-compose.yml").read_text()
    commands = [
        shlex.split(line.lstrip("# "))
        for line in text.splitlines()
        if line.startswith("#") and "python -m app keys create" in line
    ]
    assert len(commands) == 1, commands
    argv = commands[0]
    assert argv[:4] == ["docker", "compose", "exec", "api"]
    args = build_parser().parse_args(argv[argv.index("-m") + 2 :])
    assert (args.group, args.action, args.scope) == ("keys", "create", ["admin"])


# -- Prometheus and Grafana ----------------------------------------------------------------


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of the service's bind mounts."""
    found = {}
    for volume in service["volumes"]:
        source, target, *_ = str(volume).split(":")
        found[target] = source
    return found


def test_prometheus_scrapes_the_api_and_every_worker(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    config_path = _mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    assert (ROOT / config_path).resolve() == PROMETHEUS_CONFIG
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"api", "worker"}
    assert jobs["api"]["static_configs"] == [{"targets": ["api:3000"]}]
    # Every replica: the service name resolves to each one's address, on the workers' port.
    (workers,) = jobs["worker"]["dns_sd_configs"]
    assert workers["names"] == ["worker"] and workers["type"] == "A"
    assert workers["port"] == Settings.model_fields["worker_metrics_port"].default
    assert str(workers["port"]) in [str(p) for p in compose["services"]["worker"]["expose"]]
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in jobs.values())


@pytest.mark.skipif(not Path("/usr/bin/promtool").exists(), reason="promtool is not installed")
def test_prometheus_config_passes_promtool() -> None:
    checked = subprocess.run(
        ["/usr/bin/promtool", "check", "config", "--syntax-only", str(PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_grafana_provisions_the_datasource_and_the_dashboard(compose: dict[str, Any]) -> None:
    mounts = _mounts(compose["services"]["grafana"])
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert (source["type"], source["url"], source["uid"]) == (
        "prometheus",
        "http://prometheus:9090",
        "prometheus",
    )
    (provider,) = yaml.safe_load((provisioning / "dashboards/engine.yml").read_text())["providers"]
    assert mounts[provider["options"]["path"]] == "./ops/grafana/dashboards"
    assert (ROOT / "ops/grafana/dashboards" / DASHBOARD.name) == DASHBOARD


def test_dashboard_panels_cover_what_operators_need() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    queried = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus"
            queried |= promql_metrics(target["expr"])
    # throughput, stage latency, failures by code, venue split, queue depth, sockets, deps
    for needed in (
        "orders_finished_total",
        "order_stage_seconds_bucket",
        "order_retries_total",
        "queue_depth",
        "websocket_connections",
        "dependency_up",
        "venue_gap_ratio",
    ):
        assert needed in queried, needed


# -- Dockerfile and .dockerignore --------------------------------------------------------


def test_dockerfile_base_image_port_and_default_command(dockerfile: list[str]) -> None:
    assert dockerfile[0] == "FROM python:3.11-slim"
    assert "EXPOSE 3000" in dockerfile
    cmds = [line for line in dockerfile if line.startswith("CMD ")]
    assert json.loads(cmds[-1].removeprefix("CMD ")) == ["python", "-m", "app"]


def test_dockerfile_installs_lock_then_project_and_drops_root(dockerfile: list[str]) -> None:
    runs = [i for i, line in enumerate(dockerfile) if line.startswith("RUN ")]
    lock = next(i for i in runs if "pip install -r requirements.lock" in dockerfile[i])
    project = next(i for i in runs if "pip install --no-deps ." in dockerfile[i])
    users = [i for i, line in enumerate(dockerfile) if line.startswith("USER ")]
    assert lock < project < users[-1]
    assert dockerfile[users[-1]].split()[1] not in ("root", "0")


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".data", ".env"} <= ignored


# -- postman_collection.json --------------------------------------------------------------


def test_collection_is_v21_with_base_url_variable(collection: dict[str, Any]) -> None:
    assert collection["info"]["schema"].endswith("/v2.1.0/collection.json")
    variables = {v["key"]: v["value"] for v in collection["variable"]}
    assert variables["baseUrl"] == "http://localhost:3000"
    assert [folder["name"] for folder in collection["item"]] == [
        "Orders",
        "Limit and sniper orders",
        "Errors",
        "Market",
        "Routing",
        "System",
        "Accounts and keys",
    ]


def test_every_request_targets_base_url_and_has_a_test(collection: dict[str, Any]) -> None:
    requests = _requests(collection["item"])
    assert len(requests) >= 30
    for folder, item in requests:
        label = f"{folder} / {item['name']}"
        assert item["request"]["url"]["raw"].startswith("{{baseUrl}}/"), label
        assert "pm.test(" in _script(item, "test"), label
        assert STATUS_ASSERTION.search(_script(item, "test")), label


def test_every_error_case_asserts_a_4xx_and_the_error_shape(collection: dict[str, Any]) -> None:
    errors = [item for folder, item in _requests(collection["item"]) if folder == "Errors"]
    assert len(errors) >= 20
    for item in errors:
        tests = _script(item, "test")
        statuses = {int(code) for code in STATUS_ASSERTION.findall(tests)}
        assert statuses and all(400 <= code < 500 for code in statuses), item["name"]
        assert "body.error" in tests and "body.code" in tests, item["name"]


def test_first_order_is_sent_as_the_original_clients_send_it(collection: dict[str, Any]) -> None:
    folder, first = _requests(collection["item"])[0]
    assert folder == "Orders"
    assert first["request"]["method"] == "POST"
    assert first["request"]["url"]["raw"] == "{{baseUrl}}/api/orders/execute"
    assert json.loads(first["request"]["body"]["raw"]) == {
        "type": "market",
        "tokenIn": "SOL",
        "tokenOut": "USDC",
        "amountIn": 100,
    }
    assert 'pm.collectionVariables.set("orderId"' in _script(first, "test")


def test_idempotent_retry_reuses_a_key_made_before_the_first_submission(
    collection: dict[str, Any],
) -> None:
    keyed = [
        item
        for _, item in _requests(collection["item"])
        if any(h["key"] == "Idempotency-Key" for h in item["request"]["header"])
    ]
    assert len(keyed) >= 3
    assert "idempotencyKey" in _script(keyed[0], "prerequest")
    assert keyed[0]["request"]["body"]["raw"] == keyed[1]["request"]["body"]["raw"]
    assert keyed[2]["request"]["body"]["raw"] != keyed[0]["request"]["body"]["raw"]
    assert STATUS_ASSERTION.findall(_script(keyed[2], "test")) == ["422"]


def test_api_key_variable_is_sent_unless_a_request_names_its_own(
    collection: dict[str, Any],
) -> None:
    variables = {v["key"]: v["value"] for v in collection["variable"]}
    assert variables["apiKey"] == ""  # open mode: no key unless one is given
    prerequest = "\n".join(
        "\n".join(e["script"]["exec"]) for e in collection["event"] if e["listen"] == "prerequest"
    )
    assert 'pm.variables.get("apiKey")' in prerequest
    assert '"Bearer " + apiKey' in prerequest


def test_accounts_folder_covers_401_403_isolation_and_risk_limit(
    collection: dict[str, Any],
) -> None:
    requests = _requests(collection["item"])
    items = [item for folder, item in requests if folder == "Accounts and keys"]
    codes: dict[str, list[str]] = {}
    for item in items:
        tests = _script(item, "test")
        for status in STATUS_ASSERTION.findall(tests):
            codes.setdefault(status, []).append(item["name"])
        if "body.code" in tests:
            assert "body.error" in tests, item["name"]
    assert {"401", "403", "404", "201"} <= set(codes), codes
    tests = "\n".join(_script(item, "test") for item in items)
    for machine in ("UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND", "RISK_LIMIT"):
        assert f'.to.eql("{machine}")' in tests, machine
    assert "WWW-Authenticate" in tests
    # isolation: account B asks for the order account A made
    isolation = [item for item in items if "{{isolatedOrderId}}" in item["request"]["url"]["raw"]]
    headers = {h["value"] for item in isolation for h in item["request"]["header"]}
    assert {"Bearer {{keyA}}", "Bearer {{keyB}}"} <= headers


def test_newman_script_targets_base_url_and_bails() -> None:
    script = ROOT / "scripts" / "newman.sh"
    text = script.read_text()
    assert script.stat().st_mode & 0o111, "scripts/newman.sh must be executable"
    assert "${BASE_URL:-http://localhost:3000}" in text
    assert "newman@6" in text and "--bail" in text
