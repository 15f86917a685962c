"""The batch's writer process: commits groups of files and manifest lines off the batch's process.

Why a process: a batch of small images spends as much of its process's time on its files (their
names and provenance, then creating, writing, syncing and renaming them, each system call a
hand-off of the GIL between the writer thread and the event loop) as on its requests. In a
process of its own that work runs on another core and never holds the event loop's GIL.

The batch (``batch._writer.ProcessWriter``) starts it with ``sys.executable`` and talks to it over
two pipes, in order:

- to the process, once a turn of the batch's event loop: ``(sequence number, items)``, each item
  one finished job's ``(manifest event, file stem, images)``, an image ``(bytes, request, seed)``
  (:data:`._group_files.ImageParts`), its bytes sent out of band (pickle protocol 5: never copied
  into the message). A thread reads them as they come; what arrived while a group was being
  committed is the next group (at most :data:`MAX_MESSAGES` messages);
- back, once a group is durable: a list of ``(sequence number, error or None, each item's file
  paths)``, one for each of its messages. Durable means: its files written to temporary names,
  synced, renamed into place, the renames synced, then its lines appended to the manifest (an
  inherited descriptor of the batch's locked manifest) and synced, as ``GroupWriter`` does on its
  thread.

The process imports only this module, ``_group_files``, ``_files``, ``_metadata`` and the standard
library (no ``openai``), ignores Ctrl-C (it is in a session of its own: the batch decides when it
stops), commits every message it received whole, and ends when its input ends. What it holds is
bounded by what the batch has handed over and not heard back about (the batch's concurrency plus
``COMMIT_AHEAD`` jobs at most); a message's pickled part by :data:`MAX_HEADER`.
"""

from __future__ import annotations

import pickle
import queue
import signal
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ._files import write_all, write_group
from ._group_files import GroupFiles, append_durably, manifest_lines

__all__ = ["MAX_HEADER", "READY", "encode", "main", "read_message", "take_message"]

_HEAD = struct.Struct("<IQ")
"""A message starts with its number of out-of-band buffers and the length of its pickle..."""
_LENGTH = struct.Struct("<Q")
"""...then each buffer's length; then the pickle, then the buffers."""

READY = "stepfun-openai writer ready"
"""The process's first message, once it has imported what it needs."""

MAX_MESSAGES = 64
"""Messages (the batch sends one per turn of its event loop) committed together at most."""

MAX_HEADER = 256 * 1024 * 1024
"""A message's pickle (events, requests, names) is never larger: a longer one is a broken pipe."""
_MAX_BUFFERS = 1 << 20


def encode(message: Any) -> list[bytes | memoryview]:
    """``message`` as the pieces to write, in order (the large buffers as they are, not copied)."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    head = _HEAD.pack(len(raws), len(data)) + b"".join(_LENGTH.pack(raw.nbytes) for raw in raws)
    return [head, data, *raws]


def take_message(buffer: bytearray) -> tuple[Any, int] | None:
    """The first whole message in ``buffer`` and how many bytes it took; ``None`` if incomplete."""
    if len(buffer) < _HEAD.size:
        return None
    count, size = _HEAD.unpack_from(buffer)
    if count > _MAX_BUFFERS or size > MAX_HEADER:
        raise ValueError(f"not a writer message ({count} buffers, {size} bytes)")
    start = _HEAD.size + count * _LENGTH.size
    if len(buffer) < start:
        return None
    lengths = [_LENGTH.unpack_from(buffer, _HEAD.size + number * _LENGTH.size)[0] for number in range(count)]
    end = start + size + sum(lengths)
    if len(buffer) < end:
        return None
    view = memoryview(buffer)
    position = start + size
    buffers = []
    for length in lengths:
        buffers.append(bytes(view[position : position + length]))
        position += length
    message = pickle.loads(view[start : start + size], buffers=buffers)
    view.release()
    return message, end


def read_message(stream: IO[bytes]) -> Any | None:
    """The next message from a blocking ``stream``; ``None`` at its end."""
    head = stream.read(_HEAD.size)
    if not head:
        return None

    def read(count: int) -> bytes:
        data = stream.read(count)
        if len(data) != count:
            raise EOFError("the writer's pipe ended inside a message")
        return data

    if len(head) != _HEAD.size:
        raise EOFError("the writer's pipe ended inside a message")
    count, size = _HEAD.unpack(head)
    if count > _MAX_BUFFERS or size > MAX_HEADER:
        raise ValueError(f"not a writer message ({count} buffers, {size} bytes)")
    lengths = [_LENGTH.unpack(read(_LENGTH.size))[0] for _ in range(count)]
    data = read(size)
    return pickle.loads(data, buffers=[read(length) for length in lengths])


def _write_message(fd: int, message: Any) -> None:
    for piece in encode(message):
        write_all(fd, piece)


def _sendable(exc: BaseException) -> BaseException:
    """``exc``, or a ``RuntimeError`` saying what it was if it cannot be pickled."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _commit(names: GroupFiles, manifest_fd: int, items: list[Any]) -> list[list[str]]:
    """One group: its files named, written, synced and renamed, then its lines appended; each
    job's file paths."""
    files: list[tuple[Path, bytes]] = []
    paths: list[list[Path]] = []
    try:
        for event, stem, images in items:
            job_files, job_paths = names.files_of(event, stem, images)
            files += job_files
            paths.append(job_paths)
        write_group(files)
        append_durably(manifest_fd, manifest_lines([event for event, _, _ in items]))
    finally:
        for job_paths in paths:
            names.release(job_paths)
    return [[str(path) for path in job_paths] for job_paths in paths]


def _messages(stream: IO[bytes]) -> Iterator[Any]:
    """The batch's messages, to the end of its pipe (a message cut short: the batch was killed)."""
    try:
        while (message := read_message(stream)) is not None:
            yield message
    except EOFError:
        return


def _read_all(stream: IO[bytes], inbox: queue.SimpleQueue[Any]) -> None:
    """On a thread: every message as soon as it arrives (so the batch's pipe never fills while a
    group is being synced), then ``None``."""
    try:
        for message in _messages(stream):
            inbox.put(message)
    finally:
        inbox.put(None)


def main(argv: list[str]) -> int:
    """``out``, the folder the manifest's paths are relative to, the manifest's descriptor."""
    out, relative_base, manifest_fd = Path(argv[0]), Path(argv[1]), int(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGXFSZ"):  # a file size limit is an error to report, not a reason to die
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    names = GroupFiles(out, relative_base)
    replies = sys.stdout.fileno()
    _write_message(replies, READY)
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    threading.Thread(target=_read_all, args=(sys.stdin.buffer, inbox), daemon=True).start()
    ended = False
    while not ended:
        # Everything that arrived while the last group was being committed is the next group.
        messages = [inbox.get()]
        while not inbox.empty() and len(messages) < MAX_MESSAGES:
            messages.append(inbox.get())
        if messages[-1] is None:
            ended = True
            messages.pop()
        if not messages:
            break
        items = [item for _, job_items in messages for item in job_items]
        answers: list[tuple[int, BaseException | None, list[list[str]] | None]]
        try:
            paths = _commit(names, manifest_fd, items)
        except Exception as exc:
            error = _sendable(exc)
            answers = [(sequence, error, None) for sequence, _ in messages]
        else:
            answers = []
            for sequence, job_items in messages:
                answers.append((sequence, None, paths[: len(job_items)]))
                del paths[: len(job_items)]
        _write_message(replies, answers)
    return 0


if __name__ == "__main__":  # pragma: no cover - run by the batch as a child process
    raise SystemExit(main(sys.argv[1:]))
