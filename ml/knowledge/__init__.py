"""Per-tenant document memory: extraction, token chunking, vector and BM25 indexes, hybrid
search, extractive answers with citations, and a memory-bounded cache of collections.

Storage (`storage.knowledge_store`) holds documents, chunks and vectors; everything here that
indexes them is a cache rebuilt from it. Heavy imports (faiss, bm25s, pypdf, tokenizers) happen
on first use, not when this package is imported.
"""
