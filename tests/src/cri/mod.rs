//! containerd's CRI image service over its unix socket, so that containerd itself pulls an
//! image the way kubelet makes it pull (CRI's own resolver, hosts directory, lease and
//! `discard_unpacked_layers`), which `ctr` cannot: Debian 12 ships no crictl.
//!
//! One unary gRPC call, `runtime.v1.ImageService/PullImage`, over HTTP/2 with hyper (already
//! a dependency): the request and response messages have three fields between them, so they
//! are encoded here by hand instead of generating a whole CRI client with tonic and prost.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::TestError;

/// `runtime.v1.AuthConfig`'s basic credentials, as kubelet passes a pull secret.
#[derive(Clone, Copy, Debug)]
pub struct CriAuth<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

/// Protobuf varint.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field (strings and embedded messages).
fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `PullImageRequest { image: ImageSpec { image = 1 } = 1, auth: AuthConfig { username = 1,
/// password = 2 } = 2 }`.
pub fn encode_pull_image_request(image: &str, auth: Option<CriAuth<'_>>) -> Vec<u8> {
    let mut spec = Vec::new();
    put_bytes_field(&mut spec, 1, image.as_bytes());
    let mut msg = Vec::new();
    put_bytes_field(&mut msg, 1, &spec);
    if let Some(a) = auth {
        let mut config = Vec::new();
        put_bytes_field(&mut config, 1, a.username.as_bytes());
        put_bytes_field(&mut config, 2, a.password.as_bytes());
        put_bytes_field(&mut msg, 2, &config);
    }
    msg
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// `PullImageResponse { image_ref = 1 }`; other fields are skipped.
pub fn decode_pull_image_response(buf: &[u8]) -> Result<String, String> {
    let mut pos = 0;
    let mut image_ref = None;
    while pos < buf.len() {
        let key = get_varint(buf, &mut pos).ok_or("truncated field key")?;
        let skip = match key & 7 {
            0 => {
                get_varint(buf, &mut pos).ok_or("truncated varint")?;
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let len = get_varint(buf, &mut pos).ok_or("truncated length")? as usize;
                let end = pos.checked_add(len).filter(|&e| e <= buf.len());
                let end = end.ok_or("a field runs past the message")?;
                if key >> 3 == 1 {
                    let text = std::str::from_utf8(&buf[pos..end]).map_err(|e| e.to_string())?;
                    image_ref = Some(text.to_string());
                }
                len
            }
            t => return Err(format!("unsupported wire type {t}")),
        };
        pos += skip;
    }
    image_ref.ok_or_else(|| "no image_ref in PullImageResponse".to_string())
}

/// gRPC's length-prefixed message: not compressed, big-endian length.
fn grpc_frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 5);
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// The one message of a unary response body.
fn grpc_unframe(body: &[u8]) -> Result<&[u8], String> {
    match body {
        [0, a, b, c, d, rest @ ..] => {
            let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
            rest.get(..len)
                .ok_or_else(|| format!("response message of {len} bytes cut short"))
        }
        [1, ..] => Err("compressed response message (not asked for)".into()),
        _ => Err(format!(
            "response body of {} bytes is no gRPC message",
            body.len()
        )),
    }
}

/// Asks containerd's CRI to pull `image` (with credentials as kubelet would pass a pull
/// secret). Returns the image ref (`sha256:<config digest>`).
pub fn pull_image(
    socket: &Path,
    image: &str,
    auth: Option<CriAuth<'_>>,
    timeout: Duration,
) -> Result<String, TestError> {
    let fail = |reason: String| TestError::Scenario(format!("CRI PullImage {image}: {reason}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(TestError::Runtime)?;
    let body = grpc_frame(&encode_pull_image_request(image, auth));
    let call = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| TestError::io(socket, e))?;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| fail(format!("HTTP/2 handshake: {e}")))?;
        tokio::spawn(connection);
        let request = http::Request::post("http://localhost/runtime.v1.ImageService/PullImage")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fail(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let headers = response.headers().clone();
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?;
        // A failed call may be "trailers only": grpc-status in the headers.
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let field = |name: &str| {
            trailers
                .get(name)
                .or_else(|| headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let grpc_status = field("grpc-status");
        if !status.is_success() || grpc_status.as_deref() != Some("0") {
            return Err(fail(format!(
                "HTTP {status}, grpc-status {}, {}",
                grpc_status.as_deref().unwrap_or("missing"),
                percent_decode(&field("grpc-message").unwrap_or_default())
            )));
        }
        let bytes = collected.to_bytes();
        let msg = grpc_unframe(&bytes).map_err(&fail)?;
        decode_pull_image_response(msg).map_err(&fail)
    };
    runtime
        .block_on(async { tokio::time::timeout(timeout, call).await })
        .map_err(|_| TestError::Timeout {
            what: format!("CRI PullImage {image}"),
            after: timeout,
        })?
}

/// grpc-message is percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_the_protobuf_crictl_sends() {
        let msg = encode_pull_image_request(
            "r.example/a:1",
            Some(CriAuth {
                username: "u",
                password: "pw",
            }),
        );
        let mut want = vec![0x0a, 15, 0x0a, 13];
        want.extend_from_slice(b"r.example/a:1");
        want.extend_from_slice(&[0x12, 7, 0x0a, 1, b'u', 0x12, 2, b'p', b'w']);
        assert_eq!(msg, want);
        assert_eq!(
            encode_pull_image_request("x", None),
            [0x0a, 3, 0x0a, 1, b'x']
        );
        let long = "x".repeat(200);
        let msg = encode_pull_image_request(&long, None);
        assert_eq!(&msg[..5], [0x0a, 203, 1, 0x0a, 200]);
    }

    #[test]
    fn the_response_yields_the_image_ref() {
        let mut msg = vec![0x08, 0x96, 0x01]; // an unknown varint field first
        put_bytes_field(&mut msg, 1, b"sha256:abc");
        assert_eq!(decode_pull_image_response(&msg), Ok("sha256:abc".into()));
        assert!(decode_pull_image_response(&[]).is_err());
        assert!(decode_pull_image_response(&[0x0a, 10, b'a']).is_err());
        let framed = grpc_frame(&msg);
        assert_eq!(grpc_unframe(&framed), Ok(&msg[..]));
        assert!(grpc_unframe(&framed[..framed.len() - 1]).is_err());
        assert!(grpc_unframe(&[1, 0, 0, 0, 0]).is_err());
        assert_eq!(percent_decode("a%20b%3A%zz"), "a b:%zz");
    }
}
