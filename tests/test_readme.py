"""Every example in the READMEs works as printed (paths aside), and the synopsis is complete.

Each ``bench ...`` line of a shell block is parsed by the real argument parser; a run is
resolved (names, addons, options) as `bench run` would before any work; a table command
loads its spec and preset. Each TOML block is parsed and checked as what it is: a run
config, a table spec, a pairs manifest (or a pyproject excerpt, left alone).
"""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from bench.cli import build_parser, spec_from_args
from bench.plugins import get_registry
from bench.run_checks import CONFIG_TYPES
from bench.runner import resolve_components

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "tables" / "README.md"]
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)


def blocks(language: set[str]) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for _, lang, body in FENCE.findall(doc.read_text(encoding="utf-8")):
            if lang in language:
                indent = min(
                    (len(ln) - len(ln.lstrip()) for ln in body.splitlines() if ln.strip()),
                    default=0,
                )
                found.append(
                    (str(doc.relative_to(ROOT)), "\n".join(ln[indent:] for ln in body.splitlines()))
                )
    return found


def commands() -> list[tuple[str, list[str]]]:
    found = []
    for doc, body in blocks({"bash", "sh"}):
        for line in body.replace("\\\n", " ").splitlines():  # join continued lines
            for part in line.split("&&"):
                argv = shlex.split(part, comments=True)
                if argv and argv[0] == "bench":
                    found.append((doc, argv[1:]))
    return found


def inline_commands() -> list[str]:
    """`bench ...` in running text."""
    found = []
    for doc in DOCS:
        found += re.findall(r"`(bench [^`]+)`", doc.read_text(encoding="utf-8"))
    return sorted(set(found))


COMMANDS = commands()
INLINE = inline_commands()
TOML_BLOCKS = blocks({"toml"})


def test_the_readmes_have_examples_to_check() -> None:
    kinds = {argv[0] for _, argv in COMMANDS}
    assert {"run", "table"} <= kinds and len(TOML_BLOCKS) >= 4


@pytest.mark.parametrize(("doc", "argv"), COMMANDS, ids=[" ".join(a) for _, a in COMMANDS])
def test_every_bench_command_parses_and_resolves(doc: str, argv: list[str]) -> None:
    args = build_parser().parse_args(argv)  # SystemExit on an unknown flag or value
    if args.command == "run":
        spec = spec_from_args(args)
        resolve_components(get_registry(), spec)
    elif args.command == "table":
        from bench.table_spec import check_components, load_spec

        spec = load_spec(args.spec) if not args.spec.startswith("path/") else None
        if spec is not None:
            assert args.preset in spec.presets
            check_components(spec, get_registry())


@pytest.mark.parametrize("text", INLINE)
def test_every_inline_bench_command_parses(text: str) -> None:
    argv = shlex.split(re.sub(r"\$\([^)]*\)", "DIR", text))[1:]  # $(bench data demo) is a path
    parser = build_parser()
    if argv == ["--version"]:
        return  # argparse's version action exits on purpose
    if len(argv) == 1 and not argv[0].startswith("-"):  # `bench predict` names a command
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert argv[0] in commands.choices
        return
    parser.parse_args(argv)


@pytest.mark.parametrize(
    ("doc", "text"), TOML_BLOCKS, ids=[f"{d}#{i}" for i, (d, _) in enumerate(TOML_BLOCKS)]
)
def test_every_toml_block_parses_and_resolves(doc: str, text: str, tmp_path: Path) -> None:
    data = tomllib.loads(text)
    path = tmp_path / "example.toml"
    path.write_text(text, encoding="utf-8")
    if "detector" in data:  # a run config
        assert set(data) <= set(CONFIG_TYPES)
        args = build_parser().parse_args(["run", "--config", str(path)])
        resolve_components(get_registry(), spec_from_args(args))
    elif "rows" in data:  # a table spec
        from bench.table_spec import check_components, load_spec

        check_components(load_spec(path), get_registry())
    elif "generators" in data:  # a pairs manifest
        from bench.data.pairs import GENERATOR_KEYS, MANIFEST_KEYS

        assert set(data) <= MANIFEST_KEYS
        for table in data["generators"].values():
            assert set(table) == GENERATOR_KEYS
    else:
        assert "project" in data, f"a TOML block in {doc} that no check knows: {text[:60]}"


def test_the_synopsis_lists_every_flag() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    synopsis = readme.split("## The command line", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    shown = set(re.findall(r"--[a-z][a-z-]*", synopsis))
    parser = build_parser()
    flags = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= {s for a in sub._actions for s in a.option_strings if s.startswith("--")}
    missing = sorted(flags - shown - {"--help"})
    assert not missing, f"flags --help has but the README synopsis does not: {missing}"
