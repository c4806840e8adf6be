"""Token ids to the text a client sees, piece by piece, ending at a stop string.

A token can end in the middle of a UTF-8 character, and a stop string can span tokens, so a piece is released
only once it can no longer change: trailing replacement characters and any tail that could still become a stop
string are held back until the next token decides them. Only the last few tokens are decoded again per token (the
offsets text-generation-inference keeps), so a long completion costs linear, not quadratic, decoding.
"""

from __future__ import annotations


class TextStream:
    """Decodes a completion's ids as they arrive; `stopped` once a stop string appeared (it is not sent)."""

    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.ids: list[int] = []
        self.prefix = self.read = 0
        """ids[prefix:read] decode to the tail of `text`; ids[read:] are not in it yet."""
        self.text = ""
        self.sent = 0
        """Characters of `text` already released."""
        self.stopped = False

    def push(self, token: int) -> str:
        """The newly releasable text after `token` ('' while held back, and after the stop string)."""
        if self.stopped:
            return ""
        self.ids.append(token)
        return self._advance(final=False)

    def finish(self) -> str:
        """Whatever is still held back, at the end of the completion (a half character decodes as U+FFFD)."""
        return "" if self.stopped else self._advance(final=True)

    def _advance(self, final: bool) -> str:
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        after = decode(self.ids[self.prefix :], skip_special_tokens=True)
        if not final and (len(after) <= len(before) or after.endswith("\ufffd")):  # e.g. half a UTF-8 character
            return ""
        self.text += after[len(before) :]
        self.prefix, self.read = self.read, len(self.ids)
        for stop in self.stop:
            at = self.text.find(stop, max(0, self.sent - len(stop) + 1))
            if at >= 0:
                self.stopped, self.text = True, self.text[:at]
        held = 0 if self.stopped or final else self._held(self.text)
        return self._release(len(self.text) - held)

    def _held(self, text: str) -> int:
        """Length of the longest tail of `text` that begins a stop string."""
        longest = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _release(self, end: int) -> str:
        piece = self.text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return piece
