"""`ymera backup` and `ymera restore`: the platform's database to a backup directory and back.

    ymera backup                                   # into STATE_DIR/backups/ymera-ENGINE-TIME
    ymera backup /backups/ymera-monday             # a new directory of your choice
    ymera restore /backups/ymera-monday --database-url postgresql://db2/ymera
    ymera restore /backups/ymera-monday --force    # replace what the configured database holds

Both work straight on storage (no cluster needed) and take `--json`. A backup may be taken
while the platform runs; restore into a database the platform is not using (stop it first,
`ymera down`, when restoring over its own database with `--force`).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path

from cluster import cli_common
from cluster.backup import default_destination, engine_of, restore_backup, take_backup

AddCommand = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]


def _counts(tasks_by_status: dict[str, int]) -> str:
    total = sum(tasks_by_status.values())
    parts = ", ".join(f"{status} {n}" for status, n in sorted(tasks_by_status.items()))
    return f"{total} tasks" + (f" ({parts})" if parts else "")


def cmd_backup(args: argparse.Namespace) -> None:
    settings = cli_common.settings_of(args)
    url = args.database_url or settings.resolved_database_url
    engine, _ = engine_of(url)
    destination = (Path(args.destination) if args.destination
                   else default_destination(settings.state_path, engine))
    manifest = asyncio.run(take_backup(url, destination))
    cli_common.print_result(
        args, {"backup": str(destination.expanduser().absolute()), **manifest.to_json()},
        f"backed up {engine} storage into {destination}\n"
        f"  taken:   {manifest.created_at} (tasks acknowledged later are in the next backup)\n"
        f"  schema:  {manifest.schema_revision}\n"
        f"  tasks:   {_counts(manifest.tasks_by_status)}\n"
        f"  sha256:  {manifest.sha256} ({manifest.size_bytes} bytes)")


def cmd_restore(args: argparse.Namespace) -> None:
    url = args.database_url or cli_common.settings_of(args).resolved_database_url
    restored = asyncio.run(restore_backup(Path(args.backup), url, force=args.force))
    migrated = (f", migrated from {restored.migrated_from}" if restored.migrated_from else "")
    cli_common.print_result(
        args, restored.to_json(),
        f"restored {restored.backup} into {restored.database}\n"
        f"  taken:   {restored.manifest.created_at}\n"
        f"  schema:  {restored.schema_revision}{migrated}\n"
        f"  tasks:   {_counts(restored.tasks_by_status)}; unfinished ones resume when the "
        "platform starts on it")


def add_backup_commands(add: AddCommand) -> None:
    backup = add("backup", cmd_backup, "a consistent copy of storage, taken while it runs")
    backup.add_argument("destination", nargs="?",
                        help="a new directory (default: the state directory's backups/)")
    backup.add_argument("--database-url", help="the database to back up (default: the "
                        "platform's, YMERA_DATABASE_URL or the state directory's SQLite)")
    restore = add("restore", cmd_restore, "restore a backup into an empty database")
    restore.add_argument("backup", help="a directory written by `ymera backup`")
    restore.add_argument("--database-url", help="the database to restore into (default: the "
                         "platform's)")
    restore.add_argument("--force", action="store_true",
                         help="replace what a non-empty target holds")
