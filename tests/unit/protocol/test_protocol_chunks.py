"""Bundle chunking and reassembly: any order, duplicates, corruption, atomic writes."""

from __future__ import annotations

import dataclasses
import os
import random

import pytest

from fedhft.protocol import (
    CHUNK_HEADER_MAX,
    BundleChunk,
    ChunkAssembler,
    ChunkMismatch,
    DigestMismatch,
    PayloadTooLarge,
    Topics,
    chunk_size_for,
    decode,
    encode,
    file_sha256,
    iter_file_chunks,
    split_bytes,
)
from fedhft.protocol._envelope import PREFIX_LEN, sha256_hex
from fedhft.protocol import publish_overhead

DATA = os.urandom(10_000) + b"tail"


def _chunks(data=DATA, size=1000, file="model/train.onnx"):
    return split_bytes(data, fleet="demo", bundle_id="b1", file=file, chunk_size=size)


def test_split_shapes():
    chunks = _chunks()
    assert [c.index for c in chunks] == list(range(11)) and {c.count for c in chunks} == {11}
    assert all(len(c.data) <= 1000 for c in chunks) and b"".join(c.data for c in chunks) == DATA
    assert {c.file_sha256 for c in chunks} == {sha256_hex(DATA)}
    (empty,) = _chunks(b"")
    assert empty.count == 1 and empty.data == b"" and empty.file_size == 0


def test_out_of_order_with_duplicates(tmp_path):
    chunks = _chunks()
    order = chunks + chunks[:5]
    random.Random(0).shuffle(order)
    asm = ChunkAssembler(tmp_path, bundle_id="b1")
    results = [asm.add(decode(encode(c))) for c in order]  # through the wire format, as on a device
    assert results.count("complete") == 1 and results.count("duplicate") == 5
    assert (tmp_path / "model/train.onnx").read_bytes() == DATA
    assert asm.missing("model/train.onnx") == [] and asm.pending() == {}
    assert asm.is_complete(["model/train.onnx"]) and not asm.is_complete(["model/train.onnx", "other"])
    assert asm.add(chunks[0]) == "duplicate"


def test_missing_indices_and_nothing_written_until_complete(tmp_path):
    chunks = _chunks()
    asm = ChunkAssembler(tmp_path)
    for c in chunks[::2]:
        assert asm.add(c) == "added"
    assert asm.missing("model/train.onnx") == [1, 3, 5, 7, 9]
    assert asm.pending() == {"model/train.onnx": [1, 3, 5, 7, 9]}
    assert not (tmp_path / "model").exists() and asm.path("model/train.onnx") is None
    with pytest.raises(KeyError, match="request the whole file"):
        asm.missing("never-seen")


def test_corrupt_chunk_is_refused(tmp_path):
    chunks = _chunks()
    asm = ChunkAssembler(tmp_path)
    bad = dataclasses.replace(chunks[2], data=b"x" + chunks[2].data[1:])
    with pytest.raises(DigestMismatch, match="re-request"):
        asm.add(bad)
    assert 2 in asm.missing("model/train.onnx")
    for c in chunks:
        asm.add(c)
    assert (tmp_path / "model/train.onnx").read_bytes() == DATA


def test_consistent_lie_fails_the_whole_file_digest(tmp_path):
    chunks = _chunks()
    forged = b"y" * len(chunks[4].data)
    chunks[4] = dataclasses.replace(chunks[4], data=forged, chunk_sha256=sha256_hex(forged))
    asm = ChunkAssembler(tmp_path)
    for c in chunks[:-1]:
        asm.add(c)
    with pytest.raises(DigestMismatch, match="request the whole file again"):
        asm.add(chunks[-1])
    assert not (tmp_path / "model/train.onnx").exists()
    assert list(tmp_path.rglob("*.tmp")) == []
    for c in _chunks():  # a clean re-send then succeeds
        asm.add(c)
    assert (tmp_path / "model/train.onnx").read_bytes() == DATA


def test_inconsistent_chunks(tmp_path):
    asm = ChunkAssembler(tmp_path, bundle_id="b1")
    asm.add(_chunks()[0])
    with pytest.raises(ChunkMismatch, match="changed mid-download"):
        asm.add(_chunks(DATA + b"!")[1])
    with pytest.raises(ChunkMismatch, match="assembler of 'b1'"):
        asm.add(dataclasses.replace(_chunks()[1], bundle_id="b2"))
    with pytest.raises(ChunkMismatch, match="outside the bundle"):
        asm.add(dataclasses.replace(_chunks()[1], file="../evil"))
    with pytest.raises(PayloadTooLarge):
        ChunkAssembler(tmp_path, max_file_size=100).add(_chunks()[0])


def test_several_files(tmp_path):
    asm = ChunkAssembler(tmp_path)
    a, b = _chunks(b"A" * 2500, file="a.bin"), _chunks(b"B" * 10, file="tok/vocab.txt")
    for c in [x for pair in zip(a, b + b + b) for x in pair]:
        asm.add(c)
    assert set(asm.completed) == {"a.bin", "tok/vocab.txt"}
    assert (tmp_path / "tok/vocab.txt").read_bytes() == b"B" * 10


def test_iter_file_chunks_matches_split_and_serves_subsets(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    streamed = list(iter_file_chunks(path, fleet="demo", bundle_id="b1", file="model/train.onnx", chunk_size=1000))
    assert streamed == _chunks()
    assert file_sha256(path) == sha256_hex(DATA)
    some = list(iter_file_chunks(path, fleet="demo", bundle_id="b1", file="x", chunk_size=1000, indices=[3, 1, 99, 3]))
    assert [c.index for c in some] == [1, 3]


@pytest.mark.parametrize("max_packet", [128 * 1024, 1024 * 1024, 16 * 1024])
def test_chunk_size_for_fits_the_broker(max_packet):
    topic = Topics("f" * 64).bundle("c" * 64)
    size = chunk_size_for(max_packet, topic)
    worst = BundleChunk(
        "f" * 64, "b" * 128, "d/" * 127 + "x", 2**31 - 1, 2**31, "a" * 64, "b" * 64, 2**40, b"\x00" * size
    )
    worst = dataclasses.replace(worst, chunk_sha256=sha256_hex(worst.data), file_size=2**40)
    payload = encode(worst)
    assert len(payload) - PREFIX_LEN - size <= CHUNK_HEADER_MAX
    assert len(payload) + publish_overhead(topic) <= max_packet


def test_chunk_size_for_tiny_broker():
    with pytest.raises(PayloadTooLarge, match="at least"):
        chunk_size_for(2048, "fedhft/v1/demo/to/c/bundle")
