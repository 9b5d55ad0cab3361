"""`vigor-serve`: flags are generated from the Settings fields, so each flag has one definition.

Precedence: command-line flag > VIGOR_* environment variable > default.
"""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from collections.abc import Sequence

from pydantic import SecretStr, ValidationError

from .errors import ModelLoadError
from .settings import Settings


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _help(name: str, field) -> str:
    """The field's description, its default and its environment variable: `--help` shows all
    three, since the parser's own defaults are suppressed (unset flags fall through to the env)."""
    default = field.get_default(call_default_factory=True)
    if isinstance(default, bool):
        shown = "on" if default else "off"
    elif default is None or default == []:
        shown = "none"
    else:
        shown = str(default)
    text = f"{field.description} " if field.description else ""
    return f"{text}(default: {shown}; env VIGOR_{name.upper()})".replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigor-serve",
        # No abbreviations: `--ho 0.0.0.0` must not slip past checks that look for `--host`.
        allow_abbrev=False,
        description="Serve VIGOR gradient-norm rewards over HTTP. Every flag can also be set by "
        "the environment variable VIGOR_<FLAG> (e.g. VIGOR_PORT=9000).",
    )
    for name, field in Settings.model_fields.items():
        kwargs: dict = {"help": _help(name, field), "default": argparse.SUPPRESS, "dest": name}
        annotation = field.annotation
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) is typing.Literal:
            kwargs["choices"] = list(args)
        elif annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif annotation is int:
            kwargs["type"] = int
        elif typing.get_origin(annotation) is list:
            kwargs["action"] = "append"
        parser.add_argument(_flag(name), **kwargs)
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="Prepare the model (convert the default model into the cache) and exit.",
    )
    return parser


def settings_from_args(argv: Sequence[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    for key in ("admin_token", "api_token"):
        if key in given:
            given[key] = SecretStr(given[key])
    return Settings(**given), args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings, args = settings_from_args(argv)
    except ValidationError as exc:
        print(f"vigor-serve: invalid setting:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.prepare_only:
        from .models.loader import resolve_model_path

        try:
            name, path = resolve_model_path(settings.model, settings.cache_dir)
        except ModelLoadError as exc:
            print(f"vigor-serve: {exc.message}", file=sys.stderr)
            return 1
        print(f"{name} ready at {path}")
        return 0

    from .serve import StartError, serve

    try:
        if settings.ray:
            from .rayserve.app import serve_on_ray

            return serve_on_ray(settings)
        return serve(settings)
    except StartError as exc:
        print(f"vigor-serve: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
