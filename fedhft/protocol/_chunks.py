"""Bundle files as chunk messages, and their reassembly on the device.

Bundles are tens of MB; brokers cap packets at 128 KB-1 MB (EMQX default 1 MB) and paho does
not enforce the cap (an oversize QoS 1 publish loops forever on reconnect). So each file is
sent as ``BundleChunk`` messages of at most ``chunk_size`` data bytes, each with its own
sha256 and the whole file's sha256. ``chunk_size_for`` derives a safe chunk size from the
broker's ``max_packet_size``.

``ChunkAssembler`` takes chunks in any order, ignores duplicates (QoS 1 redelivers), refuses
corrupt or inconsistent ones, says which indices are still missing (for a ``BundleRequest``),
and writes a file (temp + fsync + rename) only once it is complete and its digest matches,
so a crash never leaves a half-written file under its final name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from fedhft.protocol import _fields as F
from fedhft.protocol._codes import ChunkResult
from fedhft.protocol._envelope import PREFIX_LEN, sha256_hex
from fedhft.protocol._errors import ChunkMismatch, DigestMismatch, MalformedMessage, PayloadTooLarge
from fedhft.protocol._messages import BundleChunk, payload_budget

#: Bound on a bundle_chunk JSON header (ids <= 64/128 chars, file <= 255, three digests, ints):
#: measured worst case is ~800 bytes; the margin keeps ``chunk_size_for`` safe.
CHUNK_HEADER_MAX = 1536
DEFAULT_CHUNK_SIZE = 96 * 1024  # fits a 128 KB broker with room for header and MQTT overhead
_READ_BLOCK = 1 << 20


def chunk_size_for(max_packet_size: int, topic: str) -> int:
    """Largest chunk data size whose BundleChunk PUBLISH on ``topic`` fits ``max_packet_size``."""
    size = payload_budget(max_packet_size, topic) - PREFIX_LEN - CHUNK_HEADER_MAX
    if size < 1024:
        raise PayloadTooLarge(f"max_packet_size {max_packet_size} is too small for bundle chunks: use at least 8 KB")
    return size


def _chunk_count(size: int, chunk_size: int) -> int:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return max(1, -(-size // chunk_size))  # an empty file is still one (empty) chunk


def split_bytes(
    data: bytes, *, fleet: str, bundle_id: str, file: str, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> list[BundleChunk]:
    """All chunks of an in-memory file."""
    file_sha = sha256_hex(data)
    count = _chunk_count(len(data), chunk_size)
    out = []
    for index in range(count):
        piece = bytes(data[index * chunk_size : (index + 1) * chunk_size])
        out.append(BundleChunk(fleet, bundle_id, file, index, count, sha256_hex(piece), file_sha, len(data), piece))
    return out


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def iter_file_chunks(
    path: str | os.PathLike,
    *,
    fleet: str,
    bundle_id: str,
    file: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    indices: Iterable[int] | None = None,
    file_digest: str | None = None,
) -> Iterator[BundleChunk]:
    """Chunks of a file on disk, streamed (one chunk in memory at a time).

    ``indices`` selects chunks (to answer a BundleRequest for missing ones); ``file_digest``
    skips re-hashing when the manifest already has it.
    """
    size = os.path.getsize(path)
    digest = file_digest or file_sha256(path)
    count = _chunk_count(size, chunk_size)
    wanted = range(count) if indices is None else sorted({i for i in indices if 0 <= i < count})
    with open(path, "rb") as fh:
        for index in wanted:
            fh.seek(index * chunk_size)
            piece = fh.read(chunk_size)
            yield BundleChunk(fleet, bundle_id, file, index, count, sha256_hex(piece), digest, size, piece)


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a power cut
    finally:
        os.close(dir_fd)
    return path


@dataclass
class _FileState:
    count: int
    file_sha256: str
    file_size: int
    parts: dict[int, bytes] = field(default_factory=dict)
    received: int = 0
    path: Path | None = None  # set once written


class ChunkAssembler:
    """Reassemble bundle files under ``dest_dir`` from BundleChunk messages of one bundle.

    ``add`` returns a ``ChunkResult``: ``ADDED``, ``DUPLICATE`` or ``COMPLETE`` (this chunk finished its
    file, now written at ``path(file)``). It raises ``DigestMismatch`` for a corrupt chunk or a
    complete file whose digest is wrong (that file's chunks are then dropped: re-request it),
    and ``ChunkMismatch`` for a chunk that contradicts earlier ones or belongs to another bundle.
    Chunks are held in memory until their file is complete (bounded by ``max_file_size``).
    """

    def __init__(self, dest_dir: str | os.PathLike, bundle_id: str | None = None, max_file_size: int = 2**31) -> None:
        self.dest_dir = Path(dest_dir)
        self.bundle_id = bundle_id
        self.max_file_size = max_file_size
        self._files: dict[str, _FileState] = {}

    def add(self, chunk: BundleChunk) -> ChunkResult:
        state = self._state_for(chunk)
        if state.path is not None or chunk.index in state.parts:
            return ChunkResult.DUPLICATE
        if sha256_hex(chunk.data) != chunk.chunk_sha256:
            raise DigestMismatch(f"chunk {chunk.file}#{chunk.index} is corrupt (sha256 mismatch): re-request it")
        if state.received + len(chunk.data) > state.file_size:
            raise ChunkMismatch(
                f"chunks of {chunk.file!r} add up to more than its declared {state.file_size} bytes: "
                "the sender's bundle changed; restart the download with the new bundle_id"
            )
        state.parts[chunk.index] = bytes(chunk.data)
        state.received += len(chunk.data)
        if len(state.parts) < state.count:
            return ChunkResult.ADDED
        self._finish(chunk.file, state)
        return ChunkResult.COMPLETE

    def _state_for(self, chunk: BundleChunk) -> _FileState:
        if not isinstance(chunk, BundleChunk):
            raise MalformedMessage(f"ChunkAssembler.add takes a BundleChunk, got {type(chunk).__name__}")
        try:
            F.file_path(chunk.file, "bundle_chunk.file")
        except MalformedMessage as e:
            raise ChunkMismatch(f"refusing to write outside the bundle directory: {e}") from None
        if self.bundle_id is not None and chunk.bundle_id != self.bundle_id:
            raise ChunkMismatch(f"chunk of bundle {chunk.bundle_id!r} sent to the assembler of {self.bundle_id!r}")
        if not 0 <= chunk.index < chunk.count:
            raise ChunkMismatch(f"chunk index {chunk.index} out of range for count {chunk.count}")
        if chunk.file_size > self.max_file_size:
            raise PayloadTooLarge(f"{chunk.file!r} is {chunk.file_size} bytes, over max_file_size={self.max_file_size}")
        state = self._files.get(chunk.file)
        if state is None:
            state = self._files[chunk.file] = _FileState(chunk.count, chunk.file_sha256, chunk.file_size)
        elif (state.count, state.file_sha256, state.file_size) != (chunk.count, chunk.file_sha256, chunk.file_size):
            raise ChunkMismatch(
                f"chunk {chunk.file}#{chunk.index} says count={chunk.count}, size={chunk.file_size}, "
                f"sha256={chunk.file_sha256[:12]}... "
                f"but earlier chunks said count={state.count}, size={state.file_size}, "
                f"sha256={state.file_sha256[:12]}...: "
                "the file changed mid-download; request the whole file again"
            )
        return state

    def _finish(self, file: str, state: _FileState) -> None:
        data = b"".join(state.parts[i] for i in range(state.count))
        digest = sha256_hex(data)
        if len(data) != state.file_size or digest != state.file_sha256:
            del self._files[file]  # start over: one of the chunks lied consistently with its own digest
            raise DigestMismatch(
                f"reassembled {file!r} has {len(data)} bytes / sha256 {digest[:12]}..., expected {state.file_size} / "
                f"{state.file_sha256[:12]}...: discarded; request the whole file again"
            )
        state.path = atomic_write(self.dest_dir / file, data)
        state.parts.clear()

    # -- queries

    def missing(self, file: str) -> list[int]:
        """Indices not yet received of a file that has started arriving ([] once complete).

        Raises KeyError naming the known files if no chunk of ``file`` has arrived yet.
        """
        state = self._files.get(file)
        if state is None:
            raise KeyError(
                f"no chunk of {file!r} has arrived yet (known files: {sorted(self._files)}): request the whole file"
            )
        if state.path is not None:
            return []
        return [i for i in range(state.count) if i not in state.parts]

    def pending(self) -> dict[str, list[int]]:
        """Missing indices of every started, incomplete file."""
        return {f: self.missing(f) for f, s in sorted(self._files.items()) if s.path is None}

    def path(self, file: str) -> Path | None:
        """Where ``file`` was written, or None while incomplete."""
        state = self._files.get(file)
        return None if state is None else state.path

    @property
    def completed(self) -> dict[str, Path]:
        return {f: s.path for f, s in sorted(self._files.items()) if s.path is not None}

    def is_complete(self, files: Iterable[str]) -> bool:
        """True when every named file (e.g. all files of the manifest) has been written."""
        return all(self.path(f) is not None for f in files)


__all__ = [
    "CHUNK_HEADER_MAX",
    "ChunkAssembler",
    "DEFAULT_CHUNK_SIZE",
    "atomic_write",
    "chunk_size_for",
    "file_sha256",
    "iter_file_chunks",
    "split_bytes",
]
