"""Plain-text formatting shared by the CLI's reports, the demo and ``reproduce``."""

from __future__ import annotations


def format_table(header: list[str], rows: list[list]) -> str:
    """A plain fixed-width text table (floats to 4 significant digits)."""
    cells = [header] + [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
