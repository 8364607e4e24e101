"""Errors of the exporters and runtimes as a person reads them: what failed, in a few lines,
without terminal colours or the advice torch.onnx adds to its messages."""

from __future__ import annotations

import re

__all__ = ["error_summary", "first_line"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colours (torch.onnx's messages have some)
_CLASS = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>")  # <class 'torch._dynamo.exc.UserError'>
# lines of torch's messages that give advice or point elsewhere, not what failed
_ADVICE = ("⬆", "(Refer to the full stack trace", "The error above occurred when calling")


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of ``exc`` (colours stripped, at most 300 characters)."""
    lines = [ln for ln in _ANSI.sub("", str(exc)).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def error_summary(exc: BaseException, *, max_lines: int = 8, max_chars: int = 1000) -> str:
    """``Type: message`` of ``exc`` for a person: what failed, in at most ``max_lines`` lines and
    about ``max_chars`` characters (the number of lines left off said), colours stripped.

    torch.onnx's own errors open with the step that failed, a list of next steps to try, then
    "## Exception summary" with the errors that caused it (the ``ConstraintViolationError``
    behind a ``TorchExportError``, say): the step and the causes are kept, the advice dropped.
    ONNX Runtime's errors go on over several lines (the dimension that did not fit, ...): all
    of them are kept, up to the limits.
    """
    text = _ANSI.sub("", str(exc)).strip()
    head, marker, causes = text.partition("## Exception summary")
    if marker:
        step = head.strip().splitlines()[0] if head.strip() else ""
        lines = [step.split("Next steps:")[0], *causes.splitlines()]
    else:
        lines = text.splitlines()
    lines = [_CLASS.sub(r"\1", ln).rstrip() for ln in lines]
    lines = [ln for ln in lines if ln.strip() and not ln.strip().startswith(_ADVICE)]
    lines[:1] = [f"{type(exc).__name__}: {lines[0].strip() if lines else ''}"]
    kept: list[str] = []
    for line in lines[:max_lines]:
        room = max_chars - sum(len(k) + 1 for k in kept)
        if len(line) > room:
            if not kept:  # one long line: cut it
                kept.append(line[: max(room - 3, 0)] + "...")
            break
        kept.append(line)
    if len(kept) < len(lines):
        left = len(lines) - len(kept)
        kept.append(f"({left} more line{'s' if left > 1 else ''} left off)")
    return "\n".join(kept)
