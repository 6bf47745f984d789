"""Where each stage writes under a data folder: the one description of the ``data/`` tree.

Why one object: every stage reads what an earlier one wrote, and the notebooks run the same code against
``data/`` (DVC) or ``.smoke/data`` (nbval); spelling ``data / "dataset" / model`` in each reader would let
a writer and its readers drift apart. ``Layout(root)`` answers for any root; `Layout.default` is the
repository's ``data/``.

```
data/
  measurements/<table>.parquet           ingest (01)
  calibration/<model>.json               calibration (02)
  validation/{runs,table}.parquet        twin validation (03)
  dataset/<model>/, dataset/fresh/<model>/, dataset/summary.json      dataset (04)
  models/<model>/                        surrogates (05)
  placement/                             placement (06)
  metrics/<name>.json                    headline numbers of each stage (DVC metrics)
  notebooks/<NN_name>.ipynb              executed notebooks
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from adaptwin.paths import resolve


@dataclass(frozen=True)
class Layout:
    """The paths of one data folder (``root``)."""

    root: Path

    @classmethod
    def default(cls) -> Layout:
        """The repository's ``data/`` folder."""
        return cls(resolve("data"))

    @classmethod
    def at(cls, root: str | os.PathLike) -> Layout:
        return cls(Path(root))

    def measurements(self, table: str | None = None) -> Path:
        folder = self.root / "measurements"
        return folder if table is None else folder / f"{table}.parquet"

    def calibration(self, model: str | None = None) -> Path:
        folder = self.root / "calibration"
        return folder if model is None else folder / f"{model}.json"

    def validation(self, table: str | None = None) -> Path:
        folder = self.root / "validation"
        return folder if table is None else folder / f"{table}.parquet"

    def dataset(self, model: str | None = None) -> Path:
        folder = self.root / "dataset"
        return folder if model is None else folder / model

    def fresh_dataset(self, model: str) -> Path:
        """The fresh heterogeneous test set: another seed and another popularity law than training."""
        return self.dataset() / "fresh" / model

    def dataset_summary(self) -> Path:
        return self.dataset() / "summary.json"

    def models(self, model: str | None = None) -> Path:
        folder = self.root / "models"
        return folder if model is None else folder / model

    def placement(self) -> Path:
        return self.root / "placement"

    def metrics(self, name: str) -> Path:
        return self.root / "metrics" / f"{name}.json"
