//! The deployment commands of `docs/agents/`, run as written: for each
//! language page, its first `sh` block (register | sign | apply, the
//! component inline) admits the example agent into a running server, which
//! then answers over the TLS port; its second (remove | sign | apply) takes
//! it out again. The real binary, real components from `make agents`.

use agentserver::client::{Client, Received, Trust};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, SystemTime};

mod support;

use support::{spawn_server, workspace, Spawned, BINARY};

/// The `sh` blocks of a Markdown page, in order.
fn sh_blocks(page: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in page.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// A server run as a child process, with nobody but the carriers and
/// `alice` (allowed everything) and no agents.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    fingerprint: String,
}

/// Users who carry the commands: one per command, since a TOTP code is
/// accepted once.
const CARRIERS: usize = 10;

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        agentserver::privileged::generate(dir.path(), false).unwrap();
        let users = dir.path().join("users.toml");
        let mut names: Vec<String> = (1..=CARRIERS).map(|n| format!("owner{n}")).collect();
        names.push("alice".into());
        for name in &names {
            let secret = agentserver::auth::add_user(&users, name, &["*".into()]).unwrap();
            std::fs::write(
                dir.path().join(format!("{name}.secret")),
                agentserver::auth::encode_base32(&secret),
            )
            .unwrap();
        }
        let config = format!(
            "listen = \"127.0.0.1:0\"\nidentity = \"identity.pub\"\nmax_instances = 64\ncompile_cache = {:?}\n",
            workspace().join("target/agent-cache").display().to_string()
        );
        std::fs::write(dir.path().join("organism.toml"), config).unwrap();
        let Spawned {
            child,
            url,
            fingerprint,
        } = spawn_server(&dir.path().join("organism.toml"));
        Server {
            child,
            dir,
            url,
            fingerprint,
        }
    }

    fn secret(&self, user: &str) -> Vec<u8> {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{user}.secret"))).unwrap();
        agentserver::auth::decode_base32(text.trim()).unwrap()
    }

    /// Runs a block of a page in a shell, with `agentserver` on the PATH
    /// and the variables the pages name, carried by user `carrier`.
    fn run_block(&self, block: &str, carrier: &str) -> String {
        let bin_dir = Path::new(BINARY).parent().unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        let output = Command::new("sh")
            .args(["-ec", block])
            .current_dir(workspace())
            .env("PATH", format!("{}:{path}", bin_dir.display()))
            .env("AGENTS", workspace().join("target/agents"))
            .env("URL", &self.url)
            .env("CA", self.dir.path().join("data/tls/cert.pem"))
            .env("KEY", self.dir.path().join("identity.key"))
            .env("CARRIER", carrier)
            .env(
                "CARRIER_SECRET",
                self.dir.path().join(format!("{carrier}.secret")),
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{block}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next frame that is not a catalog (catalogs arrive whenever agents
/// come and go).
async fn answer(client: &mut Client) -> String {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), client.receive())
            .await
            .expect("a frame within 30 s")
            .expect("a frame");
        match frame {
            Received::Text(text) if text.starts_with("<catalog") => continue,
            Received::Text(text) => return text,
            Received::Closed(code, reason) => panic!("closed: {code} {reason}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_language_page_deploys_and_removes_its_agent() {
    let server = Server::start();
    let mut alice = Client::connect(&server.url, &Trust::Fingerprint(server.fingerprint.clone()))
        .await
        .unwrap();
    let code = agentserver::auth::totp_code(&server.secret("alice"), SystemTime::now());
    alice.login("alice", &code).await.unwrap();

    let pages = [
        ("rust.md", "<twin>hi</twin>", "<echoed>hi</echoed>"),
        (
            "python.md",
            "<stats>1 2 3.5 4</stats>",
            r#"<stats-result count="4" mean="2.625" median="2.75" stdev="1.3768926368215255"></stats-result>"#,
        ),
        (
            "javascript.md",
            r#"<sort order="asc">pear apple fig</sort>"#,
            ">apple fig pear</sorted>",
        ),
        (
            "c.md",
            "<checksum>123456789</checksum>",
            "<crc32>cbf43926</crc32>",
        ),
        (
            "go.md",
            r#"<wordfreq top="2">The cat and the hat</wordfreq>"#,
            r#"<word-counts distinct="4" words="5"><word count="2">the</word><word count="1">and</word></word-counts>"#,
        ),
    ];
    let mut carriers = (1..=CARRIERS).map(|n| format!("owner{n}"));
    for (page, question, expected) in pages {
        let text = std::fs::read_to_string(workspace().join("docs/agents").join(page)).unwrap();
        let blocks = sh_blocks(&text);
        assert_eq!(blocks.len(), 2, "{page}: a deploy and a remove block");
        let tag = question[1..].split([' ', '>']).next().unwrap();

        let applied = server.run_block(&blocks[0], &carriers.next().unwrap());
        assert!(applied.contains("status=\"applied\""), "{page}: {applied}");
        alice.send(question).await.unwrap();
        let reply = answer(&mut alice).await;
        assert!(
            reply.ends_with(&format!("{expected}</message>")),
            "{page}: {reply}"
        );

        let removed = server.run_block(&blocks[1], &carriers.next().unwrap());
        assert!(removed.contains("status=\"applied\""), "{page}: {removed}");
        alice.send(question).await.unwrap();
        let refused = answer(&mut alice).await;
        assert_eq!(
            refused,
            format!("<error code=\"no-listener\" tag=\"{tag}\"></error>"),
            "{page}"
        );
    }
}
