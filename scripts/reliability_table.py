"""Write the README "Reliability" table from what `make reliability` measured (never typed by hand).

Usage: reliability_table.py FIGURES.jsonl JUNIT.xml README.md

FIGURES.jsonl holds the figures the reliability tests recorded (metronome_suger_tests/figures.py), one JSON
object per line; they are summed per suite and key. JUNIT.xml is pytest's report of the same run (test counts).
The table replaces the text between the README's reliability markers.
"""

import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

START, END = "<!-- reliability:start -->", "<!-- reliability:end -->"
# suite → (what it is, the figure counted as its cases/windows)
SUITES = {
    "crash": "kill -9 at each crash point, then a re-run",
    "fault_matrix": "48-window backfill under 20 % faults; persistent faults",
    "bad_input": "named bad inputs (config, Metronome data, Suger answers)",
    "soak": "168 hourly windows with late usage, renewal, price change, cancellation",
    "secrets": "scan of Dagster homes, DuckDB files, PostgreSQL ledgers, test output",
}
COLUMNS = ("cases", "windows", "runs", "kills", "faults", "duplicates", "lost", "token_hits")


def sums(path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            suite = row.pop("suite")
            for key, value in row.items():
                out[suite][key] += int(value)
    return out


def tests(junit: Path) -> tuple[int, int, int]:
    """(tests, failures + errors, skipped) of the run."""
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total = sum(int(s.get("tests", 0)) for s in suites)
    bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    return total, bad, sum(int(s.get("skipped", 0)) for s in suites)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{os.cpu_count()} vCPU ({model}), Python {platform.python_version()}, {platform.system()}"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(figures: dict[str, dict[str, int]], counts: tuple[int, int, int]) -> str:
    lines = ["| suite | what | " + " | ".join(c.replace("_", " ") for c in COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    for suite, what in SUITES.items():
        row = figures.get(suite, {})
        lines.append(f"| {suite} | {what} | " + " | ".join(str(row.get(c, "")) if c in row else "–"
                                                         for c in COLUMNS) + " |")
    total, bad, skipped = counts
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines += ["", f"Produced by `make reliability` on {stamp}, commit `{commit()}`, {machine()}: "
                  f"{total} tests, {bad} failed, {skipped} skipped. `faults` counts injected faults; "
                  "`duplicates`, `lost` and `token hits` must be 0."]
    return "\n".join(lines)


def main(figures_path: str, junit_path: str, readme_path: str) -> int:
    figures, counts = sums(Path(figures_path)), tests(Path(junit_path))
    readme = Path(readme_path)
    text = readme.read_text(encoding="utf-8")
    body = f"{START}\n{table(figures, counts)}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + body + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## Reliability\n\n{body}\n"
    readme.write_text(text, encoding="utf-8")
    print(table(figures, counts))
    bad_figures = {s: {k: v for k, v in row.items() if k in ("duplicates", "lost", "token_hits") and v}
                   for s, row in figures.items()}
    return 1 if counts[1] or any(bad_figures.values()) else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
