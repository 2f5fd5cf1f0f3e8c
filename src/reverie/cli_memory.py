"""`reverie memory add | list | remove`: short-term memory from the command line (the server has POST /v1/memory)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from reverie.engines.libraries import quiet_libraries
from reverie.errors import ReverieError
from reverie.progress import results
from reverie.workspace import Workspace

memory_app = typer.Typer(help="Short-term memory: documents retrieved by day, consolidated at night.",
                         no_args_is_help=True)
WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder.")]


@memory_app.command("add")
def add(
    document: Annotated[Path, typer.Argument(help="A UTF-8 text or Markdown file.")],
    title: Annotated[Optional[str], typer.Option(help="Default: the file name.")] = None,
    question: Annotated[Optional[list[str]], typer.Option(help="A question the Gate asks to confirm recall.")] = None,
    answer: Annotated[Optional[list[str]], typer.Option(help="Its answer, in the same order.")] = None,
    train_question: Annotated[Optional[list[str]], typer.Option(
        help="A question Learn trains on (word it unlike the checks).")] = None,
    train_answer: Annotated[Optional[list[str]], typer.Option(help="Its answer, in the same order.")] = None,
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Index a document now (after the data layer's hygiene); the next cycle consolidates it into the weights."""
    from reverie.memory.retrieval import ShortTermMemory

    pairs = {}
    for flag, asked, answered in (("question", question, answer), ("train-question", train_question, train_answer)):
        asked, answered = asked or [], answered or []
        if len(asked) != len(answered):
            answer_flag = flag.replace("question", "answer")
            raise ReverieError(f"--{flag} given {len(asked)} times but --{answer_flag} {len(answered)} times")
        pairs[flag] = [{"question": q, "answer": a} for q, a in zip(asked, answered)]
    text = _read_document(document)
    quiet_libraries()
    ws = Workspace.open(workspace, validate=True)
    added = ShortTermMemory(ws).add(title or document.stem, text, pairs["question"], str(document),
                                    pairs["train-question"])
    results.print(f"added {added.id} ({added.title!r}) to memory: answered with citations now, consolidated at "
                  "the next cycle")


def _read_document(document: Path) -> str:
    """The document's text; each way a path can be wrong gets its own message."""
    expected = "memory add takes one UTF-8 text or Markdown file"
    if document.is_dir():
        raise ReverieError(f"{document} is a directory; {expected} (add a folder's files one at a time)")
    if not document.exists():
        raise ReverieError(f"{document} does not exist; {expected}")
    if not document.is_file():
        raise ReverieError(f"{document} is not a regular file; {expected}")
    try:
        return document.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ReverieError(f"{document}: not UTF-8 text (byte {exc.start} cannot be decoded); {expected}, so "
                           "convert it first (for example with iconv -t UTF-8)") from None


@memory_app.command("list")
def list_documents(workspace: WorkspaceOpt = Path(".")) -> None:
    """Documents in memory, those already consolidated, and those hygiene refused."""
    from reverie.memory.store import MemoryStore

    store = MemoryStore(Workspace.open(workspace, validate=True))
    table = Table(title="short-term memory")
    for column in ("id", "title", "status", "questions", "source"):
        table.add_column(column)
    for doc in store.documents(status=None):
        table.add_row(doc.id, escape(doc.title), doc.status, str(len(doc.questions)), escape(doc.source))
    results.print(table)
    for row in store.rejected():
        results.print(f"refused {row['title']!r} ({row['source']}): {row['reason']}", highlight=False, markup=False)


@memory_app.command("remove")
def remove(document_id: Annotated[str, typer.Argument(help="The id `reverie memory list` shows.")],
           workspace: WorkspaceOpt = Path(".")) -> None:
    """Delete a document from memory: it is no longer retrieved, and no later cycle trains on it."""
    from reverie.memory.store import MemoryStore

    if not MemoryStore(Workspace.open(workspace, validate=True)).remove(document_id):
        raise ReverieError(f"no memory document {document_id!r}; `reverie memory list` shows the ids")
    results.print(f"removed {document_id} from memory", highlight=False)
