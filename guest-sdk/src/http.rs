//! Outbound HTTP through the host (`wasi:http/outgoing-handler`): only to
//! the hosts the agent's owner granted, within the grant's limits. The host
//! adds the grant's secret headers itself; the agent never sees them.
//!
//! ```no_run
//! let response = agentserver_guest::http::get("https://api.example.com/v1/status")?;
//! assert_eq!(response.status, 200);
//! # Ok::<(), agentserver_guest::http::HttpError>(())
//! ```

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use std::fmt;

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercase.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Why a request failed: the host's error code, as text (for example
/// `HttpRequestDenied` for a host that is not granted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError(pub String);

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

impl From<ErrorCode> for HttpError {
    fn from(code: ErrorCode) -> Self {
        HttpError(match code {
            ErrorCode::InternalError(Some(text)) => text,
            other => format!("{other:?}"),
        })
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    request("GET", url, &[], None)
}

/// Sends `method url` with `headers` and `body`, and reads the whole
/// response. Redirects are not followed.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| HttpError(format!("{url:?} has no scheme")))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    // All headers in one host call rather than one call each.
    let fields = Fields::from_list(&entries).map_err(|e| {
        let names: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
        HttpError(format!("headers {names:?} refused: {e:?}"))
    })?;
    let request = OutgoingRequest::new(fields);
    let method = match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    };
    let bad = |what: &str| HttpError(format!("the request's {what} is invalid"));
    // A new request's method is already GET: one host call fewer.
    if !matches!(method, Method::Get) {
        request.set_method(&method).map_err(|()| bad("method"))?;
    }
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| bad("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| bad("authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| bad("path"))?;
    // A request without a body never asks for one, so the host sends it
    // with an empty body at once instead of waiting for the guest to
    // finish writing one.
    let outgoing = match body {
        Some(_) => Some(request.body().map_err(|()| bad("body"))?),
        None => None,
    };
    let pending = outgoing_handler::handle(request, None)?;
    if let (Some(outgoing), Some(body)) = (outgoing, body) {
        {
            let stream = outgoing.write().map_err(|()| bad("body"))?;
            for chunk in body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| HttpError(format!("sending the body: {e:?}")))?;
            }
        }
        OutgoingBody::finish(outgoing, None)?;
    }
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(result)) => result?,
        _ => return Err(HttpError("no response".into())),
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response.consume().map_err(|()| bad("response body"))?;
    let mut body = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| bad("response body"))?;
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(error)) => {
                    let code = crate::bindings::wasi::http::types::http_error_code(&error);
                    return Err(match code {
                        Some(code) => code.into(),
                        None => HttpError(error.to_debug_string()),
                    });
                }
            }
        }
    }
    drop(incoming);
    Ok(Response {
        status,
        headers,
        body,
    })
}
