"""Bundled texts and text loading.

`wikitext2` (test split) is for evaluation only and `wikitext2-valid` for calibration; the two hold different
articles, so the defaults never calibrate on evaluation text.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ponder.errors import DataError

BUNDLED = {
    "wikitext2": "wikitext2-test.txt",
    "wikitext2-valid": "wikitext2-valid.txt",
}
EVAL_DEFAULT = "wikitext2"
CALIB_DEFAULT = "wikitext2-valid"


def bundled_path(name: str) -> Path:
    """Path of a bundled text by its short name."""
    return Path(str(resources.files("ponder.data") / "texts" / BUNDLED[name]))


def load_text(source: str) -> str:
    """Read a bundled name, a `.txt` file, or a `.jsonl` file (field `text`) as one string.

    Text mode with universal newlines, as the perplexity protocol prescribes (CRLF becomes LF).
    """
    if source in BUNDLED:
        path = bundled_path(source)
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(
                f"data '{source}' not found: pass a bundled name ({', '.join(BUNDLED)}) or a .txt/.jsonl file"
            )
        if path.suffix not in (".txt", ".jsonl"):
            raise DataError(
                f"data '{source}' has suffix '{path.suffix}': use a .txt file or a .jsonl file with 'text'"
            )
    text = _read_jsonl_text(path) if path.suffix == ".jsonl" else path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"data '{source}' is empty: give a text with at least one evaluation window of tokens")
    return text


def first_tokens(tokenizer, text: str, tokens: int) -> list[int]:
    """The first `tokens` token ids of `text` (no special tokens), tokenizing only a prefix of a long text: 20
    characters per token is more than any English tokenizer needs."""
    return tokenizer(text[: tokens * 20], add_special_tokens=False).input_ids[:tokens]


def _read_jsonl_text(path: Path) -> str:
    parts = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{number} is not valid JSON ({e.msg}): fix the line or use a .txt file"
                ) from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f"{path}:{number} has no string field 'text': each line must be {{\"text\": ...}}")
            parts.append(record["text"])
    return "\n\n".join(parts)
