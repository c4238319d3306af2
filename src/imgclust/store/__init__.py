"""The embedding store: an SQLite key index over append-only raw float32 segment files
(:class:`VectorStore`), and the file digests that let a rerun skip reading unchanged files
(:class:`FileDigests`). :class:`imgclust.cache.EmbeddingCache` puts them together per extractor."""

from .digests import FileDigests, content_digest
from .vectors import VectorStore

__all__ = ["FileDigests", "VectorStore", "content_digest"]
