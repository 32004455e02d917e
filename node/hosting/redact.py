"""Redaction of a run's secret values from everything that leaves the node.

What is caught, in every string of the signal (reason...), error message, log lines, `state`
(keys and values) and note of a run before anything is published or stored:

* the clear value, its reverse, its base64 (standard and URL-safe, with and without padding),
  hex (both cases) and URL-quoted forms, each replaced by `[REDACTED]`;
* a value split across consecutive log lines (print one part per line): the log lines are also
  read joined together, and every line that takes part in a match is replaced whole.

What it cannot catch (an honest limit, not a bug to rely on): a strategy that holds a secret
can always transform it in a way no fixed list of encodings covers — a Caesar shift, XOR,
every other character, characters interleaved with other output, one bit per run encoded in
a signal's type or price, timing. Redaction stops accidents and the plain exfiltration
attempts listed above; a secret handed to untrusted code must be one the tenant accepts that
code can read. Values shorter than MIN_REDACT chars are still redacted, but short values
occur by chance in ordinary text, so short secrets both over-redact and leak by guessing.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from typing import Any

MARK = "[REDACTED]"
MIN_REDACT = 4


def _forms(value: str) -> set[str]:
    raw = value.encode()
    forms = {value, value[::-1], urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    for enc in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = enc.decode()
        forms |= {text, text.rstrip("=")}
    hexed = binascii.hexlify(raw).decode()
    forms |= {hexed, hexed.upper()}
    return {f for f in forms if f}


class Redactor:
    def __init__(self, values: list[str]) -> None:
        forms: set[str] = set()
        for value in values:
            if value:
                forms |= _forms(value)
        # longest first, so a form containing another is replaced whole
        self.forms = sorted(forms, key=len, reverse=True)
        self.joined_forms = sorted({f for v in values if v for f in (v, v[::-1])}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.forms)

    def text(self, value: str) -> str:
        for form in self.forms:
            if form in value:
                value = value.replace(form, MARK)
        return value

    def value(self, obj: Any) -> Any:
        """Every string inside a JSON-like value (dict keys too), redacted."""
        if not self.forms:
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.value(k): self.value(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.value(v) for v in obj]
        return obj

    def lines(self, lines: list[str]) -> list[str]:
        out = [self.text(line) for line in lines]
        if not self.joined_forms or len(out) < 2:
            return out
        # A value split across lines: match it in the lines joined (with and without the
        # newlines, and with whitespace dropped) and blank every line the match touches.
        for sep in ("", "\n"):
            joined, starts = "", []
            for line in out:
                starts.append(len(joined))
                joined += line.strip() if sep == "" else line + sep
            hit = set()
            for form in self.joined_forms:
                at = joined.find(form)
                while at >= 0:
                    end = at + len(form)
                    hit |= {i for i, s in enumerate(starts)
                            if s < end and s + len(out[i].strip() if sep == "" else out[i] + sep) > at}
                    at = joined.find(form, at + 1)
            for i in hit:
                out[i] = MARK
        return out
