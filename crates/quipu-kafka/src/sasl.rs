//! SASL on the Kafka listener (SaslHandshake v1, SaslAuthenticate v0–2): PLAIN, SCRAM-SHA-256
//! and SCRAM-SHA-512 against the users' credentials in the cluster metadata. Behaviour:
//! `docs/protocol/security.md`.
//!
//! Invariant: on a listener with SASL, a connection is answered nothing but ApiVersions,
//! SaslHandshake and SaslAuthenticate until it has authenticated; anything else closes it. A
//! failed authentication is answered after [`FAILED_AUTHENTICATION_DELAY`] and closes the
//! connection; it is logged with the peer's address and the user named, never the secret.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use quipu_auth::{AuthError, ScramServer, Step};
use quipu_meta::ScramMechanism;
use quipu_node::NodeHandle;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::api::{self, Body, Request};
use crate::error::RequestError;
use crate::response::Response;
use crate::server::Context;

/// How long a failed authentication waits before it is answered (Kafka's
/// `connection.failed.authentication.delay.ms`): a client guessing passwords gets one guess per
/// connection and per this delay.
pub const FAILED_AUTHENTICATION_DELAY: Duration = Duration::from_millis(500);
/// How long a connection may take to authenticate.
pub const AUTHENTICATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request frame read before authentication.
const FRAME_BYTES_MAX: usize = 64 * 1024;

/// A SASL mechanism a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// PLAIN (RFC 4616): the password in the clear (use it over TLS only).
    Plain,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    Scram(ScramMechanism),
}

impl SaslMechanism {
    /// Its SASL name.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }

    /// The mechanism of a SASL name.
    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        if name == "PLAIN" {
            return Some(SaslMechanism::Plain);
        }
        ScramMechanism::from_name(name).map(SaslMechanism::Scram)
    }
}

/// Where an exchange stands.
enum Exchange {
    /// No mechanism chosen yet.
    Start,
    /// SaslHandshake chose this mechanism.
    Chosen(SaslMechanism),
    /// A SCRAM exchange under way.
    Scram(ScramServer),
}

/// Authenticates the client of a connection on a listener with SASL: reads and answers frames
/// one at a time until it has authenticated (`Ok(user)`), or fails (`Err`: close the
/// connection).
pub(crate) async fn authenticate<R, W>(
    reader: &mut R,
    writer: &mut W,
    peer: SocketAddr,
    context: &Context,
) -> Result<String, RequestError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut exchange = Exchange::Start;
    // After SaslHandshake v0 the tokens come as bare size-prefixed frames, not SaslAuthenticate.
    let mut bare_tokens = false;
    let deadline = tokio::time::Instant::now() + AUTHENTICATION_TIMEOUT;
    loop {
        let frame = match tokio::time::timeout_at(
            deadline,
            crate::connection::read_frame(reader, FRAME_BYTES_MAX),
        )
        .await
        {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return Err(RequestError::Closed),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(RequestError::AuthenticationTimeout),
        };
        if bare_tokens {
            let request = SaslAuthenticateRequest::default().with_auth_bytes(frame);
            match step(&mut exchange, &request, &context.node).await {
                Ok(Progress::Challenge(bytes)) => reply(writer, Some(bare(&bytes)?.into())).await?,
                Ok(Progress::Done { user, last }) => {
                    if !last.is_empty() {
                        reply(writer, Some(bare(&last)?.into())).await?;
                    }
                    tracing::debug!(%peer, user, "kafka client authenticated");
                    return Ok(user);
                }
                Err(refusal) => {
                    // No error can be told in this framing: the connection closes.
                    tracing::warn!(%peer, error = &refusal as &dyn std::error::Error, "kafka client authentication failed");
                    tokio::time::sleep(FAILED_AUTHENTICATION_DELAY).await;
                    return Err(RequestError::AuthenticationFailed);
                }
            }
            continue;
        }
        let (key, id, version, body) = match api::decode(frame.clone())? {
            Request::FutureApiVersions { .. } => {
                reply(
                    writer,
                    api::dispatch(context, frame, &quipu_node::Principal::anonymous(peer.ip()))
                        .await?,
                )
                .await?;
                continue;
            }
            Request::Known {
                key,
                correlation_id,
                version,
                body,
                ..
            } => (key, correlation_id, version, body),
        };
        match *body {
            Body::ApiVersions => {
                reply(
                    writer,
                    api::dispatch(context, frame, &quipu_node::Principal::anonymous(peer.ip()))
                        .await?,
                )
                .await?;
            }
            Body::SaslHandshake(request) => {
                let (response, chosen) = handshake(&context.config.sasl_mechanisms, &request);
                reply(writer, Some(api::encode(key, id, version, &response)?)).await?;
                if let Some(chosen) = chosen {
                    exchange = Exchange::Chosen(chosen);
                    bare_tokens = version == 0;
                }
            }
            Body::SaslAuthenticate(request) => {
                let outcome = step(&mut exchange, &request, &context.node).await;
                match outcome {
                    Ok(Progress::Challenge(bytes)) => {
                        let response = SaslAuthenticateResponse::default().with_auth_bytes(bytes);
                        reply(writer, Some(api::encode(key, id, version, &response)?)).await?;
                    }
                    Ok(Progress::Done { user, last }) => {
                        let response = SaslAuthenticateResponse::default().with_auth_bytes(last);
                        reply(writer, Some(api::encode(key, id, version, &response)?)).await?;
                        tracing::debug!(%peer, user, "kafka client authenticated");
                        return Ok(user);
                    }
                    Err(refusal) => {
                        tracing::warn!(%peer, error = &refusal as &dyn std::error::Error, "kafka client authentication failed");
                        tokio::time::sleep(FAILED_AUTHENTICATION_DELAY).await;
                        let (code, message) = match &refusal {
                            Refusal::State => (
                                ResponseError::IllegalSaslState,
                                "SaslAuthenticate before SaslHandshake",
                            ),
                            Refusal::Auth(_) => (
                                ResponseError::SaslAuthenticationFailed,
                                "Authentication failed: invalid credentials",
                            ),
                        };
                        let response = SaslAuthenticateResponse::default()
                            .with_error_code(code.code())
                            .with_error_message(Some(StrBytes::from_static_str(message)));
                        reply(writer, Some(api::encode(key, id, version, &response)?)).await?;
                        return Err(RequestError::AuthenticationFailed);
                    }
                }
            }
            _ => return Err(RequestError::Unauthenticated(key)),
        }
    }
}

async fn reply<W: AsyncWrite + Unpin>(
    writer: &mut W,
    response: Option<Response>,
) -> Result<(), RequestError> {
    if let Some(mut response) = response {
        writer
            .write_all_buf(&mut response)
            .await
            .map_err(RequestError::Io)?;
        writer.flush().await.map_err(RequestError::Io)?;
    }
    Ok(())
}

/// A bare size-prefixed token (after SaslHandshake v0).
fn bare(token: &[u8]) -> Result<Bytes, RequestError> {
    let len = i32::try_from(token.len()).map_err(|_| RequestError::AuthenticationFailed)?;
    let mut frame = Vec::with_capacity(token.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(token);
    Ok(Bytes::from(frame))
}

/// SaslHandshake: the mechanism asked for, if the listener offers it.
fn handshake(
    offered: &[SaslMechanism],
    request: &SaslHandshakeRequest,
) -> (SaslHandshakeResponse, Option<SaslMechanism>) {
    let names = offered
        .iter()
        .map(|m| StrBytes::from_static_str(m.name()))
        .collect();
    let chosen =
        SaslMechanism::from_name(request.mechanism.as_str()).filter(|m| offered.contains(m));
    let code = if chosen.is_some() {
        0
    } else {
        ResponseError::UnsupportedSaslMechanism.code()
    };
    (
        SaslHandshakeResponse::default()
            .with_error_code(code)
            .with_mechanisms(names),
        chosen,
    )
}

/// What one SaslAuthenticate led to.
enum Progress {
    Challenge(Bytes),
    Done { user: String, last: Bytes },
}

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("SaslAuthenticate before a successful SaslHandshake")]
    State,
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Most PLAIN passwords derived (PBKDF2) at once on a node, off the runtime's threads: a crowd
/// of connections guessing passwords holds up no other request.
const PASSWORD_CHECKS_MAX: usize = 2;

/// Checks a PLAIN message against the node's credentials, off the runtime's threads, at most
/// [`PASSWORD_CHECKS_MAX`] at once.
async fn check_plain(message: Bytes, node: &NodeHandle) -> Result<String, AuthError> {
    static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PASSWORD_CHECKS_MAX);
    let _permit = CHECKS
        .acquire()
        .await
        .map_err(|_| AuthError::InvalidCredentials {
            user: String::new(),
        })?;
    let node = node.clone();
    tokio::task::spawn_blocking(move || quipu_auth::plain(&message, &node))
        .await
        .unwrap_or_else(|_| {
            Err(AuthError::InvalidCredentials {
                user: String::new(),
            })
        })
}

async fn step(
    exchange: &mut Exchange,
    request: &SaslAuthenticateRequest,
    node: &NodeHandle,
) -> Result<Progress, Refusal> {
    let server = match std::mem::replace(exchange, Exchange::Start) {
        Exchange::Start => return Err(Refusal::State),
        Exchange::Chosen(SaslMechanism::Plain) => {
            let user = check_plain(request.auth_bytes.clone(), node).await?;
            return Ok(Progress::Done {
                user,
                last: Bytes::new(),
            });
        }
        Exchange::Chosen(SaslMechanism::Scram(mechanism)) => ScramServer::new(mechanism),
        Exchange::Scram(server) => server,
    };
    let mut server = server;
    match server.step(&request.auth_bytes, node)? {
        Step::Continue(challenge) => {
            *exchange = Exchange::Scram(server);
            Ok(Progress::Challenge(Bytes::from(challenge)))
        }
        Step::Done { user, last } => Ok(Progress::Done {
            user,
            last: Bytes::from(last),
        }),
    }
}

/// SaslHandshake after authentication, or on a listener without SASL (answered in the normal
/// request path).
pub(crate) fn handshake_out_of_place(context: &Context) -> SaslHandshakeResponse {
    let names = context
        .config
        .sasl_mechanisms
        .iter()
        .map(|m| StrBytes::from_static_str(m.name()))
        .collect();
    let code = if context.config.sasl_mechanisms.is_empty() {
        ResponseError::UnsupportedSaslMechanism
    } else {
        // Re-authentication (KIP-368) is not offered: a session does not expire.
        ResponseError::IllegalSaslState
    };
    SaslHandshakeResponse::default()
        .with_error_code(code.code())
        .with_mechanisms(names)
}

/// SaslAuthenticate outside an exchange.
pub(crate) fn authenticate_out_of_place() -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(ResponseError::IllegalSaslState.code())
        .with_error_message(Some(StrBytes::from_static_str(
            "no SASL exchange under way on this connection",
        )))
}
