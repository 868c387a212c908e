"""Writing reports: HTML and Markdown from result files, each written atomically (a temporary
file in the target directory, then a rename), so a reader never sees half a report and a
failure leaves the previous file as it was."""

from __future__ import annotations

from pathlib import Path

from bench.atomic import write_text
from bench.errors import UsageError
from bench.results import RunResult


def write_atomic(path: Path, text: str) -> Path:
    """A report written atomically (bench/atomic.py); a path it cannot write is a UsageError."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory", "name a file to write the report to")
    try:
        return write_text(path, text)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}",
                         "choose a writable directory") from None


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
