"""Reading small CSV tables people write by hand: header and cells trimmed, column names lower-case."""
from __future__ import annotations

import csv
from pathlib import Path

from gameqa.errors import ConfigError


def read_csv_records(path: Path, what: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, rows) of a CSV file, each row as (its line number in the file, {column: cell}); ``what`` names
    its contents in errors ("votes", "ratings"). A leading byte-order mark (Excel's "CSV UTF-8") is dropped,
    blank lines and trailing empty cells are skipped, and a row with more or fewer fields than the header is an error."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [h.strip().lower() for h in next(reader, [])]
            rows = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) > len(header) and not any(c.strip() for c in cells[len(header):]):
                    cells = cells[:len(header)]   # trailing empty cells (a spreadsheet's extra commas)
                if len(cells) != len(header):
                    raise ConfigError(path, f"line {reader.line_num}: {len(cells)} field(s), the header has "
                                            f"{len(header)} ({', '.join(header)})")
                rows.append((reader.line_num, {k: v.strip() for k, v in zip(header, cells)}))
    except OSError as exc:
        raise ConfigError(path, f"cannot read the {what} file ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(path, f"not a readable CSV file ({exc})") from None
    return header, rows
