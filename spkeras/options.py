"""CLI options generated from the :class:`~spkeras.method.Method` switches: one flag per switch,
with the help text and choices of the switch's one definition."""

from __future__ import annotations

import argparse
import dataclasses

from .method import Method
from .methods import PRESETS


def on_off(text: str) -> bool:
    """Parse ``on``/``off`` into a bool (argparse type)."""
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"must be on or off, got {text}")
    return text == "on"


def flag(field: dataclasses.Field) -> str:
    """The CLI option of a switch: its own ``flag`` or ``--`` + the field name with dashes."""
    return field.metadata["flag"] or "--" + field.name.replace("_", "-")


def _argument(field: dataclasses.Field) -> dict:
    """argparse keywords for one switch (its type from its default or annotation)."""
    meta = field.metadata
    default = f" (default: {_shown(field.default)})" if field.default is not None else ""
    spec = {"dest": field.name, "help": meta["help"] + default, "default": None}
    if meta["choices"]:
        spec["choices"] = meta["choices"]
    elif isinstance(field.default, bool):
        spec.update(type=on_off, metavar="on|off")
    elif "int" in str(field.type):
        spec["type"] = int
    else:
        spec["type"] = float
    if meta["metavar"]:
        spec["metavar"] = meta["metavar"]
    return spec


def _shown(value) -> str:
    if value is None:
        return "–"
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def add_method_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """``--method`` and one option per switch, in a group of their own; returns the group."""
    group = parser.add_argument_group("conversion method (a preset, then switches that override it; "
                                      "defaults shown are the framework's, a preset sets its own)")
    group.add_argument("--method", default="ecc", choices=sorted(PRESETS), help="preset (default: ecc)")
    for field in Method.switches():
        group.add_argument(flag(field), **_argument(field))
    return group


def add_switch(parser: argparse.ArgumentParser, name: str) -> None:
    """One switch's option on its own (``info`` reads two), defaulting to the framework's value."""
    field = next(f for f in Method.switches() if f.name == name)
    parser.add_argument(flag(field), **{**_argument(field), "default": field.default})


def preset_settings(name: str) -> str:
    """What a preset sets, as the CLI options that differ from the framework's defaults."""
    preset, base = PRESETS[name], Method()
    changed = [f"{flag(f)} {_shown(getattr(preset, f.name))}" for f in Method.switches()
               if getattr(preset, f.name) != getattr(base, f.name)]
    return ", ".join(changed) or "the framework's defaults"


def presets_help() -> str:
    """One line per preset: where it comes from and what it sets."""
    return "Methods (--method): " + "; ".join(
        f"{name}: {PRESETS[name].citation}; sets {preset_settings(name)}" for name in PRESETS) + "."


def method_overrides(args: argparse.Namespace) -> dict:
    """The switches given on the command line, by field name (None: keep the preset's)."""
    return {field.name: getattr(args, field.name) for field in Method.switches()}


def switches_table() -> str:
    """The Markdown table of every switch (docs/switches.md is this text; a test keeps it so)."""
    names = list(PRESETS)
    lines = ["# Conversion switches", "",
             "Generated from `spkeras.method.Method` by `python -m spkeras.options`; do not edit by hand. "
             "Every switch is a CLI option of `convert`, `evaluate` and `export`, and a keyword of "
             "`spkeras.prepare`, `spkeras.convert` and `spkeras.evaluate`; it overrides the chosen preset's value.",
             "", "| switch | CLI option | allowed | " + " | ".join(f"`{n}`" for n in names) + " | what it does |",
             "|---|---|---|" + "---|" * len(names) + "---|"]
    for field in Method.switches():
        allowed = ", ".join(field.metadata["choices"]) or ("on, off" if isinstance(field.default, bool) else "number")
        values = " | ".join(_shown(getattr(PRESETS[n], field.name)) for n in names)
        lines.append(f"| `{field.name}` | `{flag(field)}` | {allowed} | {values} | {field.metadata['help']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(switches_table(), end="")
