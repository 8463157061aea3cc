//! A small HTTP/1.1 server on a loopback port, standing in for the web APIs
//! agents call, that records every connection and request it gets: the
//! tests' proof of what the host sent, and where it never connected.
//!
//! Routes: `/hello` (a short text), `/big` (64 KiB), `/slow` (answers after
//! 2 s), `/redirect` (302 to `/hello` on `localhost`), anything else 404.
//! Every answer carries an `authorization` header of its own, which the host
//! must strip before the guest sees it.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`…
    pub method: String,
    /// The path and query.
    pub path: String,
    /// Headers, names lowercase, in order.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The value of header `name`, if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Log {
    connections: usize,
    requests: Vec<Seen>,
}

/// The running server; stops when dropped.
pub struct Upstream {
    /// Its port on 127.0.0.1.
    pub port: u16,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts one on a free port of 127.0.0.1.
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = Arc::clone(&log);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.lock().unwrap().connections += 1;
                tokio::spawn(serve(stream, Arc::clone(&shared), port));
            }
        });
        Upstream { port, log, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.log.lock().unwrap().connections
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().requests.clone()
    }
}

async fn serve(mut stream: tokio::net::TcpStream, log: Arc<Mutex<Log>>, port: u16) {
    let mut buffer = Vec::new();
    loop {
        // One request head at a time (no request bodies are expected).
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        buffer.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let seen = Seen {
            method: request_line.next().unwrap_or_default().to_owned(),
            path: request_line.next().unwrap_or_default().to_owned(),
            headers: lines
                .filter_map(|line| line.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect(),
        };
        let path = seen.path.clone();
        log.lock().unwrap().requests.push(seen);
        let (status, extra, body) = match path.as_str() {
            "/hello" => ("200 OK", String::new(), b"hello from upstream".to_vec()),
            "/big" => ("200 OK", String::new(), vec![b'x'; 64 << 10]),
            "/slow" => {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                ("200 OK", String::new(), b"finally".to_vec())
            }
            "/redirect" => (
                "302 Found",
                format!("location: http://localhost:{port}/hello\r\n"),
                Vec::new(),
            ),
            _ => ("404 Not Found", String::new(), b"no such page".to_vec()),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nauthorization: Bearer upstream-leak\r\n{extra}\r\n",
            body.len()
        );
        if stream.write_all(head.as_bytes()).await.is_err()
            || stream.write_all(&body).await.is_err()
        {
            return;
        }
    }
}
