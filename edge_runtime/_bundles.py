"""Bundle fetching for the edge agent: the local cache, pre-provisioned bundles, and the chunked download.

A bundle is looked up in the cache (``--state DIR``/bundles/<sha256>), then in ``--bundle-dir``, and
only then requested from the server chunk by chunk: the manifest first (its digest is the task's),
then every file it names, each checked against the manifest's digest before the bundle is cached.
"""

from __future__ import annotations

import os
import queue
import shutil
import time
from pathlib import Path

from fedhft.manifest import MANIFEST_NAME, bundle_digest, load_manifest
from fedhft.protocol import (
    BundleChunk,
    BundleRequest,
    ChunkAssembler,
    ChunkResult,
    ProtocolError,
    Task,
    decode,
    encode,
    file_sha256,
)
from edge_runtime._mqtt import CONNECTED
from edge_runtime._trainer import Stopped

KEEP_BUNDLES = 3
CHUNK_RETRY_S = 10.0


class BundleFetchError(RuntimeError):
    """The bundle could not be downloaded or verified."""


class BundleFetcher:
    """The bundle methods of ``EdgeAgent`` (a mixin): they use its ``cfg``, ``store``, ``log``, ``link``,
    ``topics``, ``client``, ``stop_event``, ``_deferred``, ``_publish`` and ``_on_connected``."""

    def _ensure_bundle(self, task: Task) -> Path | Stopped:
        cache = self.store.bundles_dir / task.bundle_sha256
        if (cache / MANIFEST_NAME).is_file() and bundle_digest(cache) == task.bundle_sha256:
            return cache
        provisioned = self._find_provisioned(task)
        if provisioned is not None:
            self.log("bundle_provisioned", path=str(provisioned))
            return provisioned
        return self._download_bundle(task, cache)

    def _find_provisioned(self, task: Task) -> Path | None:
        if not self.cfg.bundle_dir:
            return None
        root = Path(self.cfg.bundle_dir)
        candidates = [root / task.tier / task.backend, root] + sorted(
            p.parent for p in root.glob("*/*/" + MANIFEST_NAME)
        )
        for cand in candidates:
            if (cand / MANIFEST_NAME).is_file() and bundle_digest(cand) == task.bundle_sha256:
                return cand
        self.log(
            "bundle_not_provisioned",
            severity="warning",
            bundle_dir=str(root),
            tier=task.tier,
            backend=task.backend,
            fix="the pre-provisioned bundle differs from the server's; downloading it",
        )
        return None

    def _download_bundle(self, task: Task, cache: Path) -> Path | Stopped:
        partial = self.store.bundles_dir / f".partial-{task.bundle_sha256}"
        partial.mkdir(parents=True, exist_ok=True)
        asm = ChunkAssembler(partial, task.bundle_id)
        started = time.monotonic()
        got = self._fetch_files(task, asm, partial, {MANIFEST_NAME: task.bundle_sha256})
        if isinstance(got, Stopped):
            return got
        manifest = load_manifest(partial, verify_files=False)
        got = self._fetch_files(task, asm, partial, {n: e.sha256 for n, e in manifest.files.items()})
        if isinstance(got, Stopped):
            return got
        load_manifest(partial, verify_files=True)  # every file's digest against the verified manifest
        if cache.exists():
            shutil.rmtree(cache)
        os.replace(partial, cache)
        self.log(
            "bundle_downloaded",
            bundle_id=task.bundle_id,
            seconds=round(time.monotonic() - started, 2),
            bytes=sum(e.size for e in manifest.files.values()),
        )
        self._evict_bundles(keep=cache)
        return cache

    def _fetch_files(self, task: Task, asm: ChunkAssembler, partial: Path, files: dict[str, str]) -> None | Stopped:
        """Request ``files`` (name -> sha256) and assemble their chunks; re-request what is missing."""
        wanted = [f for f, sha in files.items() if not ((partial / f).is_file() and file_sha256(partial / f) == sha)]
        last_progress = last_request = time.monotonic()
        if wanted:
            self._request_chunks(task, asm, wanted)
        while wanted:
            if self.stop_event.is_set():
                return Stopped(0)
            wanted = [f for f in wanted if asm.path(f) is None]
            now = time.monotonic()
            if now - last_progress > self.cfg.bundle_timeout_s:
                raise BundleFetchError(
                    f"no bundle chunk for {now - last_progress:.0f} s (still missing {wanted[:4]}): "
                    f"the server is not serving bundle {task.bundle_id}; check it is running"
                )
            if wanted and now - last_request > CHUNK_RETRY_S:
                self._request_chunks(task, asm, wanted)
                last_request = now
            if wanted and self._take_chunk(task, asm):
                last_progress = time.monotonic()
        for name, sha in files.items():
            if file_sha256(partial / name) != sha:
                raise BundleFetchError(
                    f"{name} of bundle {task.bundle_id} does not match the digest the task/manifest "
                    f"names: the server holds a different bundle than it announced; re-export it"
                )
        return None

    def _request_chunks(self, task: Task, asm: ChunkAssembler, wanted: list[str]) -> None:
        pending = asm.pending()
        fresh = [f for f in wanted if f not in pending]
        if fresh:
            self._publish(
                self.topics.bundle_req(self.client),
                encode(BundleRequest(self.cfg.fleet, self.client, task.bundle_id, fresh)),
            )
        for name in wanted:
            if name in pending and pending[name]:
                req = BundleRequest(self.cfg.fleet, self.client, task.bundle_id, [name], pending[name][:65536])
                self._publish(self.topics.bundle_req(self.client), encode(req))
        self.log("bundle_request", bundle_id=task.bundle_id, files=wanted[:8], partial=len(pending))

    def _take_chunk(self, task: Task, asm: ChunkAssembler) -> bool:
        """Handle one inbox item during a download; True if it was a new chunk. Others wait their turn."""
        try:
            item = self.link.inbox.get(timeout=0.5)
        except queue.Empty:
            return False
        if item.topic == CONNECTED:
            self._on_connected(item.session_present)
            return False
        if not item.topic.endswith("/bundle"):
            self._deferred.append(item)  # tasks and acks are handled after the download (acked then)
            return False
        try:
            chunk = decode(item.payload, expect=BundleChunk)
            if chunk.bundle_id != task.bundle_id:
                return False
            return asm.add(chunk) in (ChunkResult.ADDED, ChunkResult.COMPLETE)
        except ProtocolError as exc:  # a corrupt chunk: it stays missing and is re-requested
            self.log("bad_chunk", severity="warning", error=str(exc)[:300])
            return False
        finally:
            self.link.ack(item)

    def _evict_bundles(self, keep: Path) -> None:
        """Keep the newest KEEP_BUNDLES bundles: a device that runs for weeks sees many bundle versions."""
        dirs = sorted(
            (p for p in self.store.bundles_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in [d for d in dirs if d != keep][KEEP_BUNDLES - 1 :]:
            shutil.rmtree(old, ignore_errors=True)
        for partial in self.store.bundles_dir.glob(".partial-*"):  # abandoned downloads of other bundles
            shutil.rmtree(partial, ignore_errors=True)
