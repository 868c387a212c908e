"""Writing reports: HTML and Markdown from result files, each written atomically (a temporary
file in the target directory, then a rename), so a reader never sees half a report and a
failure leaves the previous file as it was."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.errors import UsageError
from bench.results import RunResult


def write_atomic(path: Path, text: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory", "name a file to write the report to")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}",
                         "choose a writable directory") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def markdown_text(results: list[RunResult]) -> str:
    from reports import markdown
    return "\n".join(markdown.render(r) for r in results)


def html_text(results: list[RunResult], sources: list[str] | None = None) -> str:
    from reports import html
    return html.render(results, sources)


def write(results: list[RunResult], sources: list[str], html_out: Path | None,
          md_out: Path | None) -> list[Path]:
    """Render both first, then write: a rendering error leaves no file behind."""
    texts = []
    if html_out is not None:
        texts.append((html_out, html_text(results, sources)))
    if md_out is not None:
        texts.append((md_out, markdown_text(results)))
    return [write_atomic(p, t) for p, t in texts]


def beside(result: RunResult, json_path: Path) -> list[Path]:
    """`bench run`: the HTML and Markdown reports next to the result JSON."""
    json_path = Path(json_path)
    return write([result], [str(json_path)], json_path.with_suffix(".html"),
                 json_path.with_suffix(".md"))
