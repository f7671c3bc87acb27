"""The ``jiedao`` command line. Each capability mounts its own sub-commands here."""

from __future__ import annotations

import typer

from jiedao.errors import JiedaoError

app = typer.Typer(help="Jiedao 数字街道 — 命令行", no_args_is_help=True, add_completion=False)


def _mount() -> None:
    import importlib

    from jiedao import benchrun

    benchrun.register(app)
    for name in ("geo", "catalog", "auth", "demo", "web", "cases", "cases.cli_import", "hub", "cockpit.cli",
                 "cockpit.cli_warnings", "cockpit.cli_briefing"):
        # "pkg" mounts jiedao.pkg.cli; a dotted "pkg.module" mounts jiedao.pkg.module
        modname = f"jiedao.{name}" if "." in name else f"jiedao.{name}.cli"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            continue
        mod.register(app)


@app.command()
def init() -> None:
    """Create or upgrade the database schema and load the catalogue (部门、职责清单)."""
    from jiedao.db import get_database

    db = get_database()
    db.upgrade()
    try:
        from jiedao.catalog.loader import sync_catalog
    except ImportError:
        typer.echo("schema ready")
        return
    with db.session() as s:
        summary = sync_catalog(s)
    typer.echo(f"schema ready; catalogue: {summary}")


def main() -> None:
    """Entry point: domain errors become a clear message and exit code 2, not a traceback."""
    _mount()
    try:
        app(standalone_mode=False)
    except JiedaoError as e:
        typer.echo(f"错误 error: {e}", err=True)
        raise SystemExit(2) from None
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except typer.Abort:
        raise SystemExit(1) from None
    except Exception as e:  # click usage errors carry their own message
        import click

        if isinstance(e, click.ClickException):
            e.show()
            raise SystemExit(e.exit_code) from None
        raise


if __name__ == "__main__":
    main()
