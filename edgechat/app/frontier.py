"""The speed-quality frontier of `edgechat tune`: which candidates are dominated, the one that meets the
user's constraint best (or the closest miss), and the frontier as a table (terminal/markdown) and a PNG."""
from __future__ import annotations

from pathlib import Path

from edgechat.reports.tables import emit_table, markdown_table

# constraint key -> (the option as the user wrote it, the row's figure it bounds, True when it is an upper bound)
CONSTRAINTS = {"max_mib": ("--max-mib", "mib", True), "min_decode_tok_s": ("--min-decode-tok-s", "speed", False),
               "max_kld": ("--max-kld", "mean_kld", True)}


def mark_dominated(rows: list[dict]) -> None:
    """A point is dominated when another is at least as fast on the target and at least as close to the source
    (mean KLD), and better in one of the two. Points without a speed for the target are left unmarked."""
    for r in rows:
        r["dominated"] = r["speed"] is not None and any(
            o is not r and o["speed"] is not None and o["speed"] >= r["speed"] and o["mean_kld"] <= r["mean_kld"]
            and (o["speed"] > r["speed"] or o["mean_kld"] < r["mean_kld"]) for o in rows)


def meets(row: dict, key: str, bound: float) -> bool:
    _, figure, upper = CONSTRAINTS[key]
    value = row[figure]
    return value is not None and (value <= bound if upper else value >= bound)


def choose(rows: list[dict], key: str, bound: float) -> dict | None:
    """Among the candidates that meet the constraint: under a KLD bound the fastest on the target; under a size
    or speed bound the closest to the source (ties: the faster)."""
    ok = [r for r in rows if meets(r, key, bound)]
    for r in rows:
        r["meets"] = r in ok
    if not ok:
        return None
    fast = lambda r: -(r["speed"] or 0.0)  # noqa: E731
    if key == "max_kld":
        return min(ok, key=lambda r: (fast(r), r["mean_kld"]))
    return min(ok, key=lambda r: (r["mean_kld"], fast(r)))


def closest_miss(rows: list[dict], key: str, bound: float, target: str, out_dir: Path) -> str:
    """The one line for an impossible constraint: which candidate came closest, and by how much it misses."""
    option, figure, upper = CONSTRAINTS[key]
    have = [r for r in rows if r[figure] is not None]
    best = min(have, key=lambda r: r[figure]) if upper else max(have, key=lambda r: r[figure])
    v = best[figure]
    what = {"mib": f"a {v:.3f} MiB file, {v - bound:.3f} MiB over",
            "speed": f"{v:.1f} tok/s on {target}, {bound - v:.1f} tok/s short",
            "mean_kld": f"mean KLD {v:.4g}, {v / bound:.3g}x the bound"}[figure]
    return (f"no candidate meets {option} {bound:g}: the closest is {best['name']} ({what}); "
            f"the frontier is in {out_dir}")


COLUMNS = ["candidate", "MiB", "KLD", "PPL x", "match", "tok/s here", "tok/s target", "frontier"]
RIGHT = ("MiB", "KLD", "PPL x", "match", "tok/s here", "tok/s target")


def _num(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in sorted(rows, key=lambda r: -(r["speed"] or 0.0)):
        mark = "chosen" if r.get("chosen") else ("dominated" if r["dominated"] else "frontier")
        out.append([r["name"], _num(r["mib"], ".2f"), _num(r["mean_kld"], ".4f"), _num(r["ppl_ratio"], ".3f"),
                    _num(r["match"], ".0%"), _num(r["decode_tok_s_here"], ".1f"), _num(r["decode_tok_s_target"], ".1f"),
                    mark])
    return out


def show(rows: list[dict], title: str) -> None:
    emit_table(title, COLUMNS, table_rows(rows), right=RIGHT)


def write_markdown(rows: list[dict], path: Path, title: str, notes: list[str]) -> Path:
    body = markdown_table(COLUMNS, table_rows(rows), RIGHT)
    path.write_text(f"# {title}\n\n" + "".join(f"- {n}\n" for n in notes) + f"\n{body}\n")
    return path


def write_chart(rows: list[dict], path: Path, title: str, key: str, bound: float) -> Path:
    """Decode speed on the target (x) against mean KLD to the source (y, log): the frontier joined, dominated
    points hollow, the chosen one starred, a KLD or speed bound drawn as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r["speed"] is not None]
    floor = min([r["mean_kld"] for r in pts if r["mean_kld"] > 0] or [1e-6]) / 3  # f32 can sit at 0
    y = lambda r: max(r["mean_kld"], floor)  # noqa: E731
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    front = sorted((r for r in pts if not r["dominated"]), key=lambda r: r["speed"])
    ax.plot([r["speed"] for r in front], [y(r) for r in front], "-", color="tab:blue", alpha=0.5, label="frontier")
    for r in pts:
        student = r["kind"] == "student"
        color = "tab:orange" if student else "tab:blue"
        ax.scatter(r["speed"], y(r), s=140 if r.get("chosen") else 40, marker="*" if r.get("chosen") else "o",
                   facecolors="none" if r["dominated"] else color, edgecolors=color, zorder=3)
        ax.annotate(r["name"], (r["speed"], y(r)), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if key == "max_kld":
        ax.axhline(bound, color="tab:red", linestyle="--", linewidth=1, label=f"--max-kld {bound:g}")
    elif key == "min_decode_tok_s":
        ax.axvline(bound, color="tab:red", linestyle="--", linewidth=1, label=f"--min-decode-tok-s {bound:g}")
    ax.set_yscale("log")
    ax.set_xlabel("decode tok/s on the target (measured on host, else the planner's estimate)")
    ax.set_ylabel("mean KLD to the source (log)")
    ax.set_title(title, fontsize=9)
    ax.scatter([], [], marker="o", facecolors="none", edgecolors="gray", label="dominated")
    ax.scatter([], [], marker="o", color="tab:orange", label="pruned + distilled student")
    ax.legend(fontsize=7, loc="best")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
