"""docs/operations.md says only what the code has: its commands parse with the real
parsers, and the alerts, metrics, chart values, resource fields, reasons and links it names
exist."""

from __future__ import annotations

import ast
import contextlib
import io
import itertools
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.metrics import product_metrics

from shardkeeper import shards_cli, storage_cli
from shardkeeper.api import KINDS
from shardkeeper.api.crd import crd
from shardkeeper.storage import prune

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DOC = DOCS / "operations.md"
CHART = ROOT / "charts" / "shardkeeper"
PACKAGE = ROOT / "operator" / "shardkeeper"

FENCE = re.compile(r"^\s*```")
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&"}
VALUE_ROOTS = ("image", "operator", "serviceAccount", "metrics", "networkPolicy", "monitoring")


def split_doc(text: str) -> tuple[list[str], list[str]]:
    """(lines inside fenced code blocks, lines outside them)."""
    inside, outside, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif fenced:
            inside.append(line)
        else:
            outside.append(line)
    return inside, outside


def code_lines(text: str) -> list[str]:
    """The lines of the code blocks, a line ending in a backslash joined with the next."""
    joined: list[str] = []
    pending = ""
    for line in split_doc(text)[0]:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return joined


def inline_code(text: str) -> list[str]:
    """Every `span` of the prose and tables."""
    return re.findall(r"`([^`\n]+)`", "\n".join(split_doc(text)[1]))


def commands(text: str) -> list[str]:
    """Code-block lines and inline spans: everything that may hold a command."""
    return [*code_lines(text), *inline_code(text)]


def argv_after(line: str, *program: str) -> Iterator[list[str]]:
    """The arguments of each run of ``program`` (a sequence of words) in a shell line."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return  # not shell (prose with an apostrophe)
    size = len(program)
    for i in range(len(tokens) - size + 1):
        head = [tokens[i].rsplit("/", 1)[-1], *tokens[i + 1 : i + size]]
        if head == list(program):
            rest = tokens[i + size :]
            cut = next((j for j, t in enumerate(rest) if t in SHELL_OPERATORS), len(rest))
            yield rest[:cut]


def refused(parser: Any, argv: list[str]) -> str | None:
    """Why ``parser`` refuses ``argv``, or None if it parses."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            parser.parse_args(argv)
        except SystemExit:
            # argparse prints the usage, then the error on the last line
            return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "refused"
    return None


def shards_commands(text: str) -> list[list[str]]:
    found = []
    for line in commands(text):
        found += argv_after(line, "kubectl", "shards")
        found += argv_after(line, "shardkeeper", "shards")
    return found


def check_shards_commands(text: str) -> list[str]:
    problems = []
    for argv in shards_commands(text):
        why = refused(shards_cli.parser("kubectl shards"), argv)
        if why is not None:
            problems.append(f"kubectl shards {shlex.join(argv)}: {why}")
    return problems


def storage_commands(text: str) -> list[list[str]]:
    found = []
    for line in commands(text):
        found += argv_after(line, "shardkeeper", "storage")
    return found


def check_storage_commands(text: str) -> list[str]:
    problems = []
    for argv in storage_commands(text):
        why = refused(storage_cli.parser("shardkeeper storage"), argv)
        if why is not None:
            problems.append(f"shardkeeper storage {shlex.join(argv)}: {why}")
    return problems


def check_prune_commands(text: str) -> list[str]:
    problems = []
    for line in commands(text):
        for argv in argv_after(line, "python", "-m", "shardkeeper.storage.prune"):
            why = refused(prune.parser({}), argv)
            if why is not None:
                problems.append(f"python -m shardkeeper.storage.prune {shlex.join(argv)}: {why}")
    return problems


def chart_alerts() -> set[str]:
    template = (CHART / "templates" / "prometheusrule.yaml").read_text()
    return set(re.findall(r"^\s*- alert: (\w+)\s*$", template, re.MULTILINE))


def check_alerts(text: str) -> list[str]:
    named = set(re.findall(r"\bShardkeeper[A-Z]\w*", text))
    alerts = chart_alerts()
    return [f"alert {a} is not in the chart's PrometheusRule" for a in sorted(named - alerts)] + [
        f"alert {a} of the chart is not described" for a in sorted(alerts - named)
    ]


def check_metrics(text: str) -> list[str]:
    exported = product_metrics()
    problems = []
    for name, selector in re.findall(r"\b(shardkeeper_\w+)(?:\{([^}]*)\})?", text):
        # a histogram is named by its base name; its series add _bucket, _sum, _count
        series = name if name in exported else f"{name}_bucket"
        if series not in exported:
            problems.append(f"metric {name} is exported by nothing")
            continue
        for label in re.findall(r"(\w+)\s*=", selector):
            if label not in exported[series] | {"namespace"}:
                problems.append(f"metric {name} has no label {label}")
    return problems


def chart_value_names(text: str) -> set[str]:
    """Chart values named in spans (`operator.replicas`, `image.*`) and in --set of helm."""
    roots = "|".join(VALUE_ROOTS)
    named = {
        span
        for span in inline_code(text)
        if re.fullmatch(rf"(?:{roots})(?:\.[A-Za-z][\w-]*)+(?:\.\*)?", span)
    }
    for line in code_lines(text):
        for argv in argv_after(line, "helm"):
            for flag, value in itertools.pairwise(argv):
                if flag == "--set":
                    named |= {pair.split("=", 1)[0] for pair in value.split(",")}
    return named


def value_exists(path: str, values: dict[str, Any], schema: dict[str, Any]) -> bool:
    node: Any = values
    props: Any = schema
    for part in path.removesuffix(".*").split("."):
        node = node.get(part) if isinstance(node, dict) else None
        props = (props or {}).get("properties", {}).get(part)
        if node is None and props is None:
            return False
    return True


def check_chart_values(text: str) -> list[str]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    return [
        f"chart value {name} is in neither values.yaml nor values.schema.json"
        for name in sorted(chart_value_names(text))
        if not value_exists(name, values, schema)
    ]


def field_exists(path: str, schema: dict[str, Any]) -> bool:
    node: Any = schema
    for part in path.split("."):
        many = part.endswith("[]")
        node = (node or {}).get("properties", {}).get(part.removesuffix("[]"))
        if node is None:
            return False
        if many:
            node = node.get("items")
    return True


def check_fields(text: str) -> list[str]:
    schemas = [crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for kind in KINDS]
    named = {
        span
        for span in inline_code(text)
        if re.fullmatch(r"(?:spec|status)(?:\.[A-Za-z]\w*(?:\[\])?)+", span)
    }
    return [
        f"field {path} is in no CRD"
        for path in sorted(named)
        if not any(field_exists(path, s) for s in schemas)
    ]


def product_names() -> set[str]:
    """Every string constant and class name of the product: its reasons, Events, steps."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
            elif isinstance(node, ast.ClassDef):
                found.add(node.name)
    return found


def check_reasons(text: str) -> list[str]:
    """A capitalised word in backticks (a reason, an Event, a phase, a step) is one the
    product uses, or a file of the checkout; alerts are check_alerts'."""
    known = product_names()
    named = {
        span
        for span in inline_code(text)
        if re.fullmatch(r"[A-Z][a-z]+(?:[A-Z][a-z0-9]*)*", span)
        and not span.startswith("Shardkeeper")
        and not (ROOT / span).exists()
    }
    return [f"{name} is no name the product uses" for name in sorted(named - known)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {
        slug(line.lstrip("#"))
        for line in split_doc(path.read_text())[1]
        if re.match(r"#{1,6} ", line)
    }


def check_links(text: str, base: Path = DOC) -> list[str]:
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", "\n".join(split_doc(text)[1])):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (base.parent / file).resolve() if file else base
        if not path.exists():
            problems.append(f"link {target}: no {path.relative_to(ROOT)}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            problems.append(f"link {target}: no heading #{anchor} in {path.name}")
    return problems


CHECKS = [
    check_shards_commands,
    check_storage_commands,
    check_prune_commands,
    check_alerts,
    check_metrics,
    check_chart_values,
    check_fields,
    check_reasons,
    check_links,
]


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_the_operations_doc_names_only_what_exists(doc: str, check: Any) -> None:
    assert check(doc) == []


def test_the_doc_shows_every_shards_and_storage_command_and_the_prune_module(doc: str) -> None:
    subcommands = {word for argv in shards_commands(doc) for word in argv}
    assert set(shards_cli.COMMANDS) <= subcommands
    assert set(storage_cli.COMMANDS) <= {word for argv in storage_commands(doc) for word in argv}
    assert "python -m shardkeeper.storage.prune" in doc


# each check must fail on a wrong name, or it proves nothing
@pytest.mark.parametrize(
    ("check", "wrong"),
    [
        (check_shards_commands, "```sh\nkubectl shards status TASK -n pipelines\n```"),
        (check_shards_commands, "`kubectl shards split NAME --by key`"),
        (check_storage_commands, "```sh\nshardkeeper storage usage -o yaml\n```"),
        (check_storage_commands, "`shardkeeper storage prune-logs TASK`"),
        (check_prune_commands, "```sh\npython -m shardkeeper.storage.prune --dry-run\n```"),
        (check_alerts, "`ShardkeeperShardStuck`"),
        (check_metrics, "`shardkeeper_shard_lag_bytes`"),
        (check_metrics, '`shardkeeper_replica_state{role="PRIMARY"}`'),
        (check_chart_values, "`operator.leaseDuration`"),
        (check_chart_values, "```sh\nhelm install sk charts/shardkeeper --set image.name=x\n```"),
        (check_fields, "`spec.shards.standbys`"),
        (check_reasons, "`BucketMissing`"),
        (check_reasons, "`Splitted`"),
        (check_links, "[x](no-such.md)"),
        (check_links, "[x](splits.md#no-such-heading)"),
    ],
)
def test_each_check_fails_on_a_wrong_name(doc: str, check: Any, wrong: str) -> None:
    assert check(doc + "\n\n" + wrong + "\n") != []
