"""Not a domain: the vector-store adapters vector_operations talks through.

- ``files``: vectors stored as float32 shard files on the mounted filesystem under test
  (the self-test module), read back and searched exactly on the host;
- ``fuse``: VexFS's FUSE protocol: ``NAME.vec`` files of comma-separated floats and a
  query written to ``_vexfs/search``;
- ``qdrant``: VexFS's Qdrant-compatible REST API through the official ``qdrant-client``;
  with no ``url`` it runs qdrant-client's embedded local mode (what CI exercises).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vexfs_cockpit.plugin import Target, q

SHARD = 1000  # vectors per shard file


# -- guest commands (pure: tests/test_quoting.py feeds them hostile directories) -------
def shard_count_cmd(directory: str) -> str:
    """How many shard files ``directory`` holds."""
    return f"ls {q(directory)} | grep -c '\\.f32$'"


def fuse_write_cmd(path: str) -> str:
    """Write standard input to ``path`` (a ``NAME.vec`` file of the FUSE protocol)."""
    return f"cat > {q(path)}"


def fuse_search_cmd(directory: str, query: str, k: int) -> str:
    """Write a query to ``<directory>/_vexfs/search`` and read the answer back."""
    search = q(f"{directory}/_vexfs/search")
    return f"printf 'vector: %s\\nk: %d\\n' {q(query)} {int(k)} > {search} && cat {search}"


class VectorStore(Protocol):
    name: str

    async def insert(self, vectors: np.ndarray) -> None: ...

    async def fetch_all(self) -> np.ndarray: ...

    async def search(self, query: np.ndarray, k: int) -> list[int]: ...

    async def update(self, start: int, vectors: np.ndarray) -> None:
        """Overwrite ids start..start+len-1 in place."""
        ...

    async def delete_tail(self, n: int) -> None:
        """Delete the last ``n`` ids."""
        ...

    async def close(self) -> None: ...


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ground truth: exact L2 top-k ids per query (numpy, on the host)."""
    d = (queries**2).sum(1)[:, None] - 2 * queries @ data.T + (data**2).sum(1)[None, :]
    idx = np.argpartition(d, kth=min(k, data.shape[0] - 1), axis=1)[:, :k]
    order = np.take_along_axis(d, idx, axis=1).argsort(axis=1)
    return np.take_along_axis(idx, order, axis=1)


@dataclass
class FileShardStore:
    """Vectors as files on the filesystem under test; the host reads them back and searches."""

    target: Target
    directory: str
    workdir: Path
    dims: int
    name: str = "files"
    _cache: np.ndarray | None = None

    async def insert(self, vectors: np.ndarray) -> None:
        await self.target.run(["mkdir", "-p", self.directory], check=True)
        base = (await self._count())
        for start in range(0, len(vectors), SHARD):
            chunk = np.ascontiguousarray(vectors[start:start + SHARD], dtype="<f4")
            local = self.workdir / f"shard_{base + start:08d}.f32"
            local.write_bytes(chunk.tobytes())
            await self.target.put(local, f"{self.directory}/{local.name}")
            local.unlink()
        await self.target.run("sync", check=True)
        self._cache = None

    async def _count(self) -> int:
        res = await self.target.run(shard_count_cmd(self.directory))
        return int(res.output.strip() or 0) * SHARD if res.output.strip().isdigit() else 0

    async def fetch_all(self) -> np.ndarray:
        """Read every shard back from the guest (after dropping its page cache)."""
        await self.target.run("sync; echo 3 > /proc/sys/vm/drop_caches", check=True)
        names = (await self.target.run(["ls", self.directory], check=True)).output.split()
        parts = []
        for n in sorted(x for x in names if x.endswith(".f32")):
            local = self.workdir / f"back_{n}"
            await self.target.get(f"{self.directory}/{n}", local)
            parts.append(np.frombuffer(local.read_bytes(), dtype="<f4").reshape(-1, self.dims))
            local.unlink()
        self._cache = np.concatenate(parts) if parts else np.zeros((0, self.dims), "<f4")
        return self._cache

    async def search(self, query: np.ndarray, k: int) -> list[int]:
        data = self._cache if self._cache is not None else await self.fetch_all()
        return [int(i) for i in exact_topk(data, query[None, :], k)[0]]

    async def update(self, start: int, vectors: np.ndarray) -> None:
        if start % SHARD or len(vectors) % SHARD:
            raise ValueError(f"the files adapter updates whole shards of {SHARD} vectors")
        for off in range(0, len(vectors), SHARD):
            local = self.workdir / f"shard_{start + off:08d}.f32"
            local.write_bytes(np.ascontiguousarray(vectors[off:off + SHARD], dtype="<f4").tobytes())
            await self.target.put(local, f"{self.directory}/{local.name}")
            local.unlink()
        self._cache = None

    async def delete_tail(self, n: int) -> None:
        total = await self._count()
        if n % SHARD:
            raise ValueError(f"the files adapter deletes whole shards of {SHARD} vectors")
        names = [f"{self.directory}/shard_{i:08d}.f32" for i in range(total - n, total, SHARD)]
        await self.target.run(["rm", *names], check=True)
        self._cache = None

    async def close(self) -> None:
        await self.target.run(["rm", "-rf", self.directory])


@dataclass
class FuseProtocolStore:
    """VexFS FUSE: write ``<id>.vec`` (comma-separated floats), query via ``_vexfs/search``."""

    target: Target
    directory: str
    dims: int
    name: str = "fuse"
    _n: int = 0

    async def insert(self, vectors: np.ndarray) -> None:
        for i, v in enumerate(vectors, start=self._n):
            text = ",".join(f"{x:.9g}" for x in v)
            await self.target.run(fuse_write_cmd(f"{self.directory}/{i}.vec"), input=text, check=True)
        self._n += len(vectors)

    async def fetch_all(self) -> np.ndarray:
        rows = []
        for i in range(self._n):
            out = (await self.target.run(["cat", f"{self.directory}/{i}.vec"], check=True)).output
            rows.append(np.array([float(x) for x in out.strip().split(",")], dtype="<f4"))
        return np.stack(rows) if rows else np.zeros((0, self.dims), "<f4")

    async def update(self, start: int, vectors: np.ndarray) -> None:
        raise NotImplementedError("the FUSE protocol has no in-place update")

    async def delete_tail(self, n: int) -> None:
        raise NotImplementedError("the FUSE protocol adapter has no delete")

    async def search(self, query: np.ndarray, k: int) -> list[int]:
        text = ",".join(f"{x:.9g}" for x in query)
        res = await self.target.run(fuse_search_cmd(self.directory, text, k), check=True)
        ids = []
        for line in res.output.splitlines():
            head = line.strip().split()[0] if line.strip() else ""
            head = head.removesuffix(".vec").split(":")[0]
            if head.isdigit():
                ids.append(int(head))
        return ids[:k]

    async def close(self) -> None:
        pass


class QdrantStore:
    """qdrant-client against VexFS's Qdrant dialect (``url``) or embedded local mode."""

    name = "qdrant"

    def __init__(self, dims: int, url: str | None = None, collection: str = "vexfs_cockpit"):
        from qdrant_client import QdrantClient
        from qdrant_client.http import models

        self._models = models
        self.client: Any = QdrantClient(url=url) if url else QdrantClient(location=":memory:")
        self.collection = collection
        self.dims = dims
        if self.client.collection_exists(collection):
            self.client.delete_collection(collection)
        self.client.create_collection(
            collection, vectors_config=models.VectorParams(size=dims, distance=models.Distance.EUCLID)
        )
        self._n = 0

    async def insert(self, vectors: np.ndarray) -> None:
        m = self._models
        for start in range(0, len(vectors), 1000):
            chunk = vectors[start:start + 1000]
            points = [
                m.PointStruct(id=self._n + start + i, vector=[float(x) for x in v]) for i, v in enumerate(chunk)
            ]
            await asyncio.to_thread(self.client.upsert, self.collection, points, wait=True)
        self._n += len(vectors)

    async def fetch_all(self) -> np.ndarray:
        recs = await asyncio.to_thread(
            self.client.retrieve, self.collection, list(range(self._n)), with_vectors=True
        )
        recs = sorted(recs, key=lambda r: r.id)
        return np.array([r.vector for r in recs], dtype="<f4")

    async def search(self, query: np.ndarray, k: int) -> list[int]:
        res = await asyncio.to_thread(
            self.client.query_points, self.collection, query=[float(x) for x in query], limit=k
        )
        return [int(p.id) for p in res.points]

    async def update(self, start: int, vectors: np.ndarray) -> None:
        m = self._models
        points = [m.PointStruct(id=start + i, vector=[float(x) for x in v]) for i, v in enumerate(vectors)]
        await asyncio.to_thread(self.client.upsert, self.collection, points, wait=True)

    async def delete_tail(self, n: int) -> None:
        ids = list(range(self._n - n, self._n))
        await asyncio.to_thread(
            self.client.delete, self.collection, points_selector=self._models.PointIdsList(points=ids), wait=True
        )
        self._n -= n

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


