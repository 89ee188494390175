"""Reading small CSV tables people write by hand: header and cells trimmed, column names lower-case."""
from __future__ import annotations

import csv
from pathlib import Path

from gameqa.errors import ConfigError


def read_csv_records(path: Path, what: str) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV file; ``what`` names its contents in errors ("votes", "ratings")."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
                    for row in reader]
    except OSError as exc:
        raise ConfigError(path, f"cannot read the {what} file ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(path, f"not a readable CSV file ({exc})") from None
    return header, rows
