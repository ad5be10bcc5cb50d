"""Stream a pcap, pcapng or gzip-compressed capture as bounded chunks of packet columns.

The file is read in blocks of ``read_size`` bytes; the compiled walkers in
:mod:`.decode` turn every whole record of a block into one row of the packet
table. Memory stays bounded by the block size and the table size, whatever the
size of the file.

With ``read_ahead`` a thread of the reader's own reads and decodes the next chunk
while the consumer works on the current one (the walkers run without the GIL): two
buffers and packet tables take turns, and a chunk stays valid until the consumer asks
for the next one, as without it.

The buffers and packet tables (~15 MB a set) are kept for the process's next file
(:class:`_Spares`) once a reader's iteration is over: made anew for every file they
were mapped, zeroed (numpy asks for huge pages at that size) and faulted in again each
time, which cost a worker ~10 % of its time on a stream of 5-second files.
"""

from __future__ import annotations

import errno
import gzip
import os
import queue
import stat
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import decode as D

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": (True, False),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (False, False),
    b"\x4d\x3c\xb2\xa1": (True, True),  # little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (False, True),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

DEFAULT_READ_SIZE = 4 << 20
DEFAULT_MAX_PACKETS = 1 << 15
_TURNS = 2  # buffers and packet tables taking turns when reading ahead


class _Spares:
    """Buffer sets (block buffer, packet table, entropy column) of readers that are
    done, for the next reader of the same sizes; at most ``_TURNS`` sets are kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def take(self, buf_len: int, max_packets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self._lock:
            for i, (buf, P, _) in enumerate(self._sets):
                if len(buf) == buf_len and len(P) == max_packets:
                    return self._sets.pop(i)
        return (
            np.empty(buf_len, dtype=np.uint8),
            np.empty((max_packets, D.N_FIELDS), dtype=np.int64),
            np.empty(max_packets, dtype=np.float64),
        )

    def give(self, sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        with self._lock:
            self._sets = (sets + self._sets)[:_TURNS]


_SPARES = _Spares()


class CaptureError(Exception):
    """A capture that cannot be read; ``reason`` is one of metrics.FAIL_REASONS."""

    def __init__(self, message: str, reason: str = "format") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class PacketChunk:
    """Decoded packets of one chunk: the packet table plus the buffer it points into.

    The reader reuses both arrays for the next chunk: copy what must outlive it.
    """

    P: np.ndarray  # (n, N_FIELDS) int64
    PE: np.ndarray  # (n,) float64 query-name entropy
    buf: np.ndarray  # uint8 buffer that F_QOFF offsets refer to

    def __len__(self) -> int:
        return int(self.P.shape[0])


def open_regular(path: Path | str) -> BinaryIO:
    """Open a capture for reading, refusing symbolic links and special files.

    ``O_NOFOLLOW`` so a link swapped in after the scheduler looked is not
    followed (the scheduler resolves links it is told to follow and passes the
    target); ``O_NONBLOCK`` so a FIFO can never block a worker. Raises OSError:
    ``ELOOP`` for a link, ``EINVAL`` for anything but a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sniff_kind(path: Path) -> str:
    """Return "pcap", "pcapng", "gzip" or "unknown" from the first bytes of ``path``."""
    with open_regular(path) as fh:
        head = fh.read(4)
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head == PCAPNG_MAGIC:
        return "pcapng"
    if head in PCAP_MAGICS:
        return "pcap"
    return "unknown"


def _open(path: Path) -> tuple[BinaryIO, bytes]:
    fh: BinaryIO = open_regular(path)  # closed by the caller
    head = fh.read(4)
    if head[:2] == GZIP_MAGIC:
        fh.seek(0)
        gz = gzip.GzipFile(fileobj=fh, mode="rb")
        gz.myfileobj = fh  # type: ignore[assignment]  # closed with it, as gzip.open does
        fh = gz  # type: ignore[assignment]
        try:
            head = fh.read(4)
        except EOFError as exc:
            fh.close()
            raise CaptureError(f"{path}: gzip stream ends early ({exc})", "truncated") from exc
        except (OSError, zlib.error) as exc:
            fh.close()
            raise CaptureError(f"{path}: corrupt gzip stream ({exc})", "format") from exc
    return fh, head


class CaptureReader:
    """Iterate over :class:`PacketChunk` objects of one capture file.

    After iteration, ``truncated_tail`` is 1 when the file ended inside a record
    (the rest of the file was used), ``kind`` is "pcap" or "pcapng" and
    ``bytes_read`` counts the uncompressed bytes.
    """

    def __init__(
        self,
        path: Path,
        *,
        read_size: int = DEFAULT_READ_SIZE,
        max_packets: int = DEFAULT_MAX_PACKETS,
        read_ahead: bool = False,
        tunnel_depth: int = D.MAX_TUNNEL_DEPTH,
    ) -> None:
        self.path = Path(path)
        self.read_size = int(read_size)
        self.max_packets = int(max_packets)
        self.read_ahead = read_ahead
        self.kind = "unknown"
        self.truncated_tail = 0
        self.bytes_read = 0
        self.packets = 0
        self.frag = D.fragment_cache(tunnel_depth=tunnel_depth)
        self._sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # in use

    def __iter__(self) -> Iterator[PacketChunk]:
        try:
            yield from self._ahead() if self.read_ahead else self._chunks()
        finally:
            # the consumer is done with every chunk: the buffers serve the next reader
            # (those grown for a long record are let go)
            base = max(2 * self.read_size, 4096)
            _SPARES.give([s for s in self._sets if len(s[0]) == base])
            self._sets = []

    def _buffers(self, turn: int, buf_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Turn ``turn``'s buffer (at least ``buf_len`` bytes), packet table and entropy
        column."""
        if turn == len(self._sets):
            self._sets.append(_SPARES.take(max(2 * self.read_size, 4096), self.max_packets))
        buf, P, PE = self._sets[turn]
        if len(buf) < buf_len:
            buf = np.empty(buf_len, dtype=np.uint8)
            self._sets[turn] = (buf, P, PE)
        return buf, P, PE

    def _ahead(self) -> Iterator[PacketChunk]:
        """The chunks, read and decoded one ahead by a thread of their own."""
        out: queue.SimpleQueue[PacketChunk | BaseException | None] = queue.SimpleQueue()
        free = threading.Semaphore(_TURNS)  # buffer sets the reading thread may fill
        stop = threading.Event()

        def claim() -> bool:
            free.acquire()
            return not stop.is_set()

        def read() -> None:
            try:
                for chunk in self._chunks(claim):
                    out.put(chunk)
            except BaseException as exc:  # noqa: BLE001 - raised in the consumer's thread
                out.put(exc)
            out.put(None)

        thread = threading.Thread(target=read, name="capture-reader", daemon=True)
        thread.start()
        try:
            while (item := out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
                free.release()  # the consumer is done with that chunk's buffers
        finally:
            stop.set()
            free.release(_TURNS)  # wake a reading thread waiting for a buffer: it stops
            thread.join()

    def _chunks(self, claim: Callable[[], bool] | None = None) -> Iterator[PacketChunk]:
        """The chunks; ``claim`` (reading ahead) is called before a buffer and packet
        table are filled for a new chunk, and False from it stops the reading."""
        try:
            fh, head = _open(self.path)
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot open ({exc.strerror or exc})", "io") from exc
        with fh:
            if head == PCAPNG_MAGIC:
                self.kind = "pcapng"
                yield from self._stream(fh, head, self._pcapng_walker(), claim)
            elif head in PCAP_MAGICS:
                self.kind = "pcap"
                yield from self._stream_pcap(fh, head, claim)
            else:
                raise CaptureError(
                    f"{self.path}: not a pcap or pcapng capture "
                    f"(starts with {head.hex() or 'nothing'})",
                    "format",
                )

    # -- format specifics -----------------------------------------------------------
    def _stream_pcap(
        self, fh: BinaryIO, head: bytes, claim: Callable[[], bool] | None
    ) -> Iterator[PacketChunk]:
        swapped, nanosec = PCAP_MAGICS[head]
        rest = self._read(fh, 20)
        if len(rest) < 20:
            raise CaptureError(f"{self.path}: pcap file header is truncated", "truncated")
        hdr = head + rest
        order = "<" if swapped else ">"
        linktype = int(np.frombuffer(hdr, dtype=f"{order}u4", count=1, offset=20)[0]) & 0xFFFF
        hist = np.zeros(256, dtype=np.int64)

        def walker(b: np.ndarray, P: np.ndarray, PE: np.ndarray, res: np.ndarray) -> None:
            D.walk_pcap(
                b, 0, len(b), swapped, nanosec, linktype, P, PE, len(P), self.frag, hist, res
            )

        yield from self._stream(fh, b"", walker, claim)

    def _pcapng_walker(self):  # noqa: ANN202 - internal closure
        st = np.zeros(3, dtype=np.int64)
        if_link = np.zeros(D.MAX_IFACES, dtype=np.int64)
        if_res = np.full(D.MAX_IFACES, 6, dtype=np.int64)
        if_off = np.zeros(D.MAX_IFACES, dtype=np.int64)
        hist = np.zeros(256, dtype=np.int64)

        def walker(b: np.ndarray, P: np.ndarray, PE: np.ndarray, res: np.ndarray) -> None:
            D.walk_pcapng(
                b, 0, len(b), st, if_link, if_res, if_off, P, PE, len(P), self.frag, hist, res
            )

        return walker

    # -- the shared block loop ---------------------------------------------------------
    def _read(self, fh: BinaryIO, n: int) -> bytes:
        """Read the file header."""
        try:
            data = fh.read(n)
        except EOFError as exc:
            raise CaptureError(f"{self.path}: gzip stream ends early ({exc})", "truncated") from exc
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise CaptureError(f"{self.path}: corrupt gzip stream ({exc})", "format") from exc
        except OSError as exc:
            raise CaptureError(f"{self.path}: read failed ({exc})", "io") from exc
        self.bytes_read += len(data)
        return data

    def _fill(self, fh: BinaryIO, buf: np.ndarray, filled: int) -> tuple[int, bool]:
        """Read into ``buf[filled:]``; return the new fill level and whether the file ended."""
        view = memoryview(buf)  # type: ignore[arg-type]
        gz = isinstance(fh, gzip.GzipFile)
        start = filled
        try:
            while filled < len(buf):
                if gz:  # one decompression step at a time: a cut stream loses nothing
                    data = fh.read1(len(buf) - filled)  # type: ignore[attr-defined]
                    got = len(data)
                    view[filled : filled + got] = data
                else:
                    got = int(fh.readinto(view[filled:]) or 0)  # type: ignore[attr-defined]
                if got == 0:
                    self.bytes_read += filled - start
                    return filled, True
                filled += got
                if not gz:
                    break
        except EOFError:  # compressed stream cut short: use what came before
            self.truncated_tail = 1
            self.bytes_read += filled - start
            return filled, True
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise CaptureError(f"{self.path}: corrupt gzip stream ({exc})", "format") from exc
        except OSError as exc:
            raise CaptureError(f"{self.path}: read failed ({exc})", "io") from exc
        self.bytes_read += filled - start
        return filled, False

    def _stream(
        self,
        fh: BinaryIO,
        prefix: bytes,
        walker,  # noqa: ANN001
        claim: Callable[[], bool] | None,
    ) -> Iterator[PacketChunk]:
        # One buffer and one packet table, reused: a chunk is only valid until the
        # consumer asks for the next one. Reading ahead, two of each take turns.
        turns = _TURNS if claim is not None else 1
        if claim is not None and not claim():
            return
        turn = 0
        buf, P, PE = self._buffers(0, 0)
        filled = len(prefix)
        buf[:filled] = np.frombuffer(prefix, dtype=np.uint8)
        res = np.zeros(3, dtype=np.int64)
        eof = False
        consumed = 0  # file offset of buf[0]
        while True:
            if not eof and filled < self.read_size:
                filled, eof = self._fill(fh, buf, filled)
            if filled == 0:
                return
            walker(buf[:filled], P, PE, res)
            pos, n, code = int(res[0]), int(res[1]), int(res[2])
            if n:
                self.packets += n
                yield PacketChunk(P[:n], PE[:n], buf)
            if code == D.W_CORRUPT:
                raise CaptureError(
                    f"{self.path}: corrupt record header at byte {consumed + pos}", "format"
                )
            if n and claim is not None:
                # the chunk handed out keeps this turn's arrays: go on in the next turn's
                if not claim():
                    return
                turn = (turn + 1) % turns
                rest = buf[pos:filled]
                buf, P, PE = self._buffers(turn, len(buf))
                buf[: filled - pos] = rest
                filled -= pos
                consumed += pos
                continue
            if pos:
                buf[: filled - pos] = buf[pos:filled].copy()
                filled -= pos
                consumed += pos
                continue
            if n:
                continue
            # nothing decodable in the buffer: the file ends, or a record is longer
            if eof:
                if filled:
                    self.truncated_tail = 1
                return
            if filled == len(buf):
                if len(buf) > D.MAX_RECORD + 64:
                    raise CaptureError(
                        f"{self.path}: record larger than {D.MAX_RECORD} bytes", "format"
                    )
                bigger = np.empty(2 * len(buf), dtype=np.uint8)
                bigger[:filled] = buf[:filled]
                buf = bigger
                self._sets[turn] = (buf, P, PE)
            filled, eof = self._fill(fh, buf, filled)


def read_all(path: Path, **kw: Any) -> tuple[np.ndarray, np.ndarray, CaptureReader]:
    """Decode a whole (small) capture into one packet table; for tests and tools."""
    reader = CaptureReader(path, **kw)
    Ps, PEs = [], []
    for chunk in reader:
        Ps.append(chunk.P.copy())
        PEs.append(chunk.PE.copy())
    if not Ps:
        return np.zeros((0, D.N_FIELDS), np.int64), np.zeros(0), reader
    return np.concatenate(Ps), np.concatenate(PEs), reader


__all__ = ["CaptureError", "CaptureReader", "PacketChunk", "read_all", "sniff_kind"]
