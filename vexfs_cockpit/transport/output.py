"""Output plumbing shared by the SSH and local targets: bounded capture, line splitting."""

from __future__ import annotations

import signal

DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024  # bytes a CommandResult keeps of one command
MAX_LINE = 64 * 1024  # a stream() line longer than this is split (a kernel log spew has no \n)


class CappedOutput:
    """Keeps the head and the tail of a command's output, so a runaway command
    cannot eat the host's memory but its first and last words survive."""

    def __init__(self, limit: int = DEFAULT_MAX_OUTPUT):
        self._head_limit = limit // 4
        self._tail_limit = limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self._dropped = 0

    def add(self, data: bytes) -> None:
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        self._tail += data
        excess = len(self._tail) - self._tail_limit
        if excess > 0:
            del self._tail[:excess]
            self._dropped += excess

    def text(self) -> str:
        head = self._head.decode("utf-8", errors="replace")
        tail = self._tail.decode("utf-8", errors="replace")
        if self._dropped:
            return f"{head}\n[... {self._dropped} bytes of output dropped ...]\n{tail}"
        return head + tail


class LineSplitter:
    """Turns byte chunks into text lines (no trailing newline); overlong lines are cut."""

    def __init__(self, max_line: int = MAX_LINE):
        self._buf = bytearray()
        self._max = max_line

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        lines: list[str] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) < self._max:
                    return lines
                nl = self._max - 1  # cut here; the rest continues on the next line
                lines.append(_decode(bytes(self._buf[: nl + 1])))
            else:
                lines.append(_decode(bytes(self._buf[:nl])))
            del self._buf[: nl + 1]

    def flush(self) -> list[str]:
        rest, self._buf = bytes(self._buf), bytearray()
        return [_decode(rest)] if rest else []


def _decode(line: bytes) -> str:
    # \n never occurs inside a UTF-8 sequence, so decoding per line is safe.
    return line.decode("utf-8", errors="replace").removesuffix("\r")


def shell_exit_code(returncode: int) -> int:
    """A signal death reported as a negative code (-9) becomes the shell's 128+N (137)."""
    return 128 - returncode if returncode < 0 else returncode


def signal_exit_code(name: str) -> int:
    """SSH reports a signal death by name ("KILL"); map it to the shell's 128+N."""
    try:
        return 128 + int(signal.Signals[f"SIG{name}"])
    except KeyError:
        return 255
