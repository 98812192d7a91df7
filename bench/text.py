"""Names from users' file systems, made safe for every file and table the toolkit writes.

File and folder names are whatever the disk holds: bytes that are not UTF-8, newlines, `|`,
or text a spreadsheet runs as a formula (`=1+2`, `@SUM(A1)`). Python keeps undecodable
bytes as lone surrogates (``os.fsdecode``), which every UTF-8 writer refuses; a `|` splits a
Markdown cell; a formula runs when the CSV is opened. One function per output kind:

- ``printable``: undecodable bytes as ``\\xNN`` (valid UTF-8, readable, what ``ls -b`` shows);
- ``csv_cell`` / ``csv_uncell``: a leading ``= + - @ TAB CR`` (or a ``'``) gets a ``'`` in
  front, which spreadsheets show as text; the reader strips exactly that one ``'`` again;
- ``md_cell``: ``|`` escaped, line breaks written as ``\\n``.

Stdlib only: the CLI and the leaderboard import this at start-up.
"""

from __future__ import annotations

from bench.fileio import readable_name

#: First characters a spreadsheet treats as the start of a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def printable(text: str) -> str:
    """``text`` with undecodable file-system bytes written as ``\\xNN``; valid UTF-8."""
    return readable_name(text)


def csv_cell(text: str) -> str:
    """A text cell that a spreadsheet shows as text, never evaluates; see ``csv_uncell``."""
    text = printable(text)
    if text.startswith(FORMULA_STARTS) or text.startswith(_QUOTE):
        return _QUOTE + text
    return text


def csv_uncell(text: str) -> str:
    """Inverse of ``csv_cell`` for cells this toolkit wrote."""
    if text.startswith(_QUOTE) and text[1:].startswith((*FORMULA_STARTS, _QUOTE)):
        return text[1:]
    return text


def md_cell(text: str) -> str:
    """One Markdown table cell: no line break and no unescaped `|` can leave the cell."""
    text = printable(text).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")
