"""Generate notebooks/07_report.ipynb."""

from new_notebook import parameters_cell, write_notebook

CELLS = [
    ("md", """
# 07 · Claims report

**Question.** Does adaptwin reproduce, and beat, each quantitative claim of Agulló et al. (2026)?

**Method.** Every stage writes its headline numbers to `data/metrics/*.json`. This notebook reads them
(nothing is typed in), compares each with the paper's number and adaptwin's target, and writes
`reports/claims.md`. The list of regenerated figures and tables is `reports/figures.md`.
"""),
    ("code", parameters_cell("07_report")),
    ("code", """
import polars as pl
from IPython.display import Markdown

from adaptwin.paths import resolve
from adaptwin.report import write_claims

rows = write_claims(resolve(data_dir) / "metrics", resolve(reports_dir) / "claims.md")
pl.Config.set_fmt_str_lengths(80)
pl.DataFrame(rows).select("claim", "measured", "unit", "target", "verdict")
"""),
    ("code", """
Markdown((resolve(reports_dir) / "claims.md").read_text())
"""),
    ("md", """
**Result.** The table above is the verdict of this run; `reports/claims.md` is the same table as a file.

**Caveats.** In the smoke profile (nbval) every stage runs on a tiny budget, so the numbers here are not the
headline numbers; run `make repro` for those. A claim reads "not measured" when its metrics file or key is
absent (for example when a stage was skipped), never a guessed value.
"""),
]

if __name__ == "__main__":
    write_notebook("notebooks/07_report.ipynb", CELLS)
