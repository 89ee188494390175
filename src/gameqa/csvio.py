"""CSV in and out: reading small tables people write by hand (header and cells trimmed, column names lower-case),
and the one way gameqa writes a table as CSV text."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Sequence

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


def csv_text(columns: Sequence[str], rows: Iterable[dict], ignore_extra: bool = False) -> str:
    """Rows (dicts) as CSV text under a header of ``columns``, "\\n" line ends, cells quoted where they must be (a
    path with a comma or a quote); a key outside ``columns`` is an error unless ``ignore_extra``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n",
                            extrasaction="ignore" if ignore_extra else "raise")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
