//! Behind a reverse proxy: the real Debian `nginx` (terminating TLS, and
//! passing it through with `ssl_preread` and the PROXY protocol) and `caddy`,
//! run with the configurations shipped in `deploy/` (ports, addresses and
//! certificate paths rewritten), carry a login, a message, a signed command
//! and a resume to the real server; the server sees each client's own
//! address (`127.0.0.2`, where the proxies connect from `127.0.0.1`). A
//! PROXY v2 header is believed from an address in `[proxy] from` and
//! refuses the connection from any other.
//!
//! `make sysdeps` installs nginx (with its stream module) and caddy.

use agentserver::bus::AuditKind;
use agentserver::client::{Client, Received};
use agentserver::privileged::Command;
use agentserver_tests::{recv_text, recv_until, TestServer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};

/// Where the clients connect from: not the proxies' `127.0.0.1`.
const CLIENT_ADDRESS: &str = "127.0.0.2";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// A server trusting `127.0.0.1` as its proxy, with the echo agent (which
/// also listens to `shout`) and users `alice` and `bob`, allowed `echo`.
async fn proxied_server() -> TestServer {
    TestServer::start_with(
        &[("alice", &["echo"]), ("bob", &["echo"])],
        &[("echo", "echo", &["echo", "shout"])],
        "[proxy]\nfrom = [\"127.0.0.1\"]\n",
    )
    .await
}

/// A TCP connection to `to` from `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("address"))
        .expect("bind");
    socket.connect(to).await.expect("connect")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `text` with every `from` replaced by `to`; the shipped file must hold
/// `from`, so that it cannot drift from what is tested.
fn rewrite(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the shipped file no longer holds {from:?}"
    );
    text.replace(from, to)
}

/// A proxy process, stopped when dropped.
struct Proxy {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Proxy {
    fn spawn(mut command: Process, port: u16, log: PathBuf) -> Proxy {
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start the proxy: `make sysdeps` installs nginx and caddy");
        let mut proxy = Proxy { child, port, log };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("the proxy exited ({status}): {}", proxy.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the proxy never listened: {}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy
    }

    fn log(&mut self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("wss://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx run in the foreground from `dir`, with `main` as its whole
/// configuration.
fn nginx(dir: &Path, main: &str, port: u16) -> Proxy {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, main).expect("write nginx.conf");
    let mut command = Process::new("nginx");
    command
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"]);
    Proxy::spawn(command, port, dir.join("nginx.stderr"))
}

/// The lines every nginx configuration here starts with.
fn nginx_main(dir: &Path) -> String {
    format!(
        "pid {0}/nginx.pid;\nerror_log {0}/error.log warn;\nworker_processes 1;\nevents {{}}\n",
        dir.display()
    )
}

/// The server's certificate and key: the proxies present it to clients
/// too, so that the clients' trust (its fingerprint) is the same.
fn certificate(server: &TestServer) -> (String, String) {
    let tls = server.dir.path().join("data/tls");
    (
        tls.join("cert.pem").display().to_string(),
        tls.join("key.pem").display().to_string(),
    )
}

/// nginx terminating TLS, as `deploy/nginx/agentserver.conf` says.
fn nginx_terminating(server: &TestServer, dir: &Path) -> Proxy {
    let port = free_port();
    let (cert, key) = certificate(server);
    let site = std::fs::read_to_string(workspace().join("deploy/nginx/agentserver.conf"))
        .expect("deploy/nginx/agentserver.conf");
    let site = rewrite(
        &site,
        "listen 443 ssl;",
        &format!("listen 127.0.0.1:{port} ssl;"),
    );
    let site = rewrite(
        &site,
        "server 127.0.0.1:8765;",
        &format!("server {};", server.address()),
    );
    let site = rewrite(
        &site,
        "/etc/letsencrypt/live/agents.example.com/fullchain.pem",
        &cert,
    );
    let site = rewrite(
        &site,
        "/etc/letsencrypt/live/agents.example.com/privkey.pem",
        &key,
    );
    let site = rewrite(&site, "/var/lib/agentserver/tls/cert.pem", &cert);
    let main = format!("{}http {{\naccess_log off;\n{site}\n}}\n", nginx_main(dir));
    nginx(dir, &main, port)
}

/// nginx passing TLS through with the PROXY protocol, as
/// `deploy/nginx/agentserver-stream.conf` says.
fn nginx_passing_through(server: &TestServer, dir: &Path) -> Proxy {
    let port = free_port();
    let stream = std::fs::read_to_string(workspace().join("deploy/nginx/agentserver-stream.conf"))
        .expect("deploy/nginx/agentserver-stream.conf");
    let stream = rewrite(&stream, "listen 443;", &format!("listen 127.0.0.1:{port};"));
    let stream = rewrite(&stream, "127.0.0.1:8765", &server.address().to_string());
    let main = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n{}{stream}\n",
        nginx_main(dir)
    );
    nginx(dir, &main, port)
}

/// Caddy terminating TLS, as `deploy/Caddyfile` says.
fn caddy(server: &TestServer, dir: &Path) -> Proxy {
    let port = free_port();
    let (cert, key) = certificate(server);
    let site = std::fs::read_to_string(workspace().join("deploy/Caddyfile")).expect("Caddyfile");
    let site = rewrite(
        &site,
        "agents.example.com {",
        &format!("https://127.0.0.1:{port} {{"),
    );
    let site = rewrite(
        &site,
        "tls /etc/caddy/agents.example.com.crt /etc/caddy/agents.example.com.key",
        &format!("tls {cert} {key}"),
    );
    let site = rewrite(
        &site,
        "https://127.0.0.1:8765",
        &format!("https://{}", server.address()),
    );
    let site = rewrite(&site, "/var/lib/agentserver/tls/cert.pem", &cert);
    let caddyfile = format!(
        "{{\n\tadmin off\n\tauto_https disable_redirects\n\tstorage file_system {0}/caddy\n}}\n{site}",
        dir.display()
    );
    let path = dir.join("Caddyfile");
    std::fs::write(&path, caddyfile).expect("write Caddyfile");
    let mut command = Process::new("caddy");
    command
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"));
    Proxy::spawn(command, port, dir.join("caddy.log"))
}

/// A client of `server` through `proxy`, from [`CLIENT_ADDRESS`].
async fn through(server: &TestServer, proxy: &Proxy) -> Client {
    let to: SocketAddr = ([127, 0, 0, 1], proxy.port).into();
    let tcp = connect_from(CLIENT_ADDRESS, to).await;
    Client::connect_over(&proxy.url(), &server.trust(), tcp)
        .await
        .expect("connect through the proxy")
}

fn attribute(frame: &str, name: &str) -> String {
    let needle = format!(" {name}=\"");
    let at = frame
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} in {frame}"))
        + needle.len();
    frame[at..][..frame[at..].find('"').expect("closing quote")].to_owned()
}

/// The address the audit log gives `user`'s last `event` (login, resume).
fn audited_peer(server: &TestServer, event: &str, user: &str) -> String {
    let record = server
        .audit
        .records()
        .into_iter()
        .rev()
        .find(|r| {
            r.kind == AuditKind::Auth
                && r.canonical.contains(&format!("event=\"{event}\""))
                && r.canonical.contains(&format!("user=\"{user}\""))
        })
        .unwrap_or_else(|| panic!("no {event} of {user} audited"));
    attribute(&record.canonical, "peer")
}

/// Through `proxy`: a login and a message; a signed command; the socket
/// dropped and the session resumed; each seen by the server from the
/// client's own address.
async fn login_message_command_and_resume(server: &TestServer, proxy: &Proxy, user: &str) {
    let mut client = through(server, proxy).await;
    let catalog = client.login(user, &server.code(user)).await.expect("login");
    assert_eq!(audited_peer(server, "login", user), CLIENT_ADDRESS);

    client.send("<echo>through the proxy</echo>").await.unwrap();
    let answer = recv_text(&mut client).await;
    assert!(
        answer.ends_with("<echoed>through the proxy</echoed></message>"),
        "{answer}"
    );

    assert!(!catalog.contains("tag=\"shout\""), "{catalog}");
    let grant = Command::Grant {
        user: user.to_owned(),
        tag: "shout".to_owned(),
    };
    client
        .send(&server.sign(&grant.to_unsigned_document()))
        .await
        .unwrap();
    let verdict = recv_until(&mut client, "<privileged-result").await;
    assert!(verdict.contains("status=\"applied\""), "{verdict}");

    // The socket drops; the session is resumed through the proxy again.
    let (id, token) = (
        attribute(&catalog, "session"),
        attribute(&catalog, "resume-token"),
    );
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = through(server, proxy).await;
    again
        .send(&format!("<resume-session id=\"{id}\" token=\"{token}\"/>"))
        .await
        .unwrap();
    let resumed = recv_until(&mut again, "<catalog").await;
    assert!(resumed.contains("resumed=\"true\""), "{resumed}");
    assert!(resumed.contains("tag=\"shout\""), "{resumed}");
    assert_eq!(audited_peer(server, "resume", user), CLIENT_ADDRESS);
    again.send("<echo>still here</echo>").await.unwrap();
    let answer = recv_text(&mut again).await;
    assert!(
        answer.ends_with("<echoed>still here</echoed></message>"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_terminating_tls_carries_everything_and_names_the_client() {
    let server = proxied_server().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = nginx_terminating(&server, dir.path());
    login_message_command_and_resume(&server, &proxy, "alice").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_passing_tls_through_carries_everything_and_names_the_client() {
    let server = proxied_server().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = nginx_passing_through(&server, dir.path());
    login_message_command_and_resume(&server, &proxy, "alice").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_carries_everything_and_names_the_client() {
    let server = proxied_server().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = caddy(&server, dir.path());
    login_message_command_and_resume(&server, &proxy, "alice").await;
    server.stop().await;
}

/// A PROXY v2 header naming `client` over TCP/IPv4.
fn proxy_v2(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(client), SocketAddr::V4(server)) = (client, server) else {
        panic!("IPv4 only here");
    };
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&client.ip().octets());
    header.extend_from_slice(&server.ip().octets());
    header.extend_from_slice(&client.port().to_be_bytes());
    header.extend_from_slice(&server.port().to_be_bytes());
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_v2_header_is_believed_from_a_trusted_address_only() {
    let server = proxied_server().await;
    let named: SocketAddr = "203.0.113.7:40000".parse().unwrap();

    // From 127.0.0.1, in `[proxy] from`: the header names the client.
    let mut tcp = connect_from("127.0.0.1", server.address()).await;
    tcp.write_all(&proxy_v2(named, server.address()))
        .await
        .unwrap();
    let mut alice = Client::connect_over(&server.url(), &server.trust(), tcp)
        .await
        .expect("connect after a trusted header");
    alice.login("alice", &server.code("alice")).await.unwrap();
    assert_eq!(audited_peer(&server, "login", "alice"), "203.0.113.7");
    alice.send("<echo>v2</echo>").await.unwrap();
    assert!(recv_text(&mut alice)
        .await
        .ends_with("<echoed>v2</echoed></message>"));

    // From 127.0.0.2, not in `[proxy] from`: refused before TLS.
    let mut tcp = connect_from(CLIENT_ADDRESS, server.address()).await;
    tcp.write_all(&proxy_v2(named, server.address()))
        .await
        .unwrap();
    let refused = Client::connect_over(&server.url(), &server.trust(), tcp).await;
    assert!(refused.is_err(), "an untrusted PROXY header was accepted");
    let (status, metrics) = agentserver::client::get(
        &format!("https://{}/metrics", server.address()),
        &server.trust(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("agentserver_refusals_total{kind=\"proxy-header\"} 1"),
        "{metrics}"
    );

    // The same address without a header is an ordinary client.
    let tcp = connect_from(CLIENT_ADDRESS, server.address()).await;
    let mut bob = Client::connect_over(&server.url(), &server.trust(), tcp)
        .await
        .unwrap();
    bob.login("bob", &server.code("bob")).await.unwrap();
    assert_eq!(audited_peer(&server, "login", "bob"), CLIENT_ADDRESS);
    match tokio::time::timeout(Duration::from_secs(1), bob.receive()).await {
        Err(_) | Ok(Ok(Received::Text(_))) => {}
        Ok(other) => panic!("bob's connection ended: {other:?}"),
    }
    server.stop().await;
}
