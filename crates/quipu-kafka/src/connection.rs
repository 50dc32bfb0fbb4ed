//! One client connection: size-prefixed frames in, handled concurrently (at most
//! `requests_in_flight_max`), answered strictly in request order (Kafka clients match responses
//! to requests by order, and kafka-python closes the connection on a mismatch).
//!
//! A connection with nothing read and nothing being handled for `connections_max_idle_ms` is
//! closed, as is one whose client does not take a response within it.
//!
//! Invariant: a frame is allocated only after its size was checked against
//! `request_bytes_max` and room for it was taken from the listener's request-bytes pool
//! (`queued_request_bytes_max`), given back once the request is handled; a malformed frame
//! closes this connection and no other.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use quipu_node::Principal;

use crate::api;
use crate::error::RequestError;
use crate::server::Context;

/// Reads, handles and answers requests until the client closes the connection or sends
/// something that cannot be answered; `reader` and `writer` are the connection's halves (TCP,
/// or TLS over TCP), `subject` the subject of the client's TLS certificate if it showed one.
///
/// The connection's principal: the SASL user on a listener with SASL, else the certificate's
/// subject, else `User:ANONYMOUS` (Kafka's).
pub(crate) async fn run<R, W>(
    mut reader: R,
    mut writer: W,
    peer: SocketAddr,
    subject: Option<String>,
    context: Arc<Context>,
) where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Unpin,
{
    // On a listener with SASL, nothing is read ahead or handled concurrently until the client
    // has authenticated.
    let principal = if context.config.sasl_mechanisms.is_empty() {
        match subject {
            Some(subject) => Principal::user(&subject, peer.ip()),
            None => Principal::anonymous(peer.ip()),
        }
    } else {
        match crate::sasl::authenticate(&mut reader, &mut writer, peer, &context).await {
            Ok(user) => Principal::user(&user, peer.ip()),
            Err(e) => {
                tracing::debug!(%peer, error = &e as &dyn std::error::Error, "closing kafka connection before authentication");
                return;
            }
        }
    };
    let principal = Arc::new(principal);
    let in_flight_max = context.config.requests_in_flight_max.max(1);
    let (frames, mut incoming) = tokio::sync::mpsc::channel::<Queued>(in_flight_max);
    let frame_max = context.config.request_bytes_max;
    let pool = Arc::clone(&context.queued);
    let read = tokio::spawn(async move {
        let result = read_frames(reader, frame_max, &pool, &frames).await;
        if let Err(e) = &result {
            tracing::debug!(%peer, error = e as &dyn std::error::Error, "kafka connection read ended");
        }
    });
    let mut pending = FuturesOrdered::new();
    let mut reading = true;
    let idle = std::time::Duration::from_millis(context.config.connections_max_idle_ms.max(1));
    let mut idle_since = tokio::time::Instant::now();
    loop {
        tokio::select! {
            frame = incoming.recv(), if reading && pending.len() < in_flight_max => {
                idle_since = tokio::time::Instant::now();
                match frame {
                    Some((frame, room)) => {
                        let context = Arc::clone(&context);
                        let principal = Arc::clone(&principal);
                        pending.push_back(async move {
                            let answered = api::dispatch(&context, frame, &principal).await;
                            // The request's bytes are gone once it is handled: a client slow to
                            // read its answers holds no room in the pool.
                            drop(room);
                            answered
                        });
                    }
                    None => reading = false,
                }
            }
            Some(answered) = pending.next(), if !pending.is_empty() => {
                match answered {
                    Ok(Some(mut response)) => {
                        // A client that does not take its answer within the idle limit holds
                        // its connection no longer.
                        // Flushed: over TLS, records may wait in the session's buffer.
                        let write = async {
                            writer.write_all_buf(&mut response).await?;
                            writer.flush().await
                        };
                        match tokio::time::timeout(idle, write).await {
                            Ok(Ok(())) => idle_since = tokio::time::Instant::now(),
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = &e as &dyn std::error::Error, "kafka connection write failed");
                                break;
                            }
                            Err(_) => {
                                tracing::info!(%peer, "closing kafka connection: the client does not read its answers");
                                break;
                            }
                        }
                    }
                    Ok(None) => {} // acks=0: Kafka sends nothing back
                    Err(e) => {
                        tracing::info!(%peer, error = &e as &dyn std::error::Error, "closing kafka connection");
                        break;
                    }
                }
            }
            () = tokio::time::sleep_until(idle_since + idle), if reading && pending.is_empty() => {
                tracing::debug!(%peer, "closing idle kafka connection");
                break;
            }
            else => break,
        }
    }
    read.abort();
}

/// A request frame read, with its room in the listener's request-bytes pool.
type Queued = (Bytes, tokio::sync::OwnedSemaphorePermit);

/// Reads a frame's size prefix, checked to be 4 to `frame_max` bytes; `None` when the peer
/// closed the connection before it.
async fn read_size<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame_max: usize,
) -> Result<Option<usize>, RequestError> {
    let size = match reader.read_i32().await {
        Ok(size) => size,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(RequestError::Io(e)),
    };
    usize::try_from(size)
        .ok()
        .filter(|size| (4..=frame_max).contains(size))
        .map(Some)
        .ok_or(RequestError::FrameSize {
            size,
            max: frame_max,
        })
}

/// Reads a frame's `size` bytes (after its checked prefix).
async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
) -> Result<Bytes, RequestError> {
    read_exactly(reader, size, &mut BytesMut::new())
        .await
        .map_err(RequestError::Io)
}

/// Reads exactly `size` bytes into `room` (reusing what room it has, never zeroing it first)
/// and returns them; `room` keeps whatever capacity is left for the next read. A peer that
/// closes before `size` bytes is an `UnexpectedEof`.
pub async fn read_exactly<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
    room: &mut BytesMut,
) -> std::io::Result<Bytes> {
    room.clear();
    room.reserve(size);
    let mut limited = reader.take(u64::try_from(size).unwrap_or(u64::MAX));
    while room.len() < size {
        if limited.read_buf(room).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(room.split().freeze())
}

/// Reads one size-prefixed frame of at most `frame_max` bytes; `None` when the peer closed the
/// connection before it.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame_max: usize,
) -> Result<Option<Bytes>, RequestError> {
    match read_size(reader, frame_max).await? {
        Some(size) => read_body(reader, size).await.map(Some),
        None => Ok(None),
    }
}

/// Reads size-prefixed frames into `frames` until the peer closes the connection, each only
/// once the pool has room for it.
async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: R,
    frame_max: usize,
    pool: &Arc<tokio::sync::Semaphore>,
    frames: &tokio::sync::mpsc::Sender<Queued>,
) -> Result<(), RequestError> {
    while let Some(size) = read_size(&mut reader, frame_max).await? {
        let Ok(room) = Arc::clone(pool)
            .acquire_many_owned(crate::server::pool_units(size))
            .await
        else {
            return Ok(()); // the pool is closed: the listener is stopping
        };
        let frame = read_body(&mut reader, size).await?;
        if frames.send((frame, room)).await.is_err() {
            return Ok(()); // the connection is closing
        }
    }
    Ok(())
}
