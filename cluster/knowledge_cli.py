"""`ymera knowledge ...`: a tenant's document collections from the command line.

    ymera knowledge add ./docs --collection handbook     every .txt .md .html .pdf below ./docs
    ymera knowledge search "refund window" --collection handbook
    ymera knowledge answer "how long do refunds take?" --collection handbook
    ymera knowledge list                                  collections (--collection: documents)
    ymera knowledge delete refunds --collection handbook  a document (--all: the collection)

Every command takes `--tenant` (default: default) and `--json`. `add` shows a progress bar on
stderr (one step per document) and carries on past a document that is refused, naming it and
why; it exits 1 if any was refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from cluster import cli_common
from ml.knowledge.documents import EXTENSIONS
from storage.errors import InvalidRequest, YmeraError

AddCommand = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]
BAR_WIDTH = 30
GROUP = 8  # documents submitted together: a replica ingests them concurrently


def documents_of(paths: list[str]) -> list[Path]:
    """The files named, and the files of a known extension below the directories named, in
    order; `InvalidRequest` for a path that does not exist or a directory with none."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            inside = sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in EXTENSIONS)
            if not inside:
                raise InvalidRequest(f"{path} holds no documents ({', '.join(EXTENSIONS)})")
            found.extend(inside)
        else:
            raise InvalidRequest(f"{path} does not exist")
    return found


def progress_line(done: int, total: int, name: str) -> str:
    filled = BAR_WIDTH * done // max(total, 1)
    return f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} {name[:40]:<40}"


def add_documents(client: Any, paths: list[Path], collection: str, tenant: str,
                  out: TextIO | None) -> dict[str, Any]:
    """Add the documents, `GROUP` at a time, drawing progress on `out`; what was added and
    what was refused."""
    added, refused = [], []
    for first in range(0, len(paths), GROUP):
        group = paths[first:first + GROUP]
        if out is not None:
            out.write(progress_line(first, len(paths), group[0].name))
            out.flush()
        for path, result in zip(group, client.knowledge_add_many(
                group, collection=collection, tenant=tenant)):
            if isinstance(result, InvalidRequest):
                refused.append({"path": str(path), "error": result.message})
            else:
                added.append(result)
    if out is not None:
        out.write(progress_line(len(paths), len(paths), "done") + "\n")
    return {"collection": collection, "added": added, "refused": refused}


def cmd_knowledge(args: argparse.Namespace) -> None:
    args.knowledge_handler(args)


def cmd_add(args: argparse.Namespace) -> None:
    paths = documents_of(args.paths)
    client = cli_common.client_of(args)
    report = add_documents(client, paths, args.collection, args.tenant,
                           None if args.json else sys.stderr)
    lines = [f"added {len(report['added'])} document(s) to {args.collection} "
             f"({sum(d['chunks'] for d in report['added'])} chunks)"]
    lines += [f"refused {r['path']}: {r['error']}" for r in report["refused"]]
    cli_common.print_result(args, report, "\n".join(lines))
    if report["refused"]:
        raise YmeraError(f"{len(report['refused'])} document(s) were refused")


def cmd_search(args: argparse.Namespace) -> None:
    found = cli_common.client_of(args).knowledge_search(
        args.query, collection=args.collection, k=args.k, where=args.where,
        tenant=args.tenant)
    lines = [f"{n}. {hit['document_name']} [{hit['start']}:{hit['end']}] "
             f"score {hit['score']:.4f}\n   {' '.join(hit['text'].split())[:200]}"
             for n, hit in enumerate(found["hits"], start=1)]
    cli_common.print_result(args, found, "\n".join(lines) or "nothing found")


def render_answer(answer: dict[str, Any]) -> str:
    lines = [answer["answer"]]
    for citation in answer.get("citations", []):
        lines.append(f"[{citation['number']}] {citation['document_name']} "
                     f"[{citation['start']}:{citation['end']}]")
    return "\n".join(lines)


def cmd_answer(args: argparse.Namespace) -> None:
    answer = cli_common.client_of(args).knowledge_answer(
        args.question, collection=args.collection, k=args.k, mode=args.mode,
        where=args.where, tenant=args.tenant)
    cli_common.print_result(args, answer, render_answer(answer))


def cmd_list(args: argparse.Namespace) -> None:
    client = cli_common.client_of(args)
    if args.collection is None:
        collections = client.knowledge_collections(tenant=args.tenant)
        cli_common.print_result(args, {"collections": collections}, "\n".join(
            c["name"] for c in collections) or "no collections")
        return
    page = client.knowledge_documents(args.collection, tenant=args.tenant, limit=args.limit,
                                      cursor=args.cursor)
    lines = [f"{d['id']}  {d['name']}  {d['chunks']} chunks  {d['size_bytes']} bytes"
             for d in page["documents"]]
    if page.get("cursor"):
        lines.append(f"more: --cursor {page['cursor']}")
    cli_common.print_result(args, page, "\n".join(lines) or "no documents")


def cmd_delete(args: argparse.Namespace) -> None:
    if (args.document_id is None) == (not args.all):
        raise InvalidRequest("name a document id, or --all for the whole collection")
    done = cli_common.client_of(args).knowledge_delete(
        args.document_id, collection=args.collection, all=args.all, tenant=args.tenant)
    what = ("the collection" if args.all else f"document {args.document_id}")
    cli_common.print_result(args, done, f"deleted {what} of {args.collection}")


def _where(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--where must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--where must be a JSON object of metadata values")
    return value


def add_knowledge_commands(add: AddCommand) -> None:
    """`ymera knowledge <command>`."""
    group = add("knowledge", cmd_knowledge, "a tenant's documents: add, search, answer")
    commands = group.add_subparsers(dest="knowledge_command", required=True,
                                    metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], None],
                help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(knowledge_handler=handler)
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="print JSON for scripts")
        sub.add_argument("--address", default=argparse.SUPPRESS,
                         help="Ray cluster to use (default: YMERA_RAY_ADDRESS, else the local "
                              "head)")
        sub.add_argument("--tenant", default="default", help="whose collections "
                         "(default: default)")
        return sub

    add_cmd = command("add", cmd_add, "add files, or the documents below directories")
    add_cmd.add_argument("paths", nargs="+", metavar="DIR|FILE")
    add_cmd.add_argument("--collection", default="default", help="the collection to add to")
    for name, handler, what in (("search", cmd_search, "the best chunks for a query"),
                                ("answer", cmd_answer, "an answer with citations")):
        sub = command(name, handler, what)
        sub.add_argument("query" if name == "search" else "question")
        sub.add_argument("--collection", help="which collection (default: the one the text "
                         "names, else default, else your only one)")
        sub.add_argument("-k", type=int, default=5 if name == "search" else 3,
                         help="how many chunks")
        sub.add_argument("--where", type=_where, help="metadata to match, as a JSON object")
        if name == "answer":
            sub.add_argument("--mode", choices=["auto", "extractive", "grounded"],
                             default="auto", help="grounded: with the language model")
    listing = command("list", cmd_list, "collections, or a collection's documents")
    listing.add_argument("--collection", help="list this collection's documents")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--cursor", help="the next page's cursor")
    delete = command("delete", cmd_delete, "delete a document or a whole collection")
    delete.add_argument("document_id", nargs="?")
    delete.add_argument("--collection", required=True)
    delete.add_argument("--all", action="store_true", help="delete the whole collection")
