-- A blob row is pinned from its upload until a supernet refers to it (or the upload is refused):
-- garbage collection leaves pinned blobs alone, so it cannot delete a blob an upload is about to
-- reference.
ALTER TABLE blobs ADD COLUMN pinned_until BIGINT;
