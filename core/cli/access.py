"""Access commands of the `stepscope` CLI: `access invite`, `access list`, `access revoke`.

An app served beyond loopback opens a database only through a personal link; these commands
make, list and revoke the links' invitations, which live in the database file itself.
`register(app)` adds the `access` group to the main Typer app.
"""

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from core.cli.options import Database, command_group, open_existing_store
from core.cli.output import console, errors, user_errors

DEFAULT_URL = "http://localhost:8501"
access_app = command_group("Invite people to a database served on a network.")


@access_app.command("invite")
def invite_command(
    name: Annotated[str, typer.Argument(help="the person's name (their labels are saved under it)")],
    role: Annotated[str, typer.Option(help="organiser, annotator or viewer")] = "annotator",
    expires: Annotated[str, typer.Option(help="how long the link works: a number and s, m, h, d or w")] = "7d",
    url: Annotated[str, typer.Option(help="the address people open: the server's network name and port")] = DEFAULT_URL,
    db: Database = None,
) -> None:
    """Print a personal link (with a secret token, shown only now) that signs NAME in with ROLE."""
    from core.store import default_db_path
    from core.store.access import check_name, check_role, invitation_link, parse_lifetime

    with user_errors():
        # Everything the user typed is checked before a database file is opened or created.
        name, role, lifetime = check_name(name), check_role(role), parse_lifetime(expires)
        invitation_link(url, "x.db", "x")
        store = open_existing_store(db)
        invitation, token = store.create_invitation(name, role, lifetime)
        link = invitation_link(url, store.path.name, token)
    console.print(f"invitation {invitation.id}: {escape(name)} as {role}, until {invitation.expires_at}",
                   highlight=False)  # fmt: skip
    print(link)  # plain print: no wrapping or markup inside the link
    app_folder = default_db_path().resolve().parent
    if store.path.resolve().parent != app_folder:
        errors.print(f"note: the app opens database files in {escape(str(app_folder))} only (set $STEPSCOPE_DB "
                      f"for the server); this one is in {escape(str(store.path.resolve().parent))}",
                      highlight=False, soft_wrap=True)  # fmt: skip


@access_app.command("list")
def list_command(db: Database = None) -> None:
    """The invitations: id, name, role, state (active, expired or revoked), dates. No tokens."""
    with user_errors():
        invitations = open_existing_store(db).invitations()
    if not invitations:
        console.print("no invitations", highlight=False)
        return
    table = Table("id", "name", "role", "state", "created", "expires", "last used")
    for i in invitations:
        table.add_row(str(i.id), escape(i.name), i.role, i.state(), _minute(i.created_at), _minute(i.expires_at),
                      _minute(i.last_used_at))  # fmt: skip
    console.print(table)


@access_app.command("revoke")
def revoke_command(
    who: Annotated[str, typer.Argument(help="an invitation id, or a name (all of that person's invitations)")],
    db: Database = None,
) -> None:
    """Revoke invitations: their links stop working, sessions they opened included."""
    with user_errors():
        revoked = open_existing_store(db).revoke_invitations(who)
    for i in revoked:
        console.print(f"invitation {i.id} ({escape(i.name)}, {i.role}) revoked", highlight=False)


def _minute(stamp: str | None) -> str:
    return stamp[:16].replace("T", " ") + " UTC" if stamp else ""


def register(app: typer.Typer) -> None:
    app.add_typer(access_app, name="access")
