"""docker-compose.yml, its Dockerfile, the collector and Prometheus configurations, checked
without Docker.

No machine here runs a Docker engine, so these tests keep the files honest where they can run:
the compose file's services, images, ports and environment are the ones the README documents,
every component the collector configuration names exists in the pinned collector version
(tests/data/otelcol_contrib_components.txt) and every pipeline uses defined components, the
tail sampling keeps timeouts, crashes and errors, the metrics reach the Prometheus endpoint
Prometheus scrapes, and every environment default agrees across the files. `docker compose
config` validates the compose file when a Compose v2 CLI is found.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
COLLECTOR_CONFIG = ROOT / "collector-config.yaml"
HONEYCOMB_CONFIG = ROOT / "collector-config.honeycomb.yaml"
PROMETHEUS_CONFIG = ROOT / "prometheus.yml"
COMPONENTS_FILE = Path(__file__).resolve().parent / "data" / "otelcol_contrib_components.txt"

# What the README's "With a collector" section promises.
APP_ENVIRONMENT = {
    "OTEL_SERVICE_NAME": "shop",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_METRIC_EXPORT_INTERVAL": "10000",
    "OTEL_LOGS_EXPORTER": "none",
}
#: Variables read from the shell (or .env) and their defaults; "" means none.
VARIABLE_DEFAULTS = {
    "HONEYCOMB_API_KEY": "",
    "HONEYCOMB_DATASET": "wide-events",
    "SAMPLING_PERCENTAGE": "10",
    "SLOW_REQUEST_MS": "1000",
    "SHOP_ALLOWED_HOSTS": "localhost,127.0.0.1,app",
}
#: Ports published on the host, all on 127.0.0.1.
PUBLISHED_PORTS = {
    "app": {8000},
    "collector": {4317, 4318, 13133},
    "jaeger": {16686},
    "prometheus": {9090},
}
GUNICORN_COMMAND = [
    "opentelemetry-instrument",
    "gunicorn",
    "shop.wsgi",
    "--bind",
    "0.0.0.0:8000",
    "--workers",
    "2",
    "--timeout",
    "5",
]
#: Where docker-compose.yml mounts the two collector files.
CONFIG_IN_CONTAINER = "/etc/otelcol-contrib/config.yaml"
HONEYCOMB_IN_CONTAINER = "/etc/otelcol-contrib/honeycomb.yaml"
#: Where docker-compose.yml mounts prometheus.yml: the image's default configuration file.
PROMETHEUS_IN_CONTAINER = "/etc/prometheus/prometheus.yml"

KINDS = {
    "receivers": "receiver",
    "processors": "processor",
    "exporters": "exporter",
    "extensions": "extension",
    "connectors": "connector",
}
COMPOSE_VARIABLE = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\+)(?P<arg>[^}]*))?\}"
)
COLLECTOR_VARIABLE = re.compile(
    r"\$\{env:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def interpolate(text: str, environ: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:+replacement} (unset and empty alike)."""

    def replace(match: re.Match[str]) -> str:
        value = environ.get(match["name"], "")
        if match["op"] == ":-":
            return value or match["arg"]
        if match["op"] == ":+":
            return match["arg"] if value else ""
        return value

    return COMPOSE_VARIABLE.sub(replace, text)


def compose_defaults(environment: dict[str, str]) -> dict[str, str]:
    """NAME -> default for entries written `NAME: ${NAME:-default}` (or `${NAME}`: no default)."""
    defaults = {}
    for name, value in environment.items():
        match = COMPOSE_VARIABLE.fullmatch(str(value))
        if match and match["name"] == name and match["op"] in (None, ":-"):
            defaults[name] = match["arg"] or ""
    return defaults


def merge(base: Any, overlay: Any) -> Any:
    """The collector's merge of several --config files: maps key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return overlay


def collector_configs() -> dict[str, dict[str, Any]]:
    """The configuration the collector runs with, without and with a Honeycomb key."""
    base = load_yaml(COLLECTOR_CONFIG)
    return {"without key": base, "with key": merge(base, load_yaml(HONEYCOMB_CONFIG))}


def component_type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def components_in_version() -> tuple[str, dict[str, set[str]]]:
    """(version, kind -> configuration types) from tests/data/otelcol_contrib_components.txt."""
    version = ""
    types: dict[str, set[str]] = {kind: set() for kind in KINDS.values()}
    for line in COMPONENTS_FILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("# version:"):
            version = line.split(":", 1)[1].strip()
        if not line.strip() or line.startswith("#"):
            continue
        kind, _module, *type_name = line.split()
        assert kind in types, f"unknown kind {kind!r} in {COMPONENTS_FILE.name}"
        types[kind].update(type_name)
    assert version, f"{COMPONENTS_FILE.name} names no version"
    return version, types


def pipeline_references(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(section, component id) for everything service: names."""
    service_section = config["service"]
    for extension in service_section.get("extensions", []):
        yield "extensions", extension
    for pipeline in service_section["pipelines"].values():
        for role in ("receivers", "processors", "exporters"):
            for component in pipeline.get(role, []):
                section = "connectors" if component in config.get("connectors", {}) else role
                yield section, component


def strings_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_in(value)
    elif isinstance(node, str):
        yield node


def collector_variables(path: Path) -> dict[str, str | None]:
    """NAME -> default (None: no default) of every ${env:NAME} in a collector file's values."""
    found: dict[str, str | None] = {}
    for value in strings_in(load_yaml(path)):
        for match in COLLECTOR_VARIABLE.finditer(value):
            found[match["name"]] = match["default"]
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env = {}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def published(port: str) -> tuple[str, int, int]:
    """'127.0.0.1:8000:8000' -> (host ip, published port, container port)."""
    host_ip, host_port, container_port = port.split(":")
    return host_ip, int(host_port), int(container_port)


# --- docker-compose.yml -------------------------------------------------------------------------


def test_compose_file_has_the_app_the_collector_jaeger_and_prometheus() -> None:
    assert set(compose()["services"]) == {"app", "collector", "jaeger", "prometheus"}
    assert service("app")["build"] == "."
    assert set(service("app")["depends_on"]) == {"collector"}
    assert set(service("collector")["depends_on"]) == {"jaeger"}
    assert set(service("prometheus")["depends_on"]) == {"collector"}


def test_images_are_pinned_to_exact_versions() -> None:
    version, _ = components_in_version()
    assert service("collector")["image"] == f"otel/opentelemetry-collector-contrib:{version}"
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", service("jaeger")["image"])
    assert re.fullmatch(r"prom/prometheus:v3\.\d+\.\d+", service("prometheus")["image"])
    assert "image" not in service("app"), "the app is built from the Dockerfile"
    base_images = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(base_images) == 1
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", base_images[0])
    text = "\n".join([COMPOSE_FILE.read_text(encoding="utf-8"), *base_images])
    assert "latest" not in text


def test_published_ports_are_the_documented_ones_on_loopback_only() -> None:
    for name, expected in PUBLISHED_PORTS.items():
        ports = [published(port) for port in service(name)["ports"]]
        assert {host_port for _, host_port, _ in ports} == expected, name
        for host_ip, host_port, container_port in ports:
            assert host_ip == "127.0.0.1", f"{name} publishes {host_port} beyond loopback"
            assert host_port == container_port


def test_app_environment_sends_grpc_otlp_to_the_collector() -> None:
    environment = service("app")["environment"]
    assert {k: v for k, v in environment.items() if k.startswith("OTEL_")} == APP_ENVIRONMENT
    collector_port = int(APP_ENVIRONMENT["OTEL_EXPORTER_OTLP_ENDPOINT"].rsplit(":", 1)[1])
    grpc = load_yaml(COLLECTOR_CONFIG)["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc == f"0.0.0.0:{collector_port}"


def test_compose_variables_have_the_documented_defaults() -> None:
    defaults = compose_defaults(service("app")["environment"])
    defaults.update(compose_defaults(service("collector")["environment"]))
    assert defaults == VARIABLE_DEFAULTS


def test_collector_reads_every_variable_it_references_from_compose() -> None:
    """Compose passes each ${env:...} of the collector files, with the same default."""
    passed = compose_defaults(service("collector")["environment"])
    for path in (COLLECTOR_CONFIG, HONEYCOMB_CONFIG):
        for name, default in collector_variables(path).items():
            assert name in passed, f"{path.name} reads {name}, which compose does not pass"
            if default is not None:
                assert default == passed[name], f"{name}: {path.name} and compose disagree"


def test_only_the_honeycomb_key_has_no_default_and_only_the_honeycomb_file_reads_it() -> None:
    assert all(default is not None for default in collector_variables(COLLECTOR_CONFIG).values())
    without_default = {
        name for name, default in collector_variables(HONEYCOMB_CONFIG).items() if default is None
    }
    assert without_default == {"HONEYCOMB_API_KEY"}


@pytest.mark.parametrize(
    ("key", "configs"),
    [("", [CONFIG_IN_CONTAINER]), ("hcaik_test", [CONFIG_IN_CONTAINER, HONEYCOMB_IN_CONTAINER])],
    ids=["without key", "with key"],
)
def test_the_honeycomb_file_is_loaded_only_with_a_key(key: str, configs: list[str]) -> None:
    command = shlex.split(interpolate(service("collector")["command"], {"HONEYCOMB_API_KEY": key}))
    assert command == [f"--config={path}" for path in configs]


def test_collector_files_are_mounted_where_the_command_reads_them() -> None:
    mounts = {}
    for volume in service("collector")["volumes"]:
        source, target, mode = volume.split(":")
        assert mode == "ro"
        mounts[target] = (COMPOSE_FILE.parent / source).resolve()
    assert mounts == {
        CONFIG_IN_CONTAINER: COLLECTOR_CONFIG,
        HONEYCOMB_IN_CONTAINER: HONEYCOMB_CONFIG,
    }


def test_prometheus_reads_its_file_and_scrapes_the_collectors_metrics_endpoint() -> None:
    """prometheus.yml is mounted where the image reads it; it scrapes the collector's
    prometheus exporter, keeping the job and instance labels (one series per process)."""
    (volume,) = service("prometheus")["volumes"]
    source, target, mode = volume.split(":")
    assert (COMPOSE_FILE.parent / source).resolve() == PROMETHEUS_CONFIG
    assert (target, mode) == (PROMETHEUS_IN_CONTAINER, "ro")
    (job,) = load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]
    assert job["honor_labels"] is True
    (targets,) = [config["targets"] for config in job["static_configs"]]
    exporter_port = load_yaml(COLLECTOR_CONFIG)["exporters"]["prometheus"]["endpoint"].rsplit(
        ":", 1
    )[1]
    assert targets == [f"collector:{exporter_port}"]


def test_jaeger_takes_otlp_on_all_interfaces_where_the_collector_sends() -> None:
    assert service("jaeger")["environment"]["JAEGER_LISTEN_HOST"] == "0.0.0.0"
    jaeger = load_yaml(COLLECTOR_CONFIG)["exporters"]["otlp/jaeger"]
    assert jaeger == {"endpoint": "jaeger:4317", "tls": {"insecure": True}}


# --- collector-config.yaml (+ collector-config.honeycomb.yaml) ---------------------------------


@pytest.mark.parametrize("variant", ["without key", "with key"])
def test_every_component_in_the_pipelines_is_defined(variant: str) -> None:
    config = collector_configs()[variant]
    for section, component in pipeline_references(config):
        assert component in config.get(section, {}), f"{section}: {component} is not defined"


@pytest.mark.parametrize("variant", ["without key", "with key"])
def test_every_defined_component_is_used(variant: str) -> None:
    config = collector_configs()[variant]
    used = set(pipeline_references(config))
    for section in KINDS:
        for component in config.get(section) or {}:
            assert (section, component) in used, f"{section}: {component} is defined, not used"


@pytest.mark.parametrize("variant", ["without key", "with key"])
def test_every_component_type_exists_in_the_pinned_collector(variant: str) -> None:
    version, types = components_in_version()
    config = collector_configs()[variant]
    for section, kind in KINDS.items():
        for component in config.get(section) or {}:
            assert component_type(component) in types[kind], (
                f"{kind} type {component_type(component)!r} is not among the types of "
                f"otelcol-contrib {version} listed in {COMPONENTS_FILE.name}"
            )


def test_components_file_lists_the_contrib_distribution() -> None:
    _, types = components_in_version()
    assert {"otlp"} <= types["receiver"]
    assert {"memory_limiter", "batch", "tail_sampling"} <= types["processor"]
    lines = [
        line.split()
        for line in COMPONENTS_FILE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    modules = [fields[1] for fields in lines]
    assert len(modules) == len(set(modules)) > 200


def test_honeycomb_exporter_is_in_the_pipeline_only_with_a_key() -> None:
    configs = collector_configs()
    exporters = {
        variant: config["service"]["pipelines"]["traces"]["exporters"]
        for variant, config in configs.items()
    }
    assert exporters == {
        "without key": ["otlp/jaeger", "debug"],
        "with key": ["otlp/jaeger", "otlp/honeycomb", "debug"],
    }
    assert "otlp/honeycomb" not in configs["without key"]["exporters"]
    honeycomb = configs["with key"]["exporters"]["otlp/honeycomb"]
    assert honeycomb["endpoint"] == "api.honeycomb.io:443"
    assert honeycomb["headers"]["x-honeycomb-team"] == "${env:HONEYCOMB_API_KEY}"
    assert honeycomb["headers"]["x-honeycomb-dataset"].startswith("${env:HONEYCOMB_DATASET:-")


def test_receivers_and_health_check_listen_on_all_interfaces() -> None:
    config = load_yaml(COLLECTOR_CONFIG)
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    assert config["extensions"]["health_check"]["endpoint"] == "0.0.0.0:13133"


def test_traces_pass_the_memory_limiter_first_and_are_batched_after_sampling() -> None:
    processors = load_yaml(COLLECTOR_CONFIG)["service"]["pipelines"]["traces"]["processors"]
    assert processors == ["memory_limiter", "tail_sampling", "batch"]


@pytest.mark.parametrize("variant", ["without key", "with key"])
def test_metrics_go_from_otlp_to_prometheus_and_the_log_unsampled(variant: str) -> None:
    """Metrics are not sampled (tail sampling is for traces): OTLP in, the memory limiter and
    a batch, then the Prometheus endpoint and the debug log."""
    metrics = collector_configs()[variant]["service"]["pipelines"]["metrics"]
    assert metrics == {
        "receivers": ["otlp"],
        "processors": ["memory_limiter", "batch"],
        "exporters": ["prometheus", "debug"],
    }
    endpoint = load_yaml(COLLECTOR_CONFIG)["exporters"]["prometheus"]["endpoint"]
    assert endpoint.startswith("0.0.0.0:")


def test_tail_sampling_keeps_timeouts_crashes_errors_slow_requests_and_a_share() -> None:
    policies = load_yaml(COLLECTOR_CONFIG)["processors"]["tail_sampling"]["policies"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for policy in policies:
        assert policy["type"] in policy, f"policy {policy['name']} has no {policy['type']} block"
        by_type.setdefault(policy["type"], []).append(policy[policy["type"]])
    (attribute,) = by_type["string_attribute"]
    assert attribute["key"] == "wide_event.type"
    assert {"timeout", "crash"} <= set(attribute["values"])
    assert not attribute.get("invert_match", False)
    assert [policy["status_codes"] for policy in by_type["status_code"]] == [["ERROR"]]
    assert [policy["threshold_ms"] for policy in by_type["latency"]] == [
        f"${{env:SLOW_REQUEST_MS:-{VARIABLE_DEFAULTS['SLOW_REQUEST_MS']}}}"
    ]
    assert [policy["sampling_percentage"] for policy in by_type["probabilistic"]] == [
        f"${{env:SAMPLING_PERCENTAGE:-{VARIABLE_DEFAULTS['SAMPLING_PERCENTAGE']}}}"
    ]
    assert set(by_type) == {"string_attribute", "status_code", "latency", "probabilistic"}


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_installs_the_checkout_and_runs_the_example_under_the_wrapper() -> None:
    instructions = dockerfile_instructions()
    assert ("COPY", ". .") in instructions
    assert any(k == "RUN" and "pip install ." in args for k, args in instructions)
    env = dockerfile_env()
    workdir = [args for keyword, args in instructions if keyword == "WORKDIR"][-1]
    assert env["PYTHONPATH"] == workdir
    assert workdir.endswith("/examples")
    assert env["DJANGO_SETTINGS_MODULE"] == "shop.settings_docker"
    (cmd,) = [args for keyword, args in instructions if keyword == "CMD"]
    assert json.loads(cmd) == GUNICORN_COMMAND
    bind_port = int(GUNICORN_COMMAND[GUNICORN_COMMAND.index("--bind") + 1].rsplit(":", 1)[1])
    assert ("EXPOSE", str(bind_port)) in instructions
    assert {published(port)[2] for port in service("app")["ports"]} == {bind_port}


def test_dockerignore_keeps_what_pip_install_and_the_example_need() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for needed in ("README.md", "pyproject.toml", "src", "examples"):
        assert needed not in ignored


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ["127.0.0.1", "localhost"]),
        ("localhost, 127.0.0.1,app,", ["localhost", "127.0.0.1", "app"]),
    ],
    ids=["unset", "set"],
)
def test_docker_settings_take_allowed_hosts_from_the_environment(
    value: str | None, expected: list[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SHOP_ALLOWED_HOSTS"}
    env["PYTHONPATH"] = str(ROOT / "examples")
    if value is not None:
        env["SHOP_ALLOWED_HOSTS"] = value
    code = "import json, shop.settings_docker as s; print(json.dumps(s.ALLOWED_HOSTS))"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == expected


# --- docker compose config -----------------------------------------------------------------------


def compose_cli() -> list[str] | None:
    """A Compose v2 command line: the docker CLI plugin, or a standalone v2 docker-compose."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run(
            [*command, "version", "--short"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0 and probe.stdout.strip().lstrip("v").startswith("2."):
            return command
    return None


@pytest.mark.parametrize("key", ["", "hcaik_test"], ids=["without key", "with key"])
def test_docker_compose_config_accepts_the_file(key: str) -> None:
    command = compose_cli()
    if command is None:
        pytest.skip("no Docker Compose v2 CLI on PATH (`docker compose` plugin or docker-compose)")
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in VARIABLE_DEFAULTS and not name.startswith("COMPOSE_")
    }
    if key:
        env["HONEYCOMB_API_KEY"] = key
    result = subprocess.run(
        [*command, "--env-file", os.devnull, "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]
    configs = [CONFIG_IN_CONTAINER, HONEYCOMB_IN_CONTAINER] if key else [CONFIG_IN_CONTAINER]
    assert resolved["collector"]["command"] == [f"--config={path}" for path in configs]
    expected_env = {
        name: key if name == "HONEYCOMB_API_KEY" else default
        for name, default in VARIABLE_DEFAULTS.items()
        if name != "SHOP_ALLOWED_HOSTS"
    }
    assert resolved["collector"]["environment"] == expected_env
    app_env = resolved["app"]["environment"]
    assert app_env == {
        **APP_ENVIRONMENT,
        "SHOP_ALLOWED_HOSTS": VARIABLE_DEFAULTS["SHOP_ALLOWED_HOSTS"],
    }
    for name, ports in PUBLISHED_PORTS.items():
        resolved_ports = resolved[name]["ports"]
        assert {int(port["published"]) for port in resolved_ports} == ports
        assert {port["host_ip"] for port in resolved_ports} == {"127.0.0.1"}


# --- README -------------------------------------------------------------------------------------


def readme_collector_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    heading = re.search(r"^## With a collector\b.*$", readme, re.MULTILINE)
    if heading is None:
        pytest.skip("README.md has no '## With a collector' section yet")
    rest = readme[heading.end() :]
    following = re.search(r"^## ", rest, re.MULTILINE)
    return rest[: following.start()] if following else rest


def test_readme_documents_the_stack_as_the_files_define_it() -> None:
    section = readme_collector_section()
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2:
            rows[cells[0].strip("`")] = cells
    for name, default in VARIABLE_DEFAULTS.items():
        assert name in rows, f"README's collector section has no row for {name}"
        assert rows[name][1] == (f"`{default}`" if default else "(none)"), name
    for name in ("collector", "jaeger", "prometheus"):
        assert f"`{service(name)['image']}`" in section
    for name, ports in PUBLISHED_PORTS.items():
        for port in ports:
            assert f"`{port}`" in rows[name][2], f"README does not give port {port} of {name}"
    for variable, value in APP_ENVIRONMENT.items():
        assert f"`{variable}={value}`" in section
