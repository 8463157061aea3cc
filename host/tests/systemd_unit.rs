//! The systemd unit in `deploy/`, held to what docs/operations.md says of
//! it: systemd's own tools accept it (`systemd-analyze verify`) and rate its
//! exposure no worse than documented (`systemd-analyze security
//! --offline=true`); its command lines, run as written with the paths moved
//! into a temporary directory against `deploy/organism.toml`, refuse a
//! broken configuration before the start (ExecStartPre), serve a good one
//! (ExecStart), reload on `systemctl reload` (ExecReload) and stop cleanly
//! on SIGTERM; and the docs quote those command lines as they are.

mod support;

use agentserver::server::Config;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{workspace, BINARY};

/// Where the unit expects the configuration and the state.
const CONFIG_DIR: &str = "/etc/agentserver";
const DATA_DIR: &str = "/var/lib/agentserver";

/// The lines that open the exposure figure: systemd-analyze's last line of
/// output, quoted in docs/operations.md, and the unit's own comment.
const EXPOSURE_LINE: &str = "Overall exposure level for agentserver.service:";
const EXPOSURE_COMMENT: &str = "rates it ";

fn unit_path() -> PathBuf {
    workspace().join("deploy/agentserver.service")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The unit's settings, in order, as (section, key, value).
struct Unit {
    settings: Vec<(String, String, String)>,
}

impl Unit {
    fn load() -> Unit {
        let mut section = String::new();
        let mut settings = Vec::new();
        for line in read(&unit_path()).lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            assert!(
                !line.ends_with('\\'),
                "continued lines are not read here: {line}"
            );
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not a setting: {line}"));
            settings.push((section.clone(), key.to_owned(), value.to_owned()));
        }
        Unit { settings }
    }

    /// Every value of `key` in `[section]`.
    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.settings
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The one value of `key` in `[Service]`.
    fn service(&self, key: &str) -> &str {
        match self.all("Service", key).as_slice() {
            [value] => value,
            values => panic!("[Service] {key}= is set {} times", values.len()),
        }
    }

    /// A command line of `[Service]`, split into words (the unit quotes
    /// nothing, and this test splits no quotes). A `-` prefix (failure
    /// ignored) or `+` (run outside the sandbox) is refused.
    fn command(&self, key: &str) -> Vec<String> {
        let line = self.service(key);
        assert!(
            !line.contains(['"', '\'', '\\']),
            "{key}= must stay unquoted: {line}"
        );
        assert!(
            !line.starts_with(['-', '+', '@', ':', '!']),
            "{key}= must run as written, its failure counted: {line}"
        );
        line.split_whitespace().map(str::to_owned).collect()
    }
}

/// The value after `--config` in a command line.
fn config_argument(words: &[String]) -> &str {
    let at = words
        .iter()
        .position(|w| w == "--config")
        .unwrap_or_else(|| panic!("no --config in {words:?}"));
    words.get(at + 1).expect("a path after --config")
}

/// A temporary root standing in for `/`: the unit's and the
/// configuration's paths are moved into it, and the installed binary is
/// the one under test.
struct Root {
    dir: tempfile::TempDir,
    installed_binary: String,
}

impl Root {
    fn new(unit: &Unit) -> Root {
        let installed_binary = unit.command("ExecStart")[0].clone();
        let root = Root {
            dir: tempfile::tempdir().unwrap(),
            installed_binary,
        };
        std::fs::create_dir_all(root.path(CONFIG_DIR)).unwrap();
        std::fs::create_dir_all(root.path(DATA_DIR)).unwrap();
        root
    }

    /// Where an absolute path of the unit lives under this root.
    fn path(&self, absolute: &str) -> PathBuf {
        self.dir.path().join(absolute.trim_start_matches('/'))
    }

    /// `text` with the binary and the two directories moved here.
    fn rewrite(&self, text: &str) -> String {
        text.replace(&self.installed_binary, BINARY)
            .replace(CONFIG_DIR, self.path(CONFIG_DIR).to_str().unwrap())
            .replace(DATA_DIR, self.path(DATA_DIR).to_str().unwrap())
    }

    /// Runs a command line of the unit, rewritten.
    fn run(&self, words: &[String]) -> Output {
        let words: Vec<String> = words.iter().map(|w| self.rewrite(w)).collect();
        Command::new(&words[0])
            .args(&words[1..])
            .env("RUST_LOG", "info")
            .output()
            .unwrap_or_else(|e| panic!("{words:?}: {e}"))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What the configuration and the unit must agree on: one configuration
/// for `check` and `run`, its data directory the one the unit makes and
/// lets the server write, the users file inside it (a signed grant
/// rewrites it), no capability without a privileged port.
#[test]
fn the_unit_and_the_shipped_configuration_agree() {
    let unit = Unit::load();
    let start = unit.command("ExecStart");
    let check = unit.command("ExecStartPre");
    assert_eq!(start[1], "run", "{start:?}");
    assert_eq!(check[1], "check", "{check:?}");
    assert_eq!(check[0], start[0], "check and run are the same binary");
    assert_eq!(
        config_argument(&check),
        config_argument(&start),
        "check must judge the configuration run serves"
    );
    assert_eq!(
        config_argument(&start),
        format!("{CONFIG_DIR}/organism.toml")
    );
    let config = Config::load(&workspace().join("deploy/organism.toml")).unwrap();
    assert_eq!(config.data_dir, Path::new(DATA_DIR));
    assert_eq!(
        format!("/var/lib/{}", unit.service("StateDirectory")),
        DATA_DIR
    );
    assert!(
        unit.all("Service", "ReadWritePaths")
            .iter()
            .flat_map(|paths| paths.split_whitespace())
            .any(|path| path == DATA_DIR),
        "ReadWritePaths= must hold the data directory"
    );
    for (what, path) in [
        ("users", &config.users),
        ("compile_cache", &config.compile_cache),
        ("components_dir", &config.components_dir),
    ] {
        assert!(
            path.starts_with(DATA_DIR),
            "{what} {} must be in the data directory, the one place the unit lets the server write",
            path.display()
        );
    }
    assert_eq!(
        config.storage,
        agentserver::server::StorageConfig::Sqlite,
        "the shipped layout keeps its state in the data directory"
    );
    assert_eq!(unit.service("NoNewPrivileges"), "yes");
    assert_eq!(unit.service("ProtectSystem"), "strict");
    assert_eq!(unit.service("Restart"), "on-failure");
    assert_ne!(unit.service("User"), "root");
    if unit.service("CapabilityBoundingSet").is_empty() {
        assert!(
            config.listen.port() >= 1024,
            "port {} needs CAP_NET_BIND_SERVICE (docs/operations.md#port-443)",
            config.listen.port()
        );
    }
    // wasmtime writes machine code and then makes it executable, whether it
    // compiles a component or maps one from the compile cache.
    assert!(
        unit.all("Service", "MemoryDenyWriteExecute")
            .iter()
            .all(|value| !matches!(*value, "yes" | "true" | "on" | "1")),
        "MemoryDenyWriteExecute=yes stops every agent from loading"
    );
    // Without it SIGTERM is the stop signal: the graceful shutdown.
    assert!(unit.all("Service", "KillSignal").is_empty());
    let reload = unit.command("ExecReload");
    assert_eq!(reload[1..], ["-HUP", "$MAINPID"], "{reload:?}");
}

/// docs/operations.md quotes the unit's command lines and the exposure as
/// they are.
#[test]
fn the_operations_guide_quotes_the_unit_as_it_is() {
    let unit = Unit::load();
    let guide = read(&workspace().join("docs/operations.md"));
    for key in ["ExecStartPre", "ExecStart", "ExecReload"] {
        let line = format!("{key}={}", unit.service(key));
        assert!(guide.contains(&line), "docs/operations.md lacks `{line}`");
    }
    let documented = documented_exposure(&guide);
    let comment = read(&unit_path());
    let stated = comment
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .find_map(|line| line.split_once(EXPOSURE_COMMENT))
        .map(|(_, rest)| leading_number(rest))
        .expect("the unit's comment states its exposure");
    assert_eq!(
        stated, documented,
        "the unit's comment and docs/operations.md state the same exposure"
    );
}

/// The number in docs/operations.md's quote of systemd-analyze's last line.
fn documented_exposure(guide: &str) -> f64 {
    guide
        .lines()
        .find_map(|line| line.split_once(EXPOSURE_LINE))
        .map(|(_, rest)| leading_number(rest))
        .expect("docs/operations.md quotes the overall exposure level")
}

fn leading_number(text: &str) -> f64 {
    let number: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number
        .parse()
        .unwrap_or_else(|_| panic!("no number at the start of {text:?}"))
}

/// `systemd-analyze`, if this machine has it (`make sysdeps` installs it).
fn systemd_analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        eprintln!(
            "systemd-analyze is missing, so the unit is not judged by systemd: \
             `make sysdeps` installs it (apt-get install systemd)"
        );
    }
    found.then_some("systemd-analyze")
}

#[test]
fn systemd_accepts_the_unit_and_rates_it_as_documented() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let unit = Unit::load();
    let root = Root::new(&unit);
    // `verify` wants the binary to exist: the copy runs the one under test.
    let copy = root.dir.path().join("agentserver.service");
    std::fs::write(&copy, root.rewrite(&read(&unit_path()))).unwrap();
    let verify = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    // An unknown key or a bad value is only a warning (exit status 0).
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify: {verify:?}\n{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    let security = Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit_path())
        .output()
        .unwrap();
    let report = text(&security.stdout);
    assert!(
        security.status.success(),
        "{security:?}\n{}",
        text(&security.stderr)
    );
    let measured = report
        .lines()
        .find_map(|line| line.split_once(EXPOSURE_LINE))
        .map(|(_, rest)| leading_number(rest))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    let documented = documented_exposure(&read(&workspace().join("docs/operations.md")));
    assert!(
        measured <= documented,
        "exposure {measured} is above the documented {documented}: \
         harden the unit or document why\n{report}"
    );
}

/// The rewritten `deploy/organism.toml` and what it needs: the public key,
/// a users file.
fn install_organism(root: &Root) -> PathBuf {
    let shipped = read(&workspace().join("deploy/organism.toml"));
    let listen = "listen = \"127.0.0.1:8765\"";
    assert!(shipped.contains(listen), "deploy/organism.toml: {listen}");
    // A free port: the shipped one may be taken on this machine.
    let config = root.rewrite(&shipped.replace(listen, "listen = \"127.0.0.1:0\""));
    let path = root.path(CONFIG_DIR).join("organism.toml");
    std::fs::write(&path, config).unwrap();
    let keys = root.dir.path().join("offline");
    let made = Command::new(BINARY)
        .args(["identity", "generate", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    std::fs::copy(
        keys.join("identity.pub"),
        root.path(CONFIG_DIR).join("identity.pub"),
    )
    .unwrap();
    agentserver::auth::add_user(
        &root.path(DATA_DIR).join("users.toml"),
        "alice",
        &["echo".into()],
    )
    .unwrap();
    path
}

#[test]
fn the_start_check_refuses_a_broken_configuration_with_its_reason() {
    let unit = Unit::load();
    let root = Root::new(&unit);
    let config = install_organism(&root);
    let check = unit.command("ExecStartPre");

    let good = root.run(&check);
    assert!(
        good.status.success(),
        "{}{}",
        text(&good.stdout),
        text(&good.stderr)
    );
    assert_eq!(text(&good.stdout), format!("{}: ok\n", config.display()));

    // The public key gone: the start would fail, and says why.
    let key = root.path(CONFIG_DIR).join("identity.pub");
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let missing = root.run(&check);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    let stdout = text(&missing.stdout);
    assert!(
        stdout.starts_with("identity: ") && stdout.contains(key.to_str().unwrap()),
        "{stdout}"
    );
    assert_eq!(
        text(&missing.stderr),
        format!("agentserver: {}: 1 problem\n", config.display())
    );
    std::fs::write(&key, saved).unwrap();

    // A misspelt key: one line naming it.
    let good_text = read(&config);
    std::fs::write(&config, format!("listen_port = 443\n{good_text}")).unwrap();
    let misspelt = root.run(&check);
    assert_eq!(misspelt.status.code(), Some(1), "{misspelt:?}");
    assert_eq!(
        text(&misspelt.stdout),
        format!(
            "{}: `listen_port`: is not a configuration key\n",
            config.display()
        )
    );
    std::fs::write(&config, good_text).unwrap();

    // The users file gone: nobody could log in.
    std::fs::remove_file(root.path(DATA_DIR).join("users.toml")).unwrap();
    let no_users = root.run(&check);
    assert_eq!(no_users.status.code(), Some(1), "{no_users:?}");
    assert!(
        text(&no_users.stdout).starts_with("users: "),
        "{}",
        text(&no_users.stdout)
    );
}

/// Every metric `/metrics` exports, and every `kind` of its labels, is in
/// docs/operations.md; `/healthz` answers as documented.
fn metrics_are_documented(address: &str, fingerprint: &str) {
    let trust = agentserver::client::Trust::Fingerprint(fingerprint.to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let get = |path: &str| {
        runtime
            .block_on(agentserver::client::get(
                &format!("https://{address}{path}"),
                &trust,
            ))
            .unwrap()
    };
    assert_eq!(get("/healthz"), (200, "ok".to_owned()));
    let (status, metrics) = get("/metrics");
    assert_eq!(status, 200);
    let guide = read(&workspace().join("docs/operations.md"));
    let mut series_seen = 0;
    for line in metrics.lines() {
        let series = match line.strip_prefix("# TYPE ") {
            Some(typed) => typed,
            None if line.starts_with('#') => continue,
            None => line,
        };
        let name = series
            .split(['{', ' '])
            .next()
            .unwrap_or_default()
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            guide.contains(&format!("`{name}")),
            "docs/operations.md does not list the metric {name}"
        );
        series_seen += 1;
        if let Some((_, rest)) = series.split_once("kind=\"") {
            let kind = rest.split('"').next().unwrap_or_default();
            assert!(
                guide.contains(&format!("`{kind}`")),
                "docs/operations.md does not list {name}{{kind=\"{kind}\"}}"
            );
        }
    }
    assert!(series_seen > 10, "{metrics}");
}

/// Waits for a log line containing `wanted`, at most 20 s.
fn wait_for(lines: &mpsc::Receiver<String>, wanted: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(|line| line.contains(wanted)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no `{wanted}` in the log:\n{}", seen.join("\n")),
        }
    }
}

#[cfg(unix)]
#[test]
fn the_unit_serves_reloads_and_stops_as_systemd_would_run_it() {
    let unit = Unit::load();
    let root = Root::new(&unit);
    install_organism(&root);
    let start: Vec<String> = unit
        .command("ExecStart")
        .iter()
        .map(|w| root.rewrite(w))
        .collect();
    // `Type=notify`: systemd's socket, which hears READY=1 once the port
    // listens.
    let notify_path = root.path("/notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut server = Command::new(&start[0])
        .args(&start[1..])
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let address = first
        .trim_end()
        .strip_prefix("listening on wss://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let mut second = String::new();
    stdout.read_line(&mut second).unwrap();
    let fingerprint = second
        .trim_end()
        .strip_prefix("tls certificate sha256 ")
        .unwrap_or_else(|| panic!("{second}"))
        .to_owned();
    let (sender, lines) = mpsc::channel();
    let stderr = server.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut ready = [0u8; 256];
    let n = notify.recv(&mut ready).expect("READY=1 from the server");
    let ready = String::from_utf8_lossy(&ready[..n]).into_owned();
    assert!(
        ready.starts_with("READY=1\n") && ready.contains(&address),
        "{ready}"
    );
    assert_eq!(unit.service("Type"), "notify", "the server notifies");
    // The state went where the unit lets the server write.
    assert!(root
        .path(DATA_DIR)
        .join(agentserver::store::SQLITE_FILE)
        .is_file());
    assert!(root.path(DATA_DIR).join("tls/cert.pem").is_file());

    // `systemctl reload`: ExecReload with $MAINPID.
    let reload: Vec<String> = unit
        .command("ExecReload")
        .iter()
        .map(|w| w.replace("$MAINPID", &server.id().to_string()))
        .collect();
    let status = Command::new(&reload[0])
        .args(&reload[1..])
        .status()
        .unwrap();
    assert!(status.success(), "{reload:?}");
    wait_for(&lines, "tls certificate reloaded", &mut seen);
    wait_for(&lines, "users file reloaded", &mut seen);
    assert!(
        seen.iter().all(|line| !line.contains('\u{1b}')),
        "no colour codes off a terminal:\n{}",
        seen.join("\n")
    );

    metrics_are_documented(&address, &fingerprint);

    // `systemctl stop`: SIGTERM, a graceful exit with status 0, which
    // Restart=on-failure leaves stopped.
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    reader.join().unwrap();
    seen.extend(lines.try_iter());
    assert_eq!(exit.code(), Some(0), "{}", seen.join("\n"));
    assert!(
        seen.iter().any(|line| line.contains("shutting down")),
        "{}",
        seen.join("\n")
    );
    let mut stopping = [0u8; 64];
    let n = notify
        .recv(&mut stopping)
        .expect("STOPPING=1 from the server");
    assert_eq!(&stopping[..n], b"STOPPING=1");
}
