import time

import pytest

from taskspace.core.environment import DockerBuild, HealthCheck, InitFile, ServiceDecl
from taskspace.core.errors import InvalidInput
from taskspace.core.services_spec import (
    MAX_SERVICES,
    MAX_SERVICES_BYTES,
    parse_services,
    resolve_publish,
)

PATH = ".taskspace/services.yaml"

FULL = """\
# Dependencies of the payments API.
x-pg-env: &pg-env
  POSTGRES_PASSWORD: dev
  POSTGRES_DB: payments

services:
  db:
    image: postgres:16
    env: *pg-env
    command: ["postgres", "-c", "fsync=off"]
    ports: [5432]
    healthcheck:
      test: "pg_isready -U postgres"
      interval: 1s
      timeout: 5s
      retries: 60
      start_period: 0s
    init:
      - {source: db/schema.sql, target: /docker-entrypoint-initdb.d/schema.sql}
    publish:
      DATABASE_URL: "postgresql://postgres:dev@${host}:5432/payments"

  kafka:
    build:
      dockerfile: .taskspace/kafka.Dockerfile
      context: .taskspace
      args: {KAFKA_VERSION: 3.7, SCALA: "2.13"}
      target: runtime
    command: /opt/kafka/bin/kafka-server-start.sh /etc/kafka.properties
    ports: [9092, "9093"]
    healthcheck:
      test: ["kafka-topics.sh", "--bootstrap-server", "localhost:9092", "--list"]
      interval: 500ms
    init:
      - run: ["kafka-topics.sh", "--create", "--topic", "orders", "--partitions", 3]
      - run: "kafka-topics.sh --create --topic refunds"
    publish:
      KAFKA_BROKERS: "${host}:9092"
      KAFKA_SSL: false
"""


def invalid(text: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_services(text)
    return caught.value


def one(spec: str) -> ServiceDecl:
    """The single service ``svc`` declared by the indented YAML ``spec``."""
    (decl,) = parse_services("services:\n  svc:\n" + "".join(f"    {line}\n" for line in spec.splitlines()))
    return decl


# --------------------------------------------------------------------------------------------
# Valid files


def test_full_example():
    db, kafka = parse_services(FULL)
    assert db == ServiceDecl(
        name="db",
        image="postgres:16",
        env={"POSTGRES_PASSWORD": "dev", "POSTGRES_DB": "payments"},
        command=["postgres", "-c", "fsync=off"],
        ports=[5432],
        healthcheck=HealthCheck(
            test=["CMD-SHELL", "pg_isready -U postgres"],
            interval_seconds=1.0,
            timeout_seconds=5.0,
            retries=60,
            start_period_seconds=0.0,
        ),
        init_files=[InitFile(source="db/schema.sql", target="/docker-entrypoint-initdb.d/schema.sql")],
        publish={"DATABASE_URL": "postgresql://postgres:dev@${host}:5432/payments"},
    )
    assert kafka.image is None
    assert kafka.build == DockerBuild(
        dockerfile=".taskspace/kafka.Dockerfile",
        context=".taskspace",
        args={"KAFKA_VERSION": "3.7", "SCALA": "2.13"},
        target="runtime",
    )
    assert kafka.command == ["/bin/sh", "-c", "/opt/kafka/bin/kafka-server-start.sh /etc/kafka.properties"]
    assert kafka.ports == [9092, 9093]
    assert kafka.healthcheck is not None
    assert kafka.healthcheck.test == [
        "CMD",
        "kafka-topics.sh",
        "--bootstrap-server",
        "localhost:9092",
        "--list",
    ]
    assert kafka.healthcheck.interval_seconds == 0.5
    assert kafka.healthcheck.timeout_seconds == 5.0
    assert kafka.init_files == []
    assert kafka.init_commands == [
        ["kafka-topics.sh", "--create", "--topic", "orders", "--partitions", "3"],
        ["/bin/sh", "-c", "kafka-topics.sh --create --topic refunds"],
    ]
    assert kafka.publish == {"KAFKA_BROKERS": "${host}:9092", "KAFKA_SSL": "false"}


def test_services_keep_file_order():
    text = "services:\n" + "".join(f"  s{n}:\n    image: busybox\n" for n in (3, 1, 2))
    assert [decl.name for decl in parse_services(text)] == ["s3", "s1", "s2"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n",
        "# nothing yet\n",
        "---\n",
        "services:\n",
        "services: {}\n",
        "services: null\n",
        "x-notes: hi\n",
    ],
)
def test_empty_files_declare_no_services(text):
    assert parse_services(text) == []


def test_exactly_the_maximum_number_of_services():
    text = "services:\n" + "".join(f"  s{n}:\n    image: busybox\n" for n in range(MAX_SERVICES))
    assert len(parse_services(text)) == MAX_SERVICES


@pytest.mark.parametrize("name", ["a", "db", "redis-cache", "s3", "a" * 31, "a-b-c"])
def test_valid_service_names(name):
    assert parse_services(f"services:\n  {name}:\n    image: x\n")[0].name == name


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (".taskspace/db", DockerBuild(dockerfile=".taskspace/db/Dockerfile", context=".taskspace/db")),
        ("{}", DockerBuild(dockerfile="Dockerfile", context=".")),
        ("{context: ./docker/../svc/}", DockerBuild(dockerfile="svc/Dockerfile", context="svc")),
        ("{dockerfile: svc.Dockerfile}", DockerBuild(dockerfile="svc.Dockerfile", context=".")),
        (
            "{dockerfile: d/Dockerfile, args: {N: 1, B: true}}",
            DockerBuild(dockerfile="d/Dockerfile", args={"N": "1", "B": "true"}),
        ),
    ],
)
def test_build_shapes(build, expected):
    assert one(f"build: {build}").build == expected


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        ('"curl -f http://localhost/"', ["CMD-SHELL", "curl -f http://localhost/"]),
        ('["redis-cli", "ping"]', ["CMD", "redis-cli", "ping"]),
        ('["CMD", "redis-cli", "ping"]', ["CMD", "redis-cli", "ping"]),
        ('["CMD-SHELL", "redis-cli ping || exit 1"]', ["CMD-SHELL", "redis-cli ping || exit 1"]),
    ],
)
def test_healthcheck_test_forms(test, expected):
    decl = one(f"image: redis\nhealthcheck:\n  test: {test}")
    assert decl.healthcheck == HealthCheck(test=expected)


def test_healthcheck_none_turns_it_off():
    assert one('image: redis\nhealthcheck:\n  test: ["NONE"]').healthcheck is None


def test_healthcheck_durations():
    decl = one(
        "image: x\nhealthcheck:\n  test: t\n  interval: 2\n  timeout: 1m\n  start_period: 1m30s\n  retries: 3"
    )
    assert decl.healthcheck == HealthCheck(
        test=["CMD-SHELL", "t"],
        interval_seconds=2.0,
        timeout_seconds=60.0,
        start_period_seconds=90.0,
        retries=3,
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("dev", "dev"),
        ("''", ""),
        ("5432", "5432"),
        ("1.5", "1.5"),
        ("true", "true"),
        ("off", "false"),
        ("2024-01-31", "2024-01-31"),
        ('"${NOT_EXPANDED}"', "${NOT_EXPANDED}"),
    ],
)
def test_env_values_become_strings(value, expected):
    assert one(f"image: x\nenv:\n  V: {value}").env == {"V": expected}


def test_ports_accept_digit_strings_and_drop_duplicates():
    assert one("image: x\nports: [80, '80', 443]").ports == [80, 443]


def test_init_paths_are_normalized():
    decl = one(
        "image: x\ninit:\n  - {source: ./db/../db/seed.sql, target: /docker-entrypoint-initdb.d//seed.sql}"
    )
    assert decl.init_files == [InitFile(source="db/seed.sql", target="/docker-entrypoint-initdb.d/seed.sql")]


def test_anchors_and_merge_keys_are_allowed():
    text = """\
x-common: &common
  image: redis:7
  ports: [6379]
services:
  cache:
    <<: *common
  sessions:
    <<: *common
    env: {MAXMEMORY: 64mb}
"""
    cache, sessions = parse_services(text)
    assert (cache.image, cache.ports) == ("redis:7", [6379])
    assert (sessions.image, sessions.env) == ("redis:7", {"MAXMEMORY": "64mb"})


def test_extension_keys_in_a_service_are_ignored():
    assert one("image: x\nx-note: kept for people").image == "x"


def test_resolve_publish():
    (decl,) = parse_services(
        "services:\n  db:\n    image: postgres\n    publish:\n"
        '      URL: "postgresql://${host}:5432/${host}"\n      PLAIN: "no host"\n'
    )
    assert resolve_publish(decl, "db.ws-12") == {
        "URL": "postgresql://db.ws-12:5432/db.ws-12",
        "PLAIN": "no host",
    }
    assert decl.publish["URL"] == "postgresql://${host}:5432/${host}"


# --------------------------------------------------------------------------------------------
# Hostile and broken files

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
services: {}
"""


def service(spec: str) -> str:
    return "services:\n  svc:\n" + "".join(f"    {line}\n" for line in spec.splitlines())


@pytest.mark.parametrize(
    ("text", "fragments", "field"),
    [
        # YAML itself
        ("services:\n  db:\n    image: x\n   env: {}\n", ["line 4, column 4"], None),
        ("services: [\n", ["line 2, column 1"], None),
        ('services:\n  db: {image: "x}\n', ["line 3"], None),
        ("services:\n  db:\n\timage: x\n", ["line 3, column 1"], None),
        ("a: !!python/object/apply:os.system ['echo pwned']\n", ["line 1", "python/object/apply"], None),
        ("services: {}\nservices: {}\nx: *undefined\n", ["line 3", "undefined"], None),
        ("x: \x00\n", ["line 1, column 4", "#x0000"], None),
        ("services:\n  db:\n    image: \x07x\n", ["line 3, column 12", "#x0007"], None),
        ("x: 2024-13-45\n", ["cannot read", "month"], None),
        ("x: " + "9" * 5000 + "\n", ["cannot read"], None),
        ("[" * 5000 + "]" * 5000, ["nested too deeply"], None),
        ("x: [\ud800]\n", ["not valid UTF-8"], None),
        # shape
        ("- db\n", ["must be a mapping with a 'services' key, not a list"], None),
        (
            "services:\n  db:\n    image: x\nservice:\n  cache: {}\n",
            ["unknown key 'service' in the top level"],
            "service",
        ),
        ("services: [db, cache]\n", ["services must be a mapping", "not a list"], "services"),
        ("services: db\n", ["services must be a mapping"], "services"),
        ("services:\n  db:\n", ["services.db has no settings"], "services.db"),
        ("services:\n  db: postgres\n", ["services.db must be a mapping"], "services.db"),
        # names
        ("services:\n  DB:\n    image: x\n", ["'DB' is not a valid service name"], "services.DB"),
        ("services:\n  my_db:\n    image: x\n", ["'my_db'"], "services.my_db"),
        ("services:\n  1db:\n    image: x\n", ["'1db'"], "services.1db"),
        ("services:\n  db-:\n    image: x\n", ["'db-'"], "services.db-"),
        ("services:\n  " + "a" * 32 + ":\n    image: x\n", ["not a valid service name"], None),
        ("services:\n  123:\n    image: x\n", ["'123'"], "services.123"),
        ("services:\n  db.local:\n    image: x\n", ["'db.local'"], "services.db.local"),
        # image / build
        (service("env: {A: b}"), ["services.svc has neither image nor build"], "services.svc"),
        (service("image: x\nbuild: ."), ["services.svc sets both image and build"], "services.svc"),
        (service("image: [postgres]"), ["services.svc.image must be an image name"], "services.svc.image"),
        (service("image: postgres 16"), ["services.svc.image"], "services.svc.image"),
        (service("image: ''"), ["services.svc.image"], "services.svc.image"),
        (service("build: 5"), ["services.svc.build must be a mapping"], "services.svc.build"),
        (
            service("build: {dockerfile: ../../Dockerfile}"),
            ["services.svc.build.dockerfile", "outside the repository"],
            "services.svc.build.dockerfile",
        ),
        (
            service("build: {context: /etc}"),
            ["services.svc.build.context", "absolute path"],
            "services.svc.build.context",
        ),
        (service("build: {context: ..}"), ["outside the repository"], "services.svc.build.context"),
        (
            service("build: {dockerfile: D, file: x}"),
            ["unknown key 'file' in services.svc.build"],
            "services.svc.build.file",
        ),
        (
            service("build: {dockerfile: D, args: {A: [1]}}"),
            ["services.svc.build.args.A must be a string"],
            "services.svc.build.args.A",
        ),
        (
            service("build: {dockerfile: D, target: 3}"),
            ["services.svc.build.target must be a non-empty string"],
            "services.svc.build.target",
        ),
        # keys
        (
            service("image: x\nhealtcheck: {test: t}"),
            ["unknown key 'healtcheck' in services.svc"],
            "services.svc.healtcheck",
        ),
        (service("image: x\nprivileged: true"), ["unknown key 'privileged'"], "services.svc.privileged"),
        # env / publish
        (
            service("image: x\nenv: {1A: b}"),
            ["services.svc.env has the invalid name '1A'"],
            "services.svc.env",
        ),
        (service("image: x\nenv: {A-B: b}"), ["'A-B'"], "services.svc.env"),
        (service("image: x\nenv: {A: }"), ["services.svc.env.A has no value"], "services.svc.env.A"),
        (
            service("image: x\nenv: {A: [1, 2]}"),
            ["services.svc.env.A must be a string, number or boolean"],
            "services.svc.env.A",
        ),
        (service("image: x\nenv: [A=1]"), ["services.svc.env must be a mapping"], "services.svc.env"),
        (service('image: x\nenv: {A: "nul\\0"}'), ["NUL"], "services.svc.env.A"),
        (
            service("image: x\npublish: {URL: 'http://${HOME}/x'}"),
            ["services.svc.publish.URL", "'${HOME}'"],
            "services.svc.publish.URL",
        ),
        (service("image: x\npublish: {URL: 'http://${host'}"), ["'${host'"], "services.svc.publish.URL"),
        (service("image: x\npublish: {URL: '${host}:${port}'}"), ["'${port}'"], "services.svc.publish.URL"),
        (service("image: x\npublish: {URL: '${}'}"), ["'${}'"], "services.svc.publish.URL"),
        (service("image: x\npublish: {bad name: x}"), ["invalid name 'bad name'"], "services.svc.publish"),
        # command
        (service("image: x\ncommand: []"), ["services.svc.command is an empty list"], "services.svc.command"),
        (service("image: x\ncommand: '  '"), ["services.svc.command is empty"], "services.svc.command"),
        (
            service("image: x\ncommand: {run: x}"),
            ["services.svc.command must be a list"],
            "services.svc.command",
        ),
        (service("image: x\ncommand: [a, [b]]"), ["services.svc.command[1]"], "services.svc.command[1]"),
        # ports
        (service("image: x\nports: 5432"), ["services.svc.ports must be a list"], "services.svc.ports"),
        (
            service("image: x\nports: [0]"),
            ["services.svc.ports[0]", "between 1 and 65535"],
            "services.svc.ports[0]",
        ),
        (
            service("image: x\nports: [80, 70000]"),
            ["services.svc.ports[1]", "70000"],
            "services.svc.ports[1]",
        ),
        (service("image: x\nports: [true]"), ["services.svc.ports[0]"], "services.svc.ports[0]"),
        (service("image: x\nports: ['5432:5432']"), ["services.svc.ports[0]"], "services.svc.ports[0]"),
        # healthcheck
        (
            service("image: x\nhealthcheck: pg_isready"),
            ["services.svc.healthcheck must be a mapping"],
            "services.svc.healthcheck",
        ),
        (
            service("image: x\nhealthcheck: {interval: 1s}"),
            ["services.svc.healthcheck has no test"],
            "services.svc.healthcheck.test",
        ),
        (
            service("image: x\nhealthcheck: {test: t, interval: 5 minutes}"),
            ["services.svc.healthcheck.interval", "'5 minutes' is not a duration"],
            "services.svc.healthcheck.interval",
        ),
        (
            service("image: x\nhealthcheck: {test: t, interval: 0}"),
            ["services.svc.healthcheck.interval must be more than 0"],
            "services.svc.healthcheck.interval",
        ),
        (
            service("image: x\nhealthcheck: {test: t, timeout: 2h}"),
            ["services.svc.healthcheck.timeout", "at most 3600"],
            "services.svc.healthcheck.timeout",
        ),
        (
            service("image: x\nhealthcheck: {test: t, start_period: -1}"),
            ["services.svc.healthcheck.start_period"],
            "services.svc.healthcheck.start_period",
        ),
        (
            service("image: x\nhealthcheck: {test: t, retries: 0}"),
            ["services.svc.healthcheck.retries"],
            "services.svc.healthcheck.retries",
        ),
        (
            service("image: x\nhealthcheck: {test: t, retries: many}"),
            ["services.svc.healthcheck.retries"],
            "services.svc.healthcheck.retries",
        ),
        (
            service("image: x\nhealthcheck: {test: [CMD]}"),
            ["services.svc.healthcheck.test is malformed"],
            "services.svc.healthcheck.test",
        ),
        (
            service("image: x\nhealthcheck: {test: [CMD-SHELL, a, b]}"),
            ["CMD-SHELL must be followed by one"],
            "services.svc.healthcheck.test",
        ),
        (
            service("image: x\nhealthcheck: {test: ''}"),
            ["services.svc.healthcheck.test is empty"],
            "services.svc.healthcheck.test",
        ),
        (
            service("image: x\nhealthcheck: {test: t, disable: true}"),
            ["unknown key 'disable'"],
            "services.svc.healthcheck.disable",
        ),
        # init
        (
            service("image: x\ninit: {source: a, target: /a}"),
            ["services.svc.init must be a list"],
            "services.svc.init",
        ),
        (
            service("image: x\ninit: [schema.sql]"),
            ["services.svc.init[0] must be a mapping"],
            "services.svc.init[0]",
        ),
        (
            service("image: x\ninit: [{source: /etc/shadow, target: /x}]"),
            ["services.svc.init[0].source", "absolute path"],
            "services.svc.init[0].source",
        ),
        (
            service("image: x\ninit: [{source: ../../secrets, target: /x}]"),
            ["outside the repository"],
            "services.svc.init[0].source",
        ),
        (
            service("image: x\ninit: [{source: a.sql, target: relative/a.sql}]"),
            ["services.svc.init[0].target", "not an absolute path"],
            "services.svc.init[0].target",
        ),
        (
            service("image: x\ninit: [{source: a.sql}]"),
            ["services.svc.init[0] needs both source and target"],
            "services.svc.init[0]",
        ),
        (
            service("image: x\ninit: [{source: a.sql, target: /a, run: x}]"),
            ["mixes run with source/target"],
            "services.svc.init[0]",
        ),
        (
            service("image: x\ninit: [{run: []}]"),
            ["services.svc.init[0].run is an empty list"],
            "services.svc.init[0].run",
        ),
        (
            service("image: x\ninit: [{copy: a}]"),
            ["unknown key 'copy' in services.svc.init[0]"],
            "services.svc.init[0].copy",
        ),
    ],
)
def test_refuses(text, fragments, field):
    error = invalid(text)
    assert error.message.startswith(PATH)
    for fragment in fragments:
        assert fragment in error.message
    if field is not None:
        assert error.field == field
    assert error.hint


def test_billion_laughs_fails_fast():
    started = time.monotonic()
    error = invalid(BILLION_LAUGHS)
    assert time.monotonic() - started < 2
    assert "expands to more than" in error.message
    assert "anchors" in (error.hint or "")


def test_an_alias_that_contains_itself_is_refused():
    assert "refers to itself" in invalid("x: &a [*a]\nservices: {}\n").message


def test_too_many_services():
    text = "services:\n" + "".join(f"  s{n}:\n    image: busybox\n" for n in range(MAX_SERVICES + 1))
    error = invalid(text)
    assert f"{MAX_SERVICES + 1} services" in error.message
    assert f"at most {MAX_SERVICES}" in error.message


def test_oversized_file_is_refused():
    text = "services: {}\n" + "# padding\n" * (MAX_SERVICES_BYTES // 10 + 1)
    assert "larger than 256 KiB" in invalid(text).message


def test_syntax_errors_use_the_given_path():
    with pytest.raises(InvalidInput) as caught:
        parse_services("services: [\n", path="deps.yaml")
    assert caught.value.message.startswith("deps.yaml line 2, column 1:")
