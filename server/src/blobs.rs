//! Content-addressed blob store: model and validation files on disk beside the database, named by
//! their SHA-256. Uploads stream to a temporary file while hashing, are flushed to disk, then
//! renamed into place, so a blob file is always complete.

use crate::error::ApiError;
use axum::body::Body;
use axum::http::StatusCode;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
    gate: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// An upload received in full in a temporary file, not yet in the store.
#[derive(Debug)]
pub struct Received {
    tmp: PathBuf,
    stored: Stored,
}

/// A stored blob.
#[derive(Debug, Clone)]
pub struct Stored {
    pub hash: String,
    pub bytes: u64,
}

impl Blobs {
    pub fn open(root: PathBuf) -> std::io::Result<Blobs> {
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(Blobs {
            root,
            gate: std::sync::Arc::default(),
        })
    }

    /// Removes the leftovers of uploads cut short by a crash. Only the service that owns the data
    /// directory may (at its start, before it takes uploads): a worker process doing it would
    /// delete the service's uploads in flight.
    pub fn remove_partial_uploads(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(self.root.join("tmp"))?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(())
    }

    pub fn path(&self, hash: &str) -> PathBuf {
        self.root.join(&hash[..2]).join(hash)
    }

    /// Streams `body` to a temporary file while hashing it; refuses bodies over `limit` bytes
    /// (413) or empty ones (422). [`Blobs::place`] moves it into the store.
    pub async fn receive(&self, body: Body, limit: u64, field: &str) -> Result<Received, ApiError> {
        let tmp = self
            .root
            .join("tmp")
            .join(uuid::Uuid::now_v7().simple().to_string());
        match self.write_tmp(&tmp, body, limit, field).await {
            Ok(stored) => Ok(Received { tmp, stored }),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// Moves a received file to its content address.
    pub async fn place(&self, received: Received) -> Result<Stored, ApiError> {
        let dest = self.path(&received.stored.hash);
        let placed = async {
            tokio::fs::create_dir_all(dest.parent().expect("a parent")).await?;
            tokio::fs::rename(&received.tmp, &dest).await
        }
        .await;
        if let Err(e) = placed {
            let _ = tokio::fs::remove_file(&received.tmp).await;
            return Err(ApiError::internal("blob store", e));
        }
        Ok(received.stored)
    }

    /// Held while a blob is placed and recorded, and while garbage is collected, so that the one
    /// never removes what the other is placing (in this process; uploads and collection happen in
    /// the API's process).
    pub fn gate(&self) -> &tokio::sync::Mutex<()> {
        &self.gate
    }

    async fn write_tmp(
        &self,
        tmp: &Path,
        body: Body,
        limit: u64,
        field: &str,
    ) -> Result<Stored, ApiError> {
        let io = |e: std::io::Error| ApiError::internal("blob store", e);
        let mut file = tokio::fs::File::create(tmp).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("{field}: the upload was interrupted: {e}"),
                )
            })?;
            bytes += chunk.len() as u64;
            if bytes > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("{field}: the upload exceeds the limit of {limit} bytes (--max-upload-bytes)"),
                ));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        if bytes == 0 {
            return Err(ApiError::invalid(field, "the body is empty"));
        }
        file.sync_all().await.map_err(io)?;
        let hash = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Ok(Stored { hash, bytes })
    }

    /// Writes bytes already in memory (the demo's embedded files).
    pub async fn put_bytes(&self, bytes: Vec<u8>) -> Result<Stored, ApiError> {
        let received = self.receive(Body::from(bytes), u64::MAX, "blob").await?;
        self.place(received).await
    }

    pub async fn read(&self, hash: &str) -> Result<Vec<u8>, ApiError> {
        tokio::fs::read(self.path(hash))
            .await
            .map_err(|e| ApiError::internal(&format!("blob {hash}"), e))
    }

    /// The blob as a response body read from disk in chunks, and its length: a download never
    /// holds the whole file in memory (an open file outlives garbage collection's unlink).
    pub async fn stream(&self, hash: &str) -> Result<(Body, u64), ApiError> {
        let internal = |e| ApiError::internal(&format!("blob {hash}"), e);
        let file = tokio::fs::File::open(self.path(hash))
            .await
            .map_err(internal)?;
        let len = file.metadata().await.map_err(internal)?.len();
        Ok((
            Body::from_stream(tokio_util::io::ReaderStream::new(file)),
            len,
        ))
    }

    pub async fn remove(&self, hash: &str) {
        if let Err(e) = tokio::fs::remove_file(self.path(hash)).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove blob {hash}: {e}");
            }
        }
    }
}
