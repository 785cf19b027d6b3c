"""Command-line handling shared by every `python -m pipeline.*` entry point.

`preset=NAME` (or `--preset NAME`) picks the base config, `a.b.c=value`
overrides any field, `--print-config` prints the resolved config and exits.
Validation is OmegaConf's structured-config checking; its errors are rewritten
to name the key and what it accepts.
"""

from __future__ import annotations

import sys
from dataclasses import fields, is_dataclass
from enum import Enum
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
)

from pipeline.config import Config, ConfigError, validate
from pipeline.presets import PRESETS, describe_presets


def _allowed(cfg: Config, key: str) -> str:
    """Describe what `key` accepts, or which keys exist where it was expected."""
    node, path = cfg, []
    for part in key.split("."):
        if not is_dataclass(node):
            return f"'{'.'.join(path)}' is a value, not a section"
        names = [f.name for f in fields(node)]
        if part not in names:
            where = ".".join(path) or "the top level"
            return f"unknown key '{key}'; keys at {where}: {', '.join(names)}"
        node, path = getattr(node, part), path + [part]
    if isinstance(node, Enum):
        return f"allowed values for '{key}': {', '.join(m.value for m in type(node))}"
    if is_dataclass(node):
        return f"'{key}' is a section; set one of: {', '.join(f.name for f in fields(node))}"
    return f"'{key}' expects {type(node).__name__} (current: {node!r})"


class HelpRequested(Exception):
    """-h/--help: print the step's help and exit 0."""


def help_text() -> str:
    """The running entry point's docstring, the presets and how to see every key."""
    main = sys.modules.get("__main__")
    step = ((getattr(main, "__spec__", None) and main.__spec__.name) or "pipeline.<step>").removesuffix(".__main__")
    doc = (getattr(main, "__doc__", None) or "").strip()
    return "\n".join([
        f"usage: python -m {step} [preset=NAME] [key.sub=value ...] [--print-config]",
        "", doc, "", "presets:", describe_presets(), "",
        "Any field of the config tree can be overridden with a dotted key (e.g. train.steps=200);",
        f"`python -m {step} [preset=NAME] --print-config` prints every key with its value.",
    ])


def _split(argv: list[str]) -> tuple[str, list[str], bool]:
    preset, overrides, show = "demo", [], False
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--print-config":
            show = True
        elif arg == "--preset":
            if not args:
                raise ConfigError("--preset needs a name: " + ", ".join(PRESETS))
            preset = args.pop(0)
        elif arg.startswith("preset="):
            preset = arg.split("=", 1)[1]
        elif arg in ("-h", "--help"):
            raise HelpRequested
        elif "=" in arg and not arg.startswith("-"):
            overrides.append(arg)
        else:
            raise ConfigError(f"cannot parse argument '{arg}': expected key=value, preset=NAME or --print-config")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; allowed values: {', '.join(PRESETS)}")
    return preset, overrides, show


def load_config(argv: list[str] | None = None) -> tuple[Config, bool]:
    """Resolve preset + overrides into a typed `Config`. Returns (config, print_requested)."""
    preset, overrides, show = _split(sys.argv[1:] if argv is None else argv)
    base = PRESETS[preset]()
    merged = OmegaConf.structured(base)
    for item in overrides:
        key, _, value = item.partition("=")
        try:
            merged.merge_with(OmegaConf.from_dotlist([item]))
        except (ConfigKeyError, ConfigAttributeError) as err:
            raise ConfigError(_allowed(base, key) or str(err)) from None
        except OmegaConfBaseException:
            hint = _allowed(base, key)
            raise ConfigError(f"invalid value {value!r} for '{key}': {hint}") from None
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, Config)
    validate(cfg)
    return cfg, show


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_flat_dict(cfg: Config) -> dict[str, Any]:
    """`{'train.lr': 0.0003, ...}`: for MLflow params and run comparison."""
    container = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = node

    walk("", container)
    return flat


def parse_or_exit(argv: list[str] | None = None) -> Config:
    """Entry-point helper: print a clean error (exit 2) or the config (exit 0) when asked."""
    try:
        cfg, show = load_config(argv)
    except HelpRequested:
        print(help_text())
        raise SystemExit(0) from None
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if show:
        print(to_yaml(cfg), end="")
        raise SystemExit(0)
    return cfg
