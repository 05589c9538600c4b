//! A plain-HTTP/1.1 client for the requests the SDK cannot make (hand-signed, malformed or
//! oversized bodies) and for `/metrics`, `/readyz` and `/healthz`: one connection per
//! request, through hyper, which the SDK's own client already brings into the test build.

use std::collections::HashMap;
use std::fmt;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The body as text (invalid UTF-8 replaced), also for assertion messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum HttpError {
    /// Only `http://host:port/path` is spoken here.
    Url(String),
    Connect(std::io::Error),
    Request(http::Error),
    Exchange(hyper::Error),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Url(url) => write!(f, "not an http:// URL: {url}"),
            HttpError::Connect(e) => write!(f, "connect: {e}"),
            HttpError::Request(e) => write!(f, "request: {e}"),
            HttpError::Exchange(e) => write!(f, "exchange: {e}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// `GET url`.
pub async fn get(url: &str) -> Result<HttpReply, HttpError> {
    send("GET", url, &[], Vec::new()).await
}

/// Sends `method url` with these headers and body, and reads the whole answer. hyper's
/// connection adds no `host` header, so one naming the URL's authority is added unless
/// `headers` has its own.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Result<HttpReply, HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let stream = TcpStream::connect(authority)
        .await
        .map_err(HttpError::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(HttpError::Exchange)?;
    // The connection's own task; it ends when the answer is read and `sender` is dropped.
    tokio::spawn(connection);

    let mut request = http::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request = request.header("host", authority);
    }
    for (k, v) in headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(HttpError::Request)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(HttpError::Exchange)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(HttpError::Exchange)?
        .to_bytes()
        .to_vec();
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}
