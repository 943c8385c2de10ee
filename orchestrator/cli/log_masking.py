"""The safety net of the process's log: no record, from any logger (ours, httpx, httpcore,
urllib3, uvicorn...), reaches a handler with a URL's userinfo (``user:password@``) in it.

Our code does not log credentials in the first place (a webhook is sent to its URL without the
userinfo, which goes as Basic authentication); this catches what a library, or a line written
later, would log anyway. It masks text only: a password logged on its own is not caught.
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.rules.masking import mask_userinfo


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    """``record`` with URL userinfo masked in its message, its traceback and its stack; a record
    with none is left exactly as it was (formatters that read ``args`` still get them)."""
    try:
        message = record.getMessage()
    except Exception:
        # Arguments that do not fit the format: the handler would print both raw.
        message = f"{record.msg} {record.args!r}"
    masked = mask_userinfo(message)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        # Formatted as the handler's formatter would, and kept: formatters reuse ``exc_text``.
        text = logging.Formatter().formatException(record.exc_info)
        if mask_userinfo(text) != text:
            record.exc_text = mask_userinfo(text)
    if record.stack_info:
        record.stack_info = mask_userinfo(record.stack_info)
    return record


class _MaskingFactory:
    """A log record factory that masks what the factory it wraps makes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        return mask_record(self.inner(*args, **kwargs))


def install() -> None:
    """Mask URL userinfo in every log record this process makes from now on (once: calling it
    again changes nothing).

    A record factory rather than a handler filter: it holds for every logger and every handler,
    including those a library (uvicorn) configures after this call.
    """
    current = logging.getLogRecordFactory()
    if not isinstance(current, _MaskingFactory):
        logging.setLogRecordFactory(_MaskingFactory(current))
