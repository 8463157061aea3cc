//! Shared harness for the end-to-end tests: finds the example agents built by
//! `make agents`, and gives each test binary one runtime to load them into.

pub mod clients;
pub mod organisms;
pub mod timing;
pub mod upstream;

use agentserver::runtime::{
    Agent, AgentComponent, AgentLimits, CallError, Delivery, Runtime, RuntimeConfig, SessionKey,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// The folder holding the built example agents: `$AGENTSERVER_AGENTS_DIR`, or
/// the workspace's `target/agents`.
pub fn agents_dir() -> PathBuf {
    match std::env::var_os("AGENTSERVER_AGENTS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/agents"),
    }
}

/// The path of example agent `name`'s component; panics with the command to
/// run when it has not been built.
pub fn agent_wasm(name: &str) -> PathBuf {
    let path = agents_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the example agents with `make agents`",
        path.display()
    );
    path
}

/// The bytes of example agent `name`'s component.
pub fn agent_bytes(name: &str) -> Vec<u8> {
    std::fs::read(agent_wasm(name)).expect("read agent component")
}

/// The compile cache the tests share (`target/agent-cache`): the large
/// interpreter components are compiled once, not once per test binary.
pub fn compile_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/agent-cache")
}

/// A runtime config small enough that several runtimes fit in one test
/// process, with the shared compile cache.
pub fn small_runtime_config() -> RuntimeConfig {
    RuntimeConfig {
        max_instances: 64,
        cache_dir: Some(compile_cache()),
        ..RuntimeConfig::default()
    }
}

/// The runtime shared by the tests of one test binary.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(small_runtime_config()).expect("start runtime"))
}

/// Example component `name` (`target/agents/NAME.wasm`) loaded into the
/// shared runtime once per test binary, however many tests ask for it at
/// once (the large interpreter components take seconds to compile the
/// first time; afterwards they come from the shared compile cache).
pub fn component(name: &str) -> Arc<AgentComponent> {
    type Slot = Arc<OnceLock<Arc<AgentComponent>>>;
    static LOADED: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    let cell = {
        let mut loaded = LOADED.get_or_init(Default::default).lock().unwrap();
        Arc::clone(loaded.entry(name.to_owned()).or_default())
    };
    Arc::clone(cell.get_or_init(|| {
        runtime()
            .load_component_file(&agent_wasm(name))
            .unwrap_or_else(|e| panic!("load example agent {name}: {e}"))
    }))
}

/// Example agent `component` loaded into the shared runtime as `name`.
pub fn agent(component: &str, limits: AgentLimits) -> Arc<Agent> {
    runtime()
        .agent(component, self::component(component), limits)
        .expect("make agent")
}

/// CRC-32 (IEEE 802.3, as zlib's `crc32`) of `bytes`, bit by bit: the
/// reference the C agent's table-driven one is checked against.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                0xEDB8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Calls `agent` in `session` with `payload`, whose root tag is `tag`.
pub async fn call(
    agent: &Agent,
    session: &str,
    tag: &str,
    payload: &str,
) -> Result<Vec<String>, CallError> {
    agent
        .call(
            &SessionKey::from(session),
            Delivery {
                thread: "thread-1",
                sender: "user:test",
                tag,
                payload,
                emitter: None,
            },
        )
        .await
}

/// A bus with example agents registered: each entry is (registered name,
/// example component, tags it listens to).
pub fn bus_with(
    agents: &[(&str, &str, &[&str])],
) -> (
    agentserver::bus::Bus,
    Arc<agentserver::bus::MemoryAuditSink>,
) {
    let audit = Arc::new(agentserver::bus::MemoryAuditSink::new());
    let bus = agentserver::bus::Bus::new(agentserver::bus::BusConfig::default(), audit.clone());
    for (name, component, tags) in agents {
        register(&bus, name, component, tags, AgentLimits::default());
    }
    (bus, audit)
}

/// Registers example agent `component` on `bus` as `name`, listening to `tags`.
pub fn register(
    bus: &agentserver::bus::Bus,
    name: &str,
    component: &str,
    tags: &[&str],
    limits: AgentLimits,
) {
    use agentserver::bus::{AgentName, Listener, ListenerTarget};
    let loaded = runtime()
        .load_component_file(&agent_wasm(component))
        .expect("load example agent");
    let agent = runtime().agent(name, loaded, limits).expect("make agent");
    bus.register(Listener {
        name: AgentName::new(name).expect("agent name"),
        listens: tags.iter().map(|t| tag(t)).collect(),
        description: format!("example agent {component}"),
        target: ListenerTarget::Local(agent),
    })
    .expect("register agent");
}

/// A tag from its Clark-notation text.
pub fn tag(text: &str) -> agentserver::xml::Tag {
    agentserver::xml::Tag::new(text)
}

/// The next frame in `session`'s outbox, waiting at most 10 s.
pub async fn next_frame(session: &agentserver::bus::Session) -> String {
    match tokio::time::timeout(std::time::Duration::from_secs(10), session.outbox().pop()).await {
        Ok(Some(frame)) => frame.to_string(),
        Ok(None) => panic!("the session's outbox closed"),
        Err(_) => panic!("no frame within 10 s"),
    }
}

/// `[[agent]]` tables for `agents`, as `organism.toml` lists boot agents.
pub fn agent_tables(agents: &[AgentSpec<'_>]) -> String {
    let mut tables = String::new();
    for (name, component, tags) in agents {
        let tags: Vec<String> = tags.iter().map(|t| format!("{t:?}")).collect();
        tables.push_str(&format!(
            "[[agent]]\nname = \"{name}\"\ncomponent = {:?}\nlistens = [{}]\ndescription = \"The {name} agent.\"\n",
            agent_wasm(component).display().to_string(),
            tags.join(", ")
        ));
    }
    tables
}

/// A real server, in this process, on a free loopback port, over real TLS.
pub struct TestServer {
    server: Option<agentserver::server::RunningServer>,
    /// The server's directory (config, users, identity, data).
    pub dir: tempfile::TempDir,
    secrets: std::collections::HashMap<String, Vec<u8>>,
    /// The organism's private key (its public half is the server's identity).
    pub key: agentserver::privileged::SigningKey,
    /// Everything the server audited.
    pub audit: std::sync::Arc<agentserver::bus::MemoryAuditSink>,
}

/// One boot agent for [`TestServer::start`]: (name, example component, tags).
pub type AgentSpec<'a> = (&'a str, &'a str, &'a [&'a str]);

impl TestServer {
    /// Starts a server with `users` (name, allowed tags) and `agents`.
    pub async fn start(users: &[(&str, &[&str])], agents: &[AgentSpec<'_>]) -> TestServer {
        Self::start_with(users, agents, "").await
    }

    /// Like [`TestServer::start`], with extra top-level configuration lines.
    pub async fn start_with(
        users: &[(&str, &[&str])],
        agents: &[AgentSpec<'_>],
        extra: &str,
    ) -> TestServer {
        Self::start_with_files(users, agents, extra, &[]).await
    }

    /// Like [`TestServer::start_with`], with `files` (name, contents, mode)
    /// written beside the configuration first.
    pub async fn start_with_files(
        users: &[(&str, &[&str])],
        agents: &[AgentSpec<'_>],
        extra: &str,
        files: &[(&str, &str, u32)],
    ) -> TestServer {
        Self::launch(users, agents, extra, files, true).await
    }

    /// Like [`TestServer::start_with`], with the audit trail written to the
    /// configured store's log, as `agentserver run` does ([`TestServer::audit`]
    /// stays empty).
    pub async fn start_stored(
        users: &[(&str, &[&str])],
        agents: &[AgentSpec<'_>],
        extra: &str,
    ) -> TestServer {
        Self::launch(users, agents, extra, &[], false).await
    }

    async fn launch(
        users: &[(&str, &[&str])],
        agents: &[AgentSpec<'_>],
        extra: &str,
        files: &[(&str, &str, u32)],
        audit_in_memory: bool,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, contents, mode) in files {
            use std::os::unix::fs::PermissionsExt as _;
            let path = dir.path().join(name);
            std::fs::write(&path, contents).expect("write file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
                .expect("set mode");
        }
        let users_path = dir.path().join("users.toml");
        let mut secrets = std::collections::HashMap::new();
        for (name, allow) in users {
            let allow: Vec<String> = allow.iter().map(|t| t.to_string()).collect();
            let secret = agentserver::auth::add_user(&users_path, name, &allow).expect("add user");
            secrets.insert(name.to_string(), secret);
        }
        // A node joining another's organism brings its identity along.
        if !dir
            .path()
            .join(agentserver::privileged::PRIVATE_KEY_FILE)
            .exists()
        {
            agentserver::privileged::generate(dir.path(), false).expect("identity");
        }
        let key = agentserver::privileged::load_signing_key(
            &dir.path().join(agentserver::privileged::PRIVATE_KEY_FILE),
        )
        .expect("private key");
        let mut config = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nusers = \"users.toml\"\nidentity = \"identity.pub\"\nmax_instances = 64\ncompile_cache = {:?}\n{extra}\n",
            compile_cache().display().to_string()
        );
        config.push_str(&agent_tables(agents));
        let config_path = dir.path().join("organism.toml");
        std::fs::write(&config_path, &config).expect("write config");
        let config = agentserver::server::Config::load(&config_path).expect("config");
        let audit = std::sync::Arc::new(agentserver::bus::MemoryAuditSink::new());
        let server = if audit_in_memory {
            agentserver::server::start_with_audit(config, audit.clone()).await
        } else {
            agentserver::server::start(config).await
        }
        .expect("start server");
        TestServer {
            server: Some(server),
            dir,
            secrets,
            key,
            audit,
        }
    }

    /// Starts another node of this server's organism, with `agents` and
    /// extra configuration lines: the same identity and the same users
    /// (whose codes either server gives).
    pub async fn start_node(&self, agents: &[AgentSpec<'_>], extra: &str) -> TestServer {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).expect(name);
        let private = read(agentserver::privileged::PRIVATE_KEY_FILE);
        let public = read(agentserver::privileged::PUBLIC_KEY_FILE);
        let users = read("users.toml");
        let mut node = Self::launch(
            &[],
            agents,
            extra,
            &[
                (agentserver::privileged::PRIVATE_KEY_FILE, &private, 0o600),
                (agentserver::privileged::PUBLIC_KEY_FILE, &public, 0o644),
                ("users.toml", &users, 0o600),
            ],
            true,
        )
        .await;
        node.secrets = self.secrets.clone();
        node
    }

    fn running(&self) -> &agentserver::server::RunningServer {
        self.server.as_ref().expect("server running")
    }

    /// `wss://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("wss://{}/", self.running().address())
    }

    /// `https://127.0.0.1:PORT`.
    pub fn address(&self) -> std::net::SocketAddr {
        self.running().address()
    }

    /// The current TOTP code of `user`.
    pub fn code(&self, user: &str) -> String {
        self.code_at(user, std::time::SystemTime::now())
    }

    /// `user`'s TOTP secret, base32 (as `agentserver user add
    /// --secret-out` writes it), for clients that compute their own codes.
    pub fn totp_secret(&self, user: &str) -> String {
        agentserver::auth::encode_base32(&self.secrets[user])
    }

    /// The server's development certificate (PEM), which clients trust as
    /// their CA.
    pub fn ca_path(&self) -> std::path::PathBuf {
        self.dir.path().join("data/tls/cert.pem")
    }

    /// `user`'s TOTP code at `time`.
    pub fn code_at(&self, user: &str, time: std::time::SystemTime) -> String {
        agentserver::auth::totp_code(&self.secrets[user], time)
    }

    /// How clients trust this server: its certificate's fingerprint.
    pub fn trust(&self) -> agentserver::client::Trust {
        agentserver::client::Trust::Fingerprint(self.running().fingerprint().to_owned())
    }

    /// A connected client that has not logged in.
    pub async fn connect(&self) -> agentserver::client::Client {
        agentserver::client::Client::connect(&self.url(), &self.trust())
            .await
            .expect("connect")
    }

    /// A client logged in as `user`, and its catalog. A user can log in
    /// twice per server this way (the current TOTP step, then the next one,
    /// within the ±1 step of skew); tests that need more use more users.
    pub async fn login(&self, user: &str) -> (agentserver::client::Client, String) {
        let step = {
            static STEPS: OnceLock<std::sync::Mutex<std::collections::HashMap<String, u64>>> =
                OnceLock::new();
            let mut steps = STEPS.get_or_init(Default::default).lock().unwrap();
            let n = steps
                // Per organism: the nodes of a cluster share the steps used.
                .entry(format!("{:?}/{user}", self.key.verifying_key().as_bytes()))
                .or_insert(0);
            *n += 1;
            *n - 1
        };
        assert!(step < 2, "{user} logged in twice already: use another user");
        let time = std::time::SystemTime::now() + std::time::Duration::from_secs(30 * step);
        let mut client = self.connect().await;
        let catalog = client
            .login(user, &self.code_at(user, time))
            .await
            .expect("login");
        (client, catalog)
    }

    /// `command` (a `<privileged-command>` or `<payload>`, unsigned) signed
    /// with the organism's key, valid for ten minutes from now.
    pub fn sign(&self, command: &str) -> String {
        sign_with(&self.key, command)
    }

    /// The running server (for shutdown requests and the like).
    pub fn server(&self) -> &agentserver::server::RunningServer {
        self.running()
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Stops the server at once: calls in flight are abandoned.
    pub async fn stop_now(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown_now().await;
        }
    }
}

/// The next frame that is not a catalog, within `limit`; panics when none
/// comes, naming `waited_for`.
pub async fn next_answer(
    client: &mut agentserver::client::Client,
    limit: std::time::Duration,
    waited_for: &str,
) -> String {
    use agentserver::client::Received;
    tokio::time::timeout(limit, async {
        loop {
            match client.receive().await {
                Ok(Received::Text(frame)) if !frame.starts_with("<catalog") => return frame,
                Ok(Received::Text(_)) => {}
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{waited_for}"))
}

/// The thread a `<message>` frame names.
pub fn thread_of(frame: &str) -> String {
    frame
        .split("<thread>")
        .nth(1)
        .and_then(|rest| rest.split("</thread>").next())
        .unwrap_or_else(|| panic!("no thread in {frame}"))
        .to_owned()
}

/// The configuration lines of node `name` of a cluster: storage in
/// `redis` under `prefix`, and `nats`.
pub fn cluster_node(nats: &NatsServer, redis: &RedisServer, prefix: &str, name: &str) -> String {
    format!(
        "[storage]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"{prefix}\"\n\
         [cluster]\nnats_url = \"{}\"\nnode = \"{name}\"\n",
        redis.url, nats.url
    )
}

/// The value of attribute `name` in the start tag of `frame`.
pub fn attribute(frame: &str, name: &str) -> Option<String> {
    let start_tag = &frame[..frame.find('>')?];
    let needle = format!(" {name}=\"");
    let at = start_tag.find(&needle)? + needle.len();
    let rest = &start_tag[at..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// (session id, resume token) from a catalog.
pub fn credentials(catalog: &str) -> (String, String) {
    (
        attribute(catalog, "session").expect("session id"),
        attribute(catalog, "resume-token").expect("resume token"),
    )
}

/// A new connection to `server` that asks to resume session `id` with
/// `token`.
pub async fn resume(server: &TestServer, id: &str, token: &str) -> agentserver::client::Client {
    let mut client = server.connect().await;
    client
        .send(&format!("<resume-session id=\"{id}\" token=\"{token}\"/>"))
        .await
        .expect("send the resume");
    client
}

/// The next text frame, waiting at most 10 s.
pub async fn recv(client: &mut agentserver::client::Client) -> agentserver::client::Received {
    tokio::time::timeout(std::time::Duration::from_secs(10), client.receive())
        .await
        .expect("a frame within 10 s")
        .expect("a frame")
}

/// The next frame, which must be text.
pub async fn recv_text(client: &mut agentserver::client::Client) -> String {
    match recv(client).await {
        agentserver::client::Received::Text(text) => text,
        other => panic!("expected text, got {other:?}"),
    }
}

/// `command` signed with `key`, valid for ten minutes from now.
pub fn sign_with(key: &agentserver::privileged::SigningKey, command: &str) -> String {
    let now = agentserver::privileged::time::unix_seconds(std::time::SystemTime::now());
    agentserver::privileged::sign(
        command.as_bytes(),
        key,
        now,
        std::time::Duration::from_secs(600),
    )
    .expect("sign")
}

/// Frames from `client` until one starts with `prefix` (others skipped),
/// waiting at most 10 s for each.
pub async fn recv_until(client: &mut agentserver::client::Client, prefix: &str) -> String {
    loop {
        let frame = recv_text(client).await;
        if frame.starts_with(prefix) {
            return frame;
        }
    }
}

/// A real `redis-server` on a free loopback port, stopped when dropped.
pub struct RedisServer {
    child: Option<std::process::Child>,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    persistent: bool,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one that saves nothing to disk, and waits until it answers
    /// `PING`.
    pub fn start() -> RedisServer {
        Self::launch(false)
    }

    /// Starts one that writes every change to its append-only file before
    /// answering, so that what it acknowledged survives [`stop`](Self::stop)
    /// and [`restart`](Self::restart).
    pub fn start_persistent() -> RedisServer {
        Self::launch(true)
    }

    fn launch(persistent: bool) -> RedisServer {
        let port = free_port();
        let mut server = RedisServer {
            child: None,
            url: format!("redis://127.0.0.1:{port}"),
            port,
            persistent,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        server.restart();
        server
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port and folder (after [`stop`](Self::stop)),
    /// and waits until it answers `PING`.
    pub fn restart(&mut self) {
        use std::io::{Read as _, Write as _};
        self.stop();
        let appendonly = if self.persistent { "yes" } else { "no" };
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                appendonly,
                "--appendfsync",
                "always",
                "--dir",
            ])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect(
                "redis-server is missing: `make test` installs it (apt-get install redis-server)",
            );
        self.child = Some(child);
        let port = self.port;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let answered = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut tcp| {
                tcp.write_all(b"PING\r\n")?;
                let mut answer = [0u8; 7];
                tcp.read_exact(&mut answer)?;
                Ok(&answer == b"+PONG\r\n")
            });
            if matches!(answered, Ok(true)) {
                return;
            }
            if std::time::Instant::now() > deadline {
                self.stop();
                panic!("redis-server did not answer on port {port} within 10 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The repository's mock OpenAI-compatible model server
/// (`example-agents/mock-llm`) on a free loopback port, stopped when
/// dropped.
pub struct MockLlm {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl MockLlm {
    /// Starts one, asking for `api_key` as a bearer token when given, and
    /// waits until it listens.
    pub fn start(api_key: Option<&str>) -> MockLlm {
        let port = free_port();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../example-agents/mock-llm/server.py"
        );
        let mut command = std::process::Command::new("python3");
        command.args([script, "--port", &port.to_string()]);
        if let Some(key) = api_key {
            command.args(["--api-key", key]);
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs the mock model server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the mock model server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        MockLlm { child, port }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its chat completions endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}/v1/chat/completions", self.base())
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `agentserver run` as a process of its own, as a node of `organism`'s
/// organism (its identity and users), so that it can be killed outright.
/// The binary is the one `cargo test --workspace` builds beside this test.
pub struct ProcessNode {
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
    starts: u32,
}

impl ProcessNode {
    /// Starts the node with `agents` and extra configuration lines, and
    /// waits until it listens.
    pub fn start(organism: &TestServer, agents: &[AgentSpec<'_>], extra: &str) -> ProcessNode {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [agentserver::privileged::PUBLIC_KEY_FILE, "users.toml"] {
            std::fs::copy(organism.dir.path().join(name), dir.path().join(name)).expect(name);
        }
        let config = format!(
            "listen = \"127.0.0.1:{}\"\ndata_dir = \"data\"\nusers = \"users.toml\"\nidentity = \"identity.pub\"\ncompile_cache = {:?}\n{extra}\n{}",
            free_port(),
            compile_cache().display().to_string(),
            agent_tables(agents)
        );
        std::fs::write(dir.path().join("organism.toml"), config).expect("write config");
        let mut node = ProcessNode {
            child: None,
            dir,
            starts: 0,
        };
        node.restart();
        node
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again (killing it first if it runs) with the same
    /// configuration and data, and waits until it listens.
    pub fn restart(&mut self) {
        self.kill();
        self.starts += 1;
        let binary = agentserver_binary();
        let log_path = self.dir.path().join(format!("server-{}.log", self.starts));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = std::process::Command::new(binary)
            .args(["run", "--config"])
            .arg(self.dir.path().join("organism.toml"))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start agentserver");
        self.child = Some(child);
        let start = std::time::Instant::now();
        while !std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("listening on wss://")
        {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            assert!(
                exited.is_none() && start.elapsed() < std::time::Duration::from_secs(60),
                "the node did not start: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `agentserver` binary that `cargo test --workspace` builds beside
/// the tests.
pub fn agentserver_binary() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|test| Some(test.parent()?.parent()?.join("agentserver")))
        .filter(|binary| binary.exists())
        .expect("the agentserver binary beside the tests (cargo build -p agentserver)")
}

/// Kills and reaps the child process, if there is one.
fn kill(child: &mut Option<std::process::Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A real `nats-server` on a free loopback port, killed when dropped.
pub struct NatsServer {
    child: Option<std::process::Child>,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    args: Vec<String>,
}

impl NatsServer {
    /// Starts one and waits until its port accepts connections.
    pub fn start() -> NatsServer {
        Self::start_with(&[])
    }

    /// Like [`NatsServer::start`], with more `nats-server` arguments (TLS,
    /// authentication).
    pub fn start_with(args: &[&str]) -> NatsServer {
        let port = free_port();
        let mut server = NatsServer {
            child: None,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            args: args.iter().map(|arg| arg.to_string()).collect(),
        };
        server.restart();
        server
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port and waits for it.
    pub fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (make test installs it from Debian)");
        self.child = Some(child);
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "nats-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
