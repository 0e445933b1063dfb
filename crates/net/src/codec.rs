//! The request-response codec of the blob protocol: u32 length-prefixed frames holding `wire` messages.
//!
//! The frame length is checked against the limit before the buffer is allocated, and the body is
//! decoded by `wire`, whose typed errors become `io::ErrorKind::InvalidData`.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use types::limits::net as limits;

use crate::wire::{BlobRequest, BlobResponse};

/// The blob protocol, version 1. A new wire version gets a new protocol name.
pub(crate) const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/commonweight/blob/1");

#[derive(Debug, Clone, Default)]
pub(crate) struct BlobCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_le_bytes()).await?;
    io.write_all(body).await?;
    // request-response closes the stream after this returns.
    io.flush().await
}

fn invalid(err: crate::wire::WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

impl libp2p::request_response::Codec for BlobCodec {
    type Protocol = StreamProtocol;
    type Request = BlobRequest;
    type Response = BlobResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlobRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, limits::BLOB_REQUEST_BYTES_MAX).await?;
        BlobRequest::decode(&body).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlobResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, limits::BLOB_RESPONSE_BYTES_MAX).await?;
        BlobResponse::decode(&body).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: BlobRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req.encode()).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: BlobResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res.encode()).await
    }
}
