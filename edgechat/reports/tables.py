"""Human-facing tables for convert, eval, inspect, profile, targets and plan, readable anywhere: on a terminal, rich
tables within its width (columns past the width move to a second table that repeats the first column, and
a column too wide on its own folds, so no cell is cut to "1…"); piped or written to a file, a markdown table
that reads the same anywhere, as llama-bench prints (key/value tables: plain aligned text)."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table


def make_console(file=None) -> Console:
    """stdout's console; off a terminal it never hard-wraps lines (a pipe has no width)."""
    c = Console(file=file)
    return c if c.is_terminal else Console(file=file, soft_wrap=True, highlight=False)


console = make_console()


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(map(fmt, v))
    return str(v)


def _width(cell: str) -> int:
    return max((len(line) for line in str(cell).splitlines()), default=0)


def column_groups(columns: list[str], rows: list[list[str]], width: int, key: int = 1) -> list[list[int]]:
    """Column indices per table: the first `key` columns in every table, the others in order while the
    table's natural width (cells, padding, borders) fits `width`."""
    natural = [max([_width(c)] + [_width(r[i]) for r in rows]) + 3 for i, c in enumerate(columns)]  # " x │"
    base = list(range(min(key, len(columns))))
    groups, current, used = [], list(base), 1 + sum(natural[i] for i in base)
    for i in range(len(base), len(columns)):
        if used + natural[i] > width and len(current) > len(base):
            groups.append(current)
            current, used = list(base), 1 + sum(natural[j] for j in base)
        current.append(i)
        used += natural[i]
    groups.append(current)
    return groups


def markdown_table(columns: list[str], rows: list[list[str]], right: tuple[str, ...] = ()) -> str:
    cells = lambda r: [str(c).replace("\n", "; ").replace("|", "\\|") for c in r]  # noqa: E731
    lines = ["| " + " | ".join(cells(columns)) + " |",
             "|" + "|".join("---:" if c in right else "---" for c in columns) + "|"]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def emit_table(title: str | None, columns: list[str], rows: list[list[str]], right: tuple[str, ...] = (),
               key: int = 1, out: Console | None = None) -> None:
    out = out or console
    rows = [[str(c) for c in r] for r in rows]
    if not out.is_terminal:
        out.print((f"{title}\n\n" if title else "") + markdown_table(columns, rows, right) + "\n", markup=False,
                  highlight=False)
        return
    for n, group in enumerate(column_groups(columns, rows, out.width, key)):
        t = Table(title=title if n == 0 else None)
        for i in group:
            t.add_column(columns[i], justify="right" if columns[i] in right else "left", overflow="fold")
        for r in rows:
            t.add_row(*(r[i] for i in group))
        out.print(t)


def emit_pairs(title: str | None, pairs: list[tuple[str, str]], out: Console | None = None) -> None:
    """A key/value table; off a terminal, aligned "key  value" lines."""
    out = out or console
    if not out.is_terminal:
        pad = max((len(k) for k, _ in pairs), default=0)
        body = "\n".join(f"{k.ljust(pad)}  {str(v).replace(chr(10), '; ')}" for k, v in pairs)
        out.print((f"{title}\n" if title else "") + body + "\n", markup=False, highlight=False)
        return
    t = Table(title=title, show_header=False)
    t.add_column(overflow="fold")
    t.add_column(overflow="fold")
    for k, v in pairs:
        t.add_row(k, str(v))
    out.print(t)


def kv_table(title: str, data: dict) -> None:
    emit_pairs(title, [(k, fmt(v)) for k, v in data.items()])


def artifact_table(manifest: dict, out_dir: Path) -> None:
    rows = []
    for a in manifest["artifacts"]:
        q = a.get("quality") or {}
        rows.append([a["file"], a["quant"], f"{a['bytes'] / 2**20:.1f}" if "bytes" in a else "-",
                     *(fmt(q[k]) if k in q else "-" for k in ("ppl", "ref_ppl", "mean_kld", "top1_agreement"))])
    emit_table(f"{out_dir} (manifest: edgechat.json)", ["file", "quant", "MiB", "PPL", "ref PPL", "mean KLD", "top-1"],
               rows, right=("MiB", "PPL", "ref PPL", "mean KLD", "top-1"))

