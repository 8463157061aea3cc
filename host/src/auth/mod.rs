//! Authentication: users, TOTP codes, rate limits.
//!
//! [`Authenticator::login`] is the only way to get an [`AuthenticatedUser`].
//! It checks, in this order and with the same answer for every failure:
//!
//! 1. the user name and the peer address are not rate-limited (5 failures a
//!    minute each, by default; past that, attempts are refused without
//!    checking the code);
//! 2. the code is the user's RFC 6238 code (SHA-1, 6 digits, 30 s steps, ±1
//!    step of skew), compared in constant time; an unknown user is checked
//!    against a throwaway secret, so that timing does not tell whether a
//!    user exists;
//! 3. the code's time step is later than the last one accepted for that
//!    user, so no code is ever accepted twice.
//!
//! The reason for a failure is kept for the server's own log
//! ([`AuthError`]); clients only ever learn "authentication failed".
//! Secrets and codes never reach a log or an error.

mod limiter;
mod shared;
mod steps;
mod users;

pub use limiter::{FailureLimiter, MAX_TRACKED_KEYS};
pub use shared::{adopt_shared_users, publish_users, SharedUsers};
pub use steps::{LocalSteps, SharedFailures, StepMemory};
pub use users::{
    add_user, decode_base32, encode_base32, remove_user, set_allow, valid_user_name, Allow,
    UserEntry, Users, UsersError, SECRET_BYTES,
};

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use totp_rs::{Algorithm, Totp};

/// TOTP time step, seconds (RFC 6238 default).
pub const TOTP_STEP_SECONDS: u64 = 30;
/// Steps of clock skew accepted either side of now.
pub const TOTP_SKEW_STEPS: u16 = 1;
/// Digits in a code.
pub const TOTP_DIGITS: u8 = 6;

/// Limits of the login path, each with its default.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Failures allowed per user name, and per peer address, within
    /// `failure_window`. Default 5.
    pub max_failures: usize,
    /// The window failures are counted in. Default 60 s.
    pub failure_window: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            max_failures: 5,
            failure_window: Duration::from_secs(60),
        }
    }
}

/// Why a login failed. Only for the server's log: every variant reaches the
/// client as the same "authentication failed".
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No such user.
    #[error("unknown user")]
    UnknownUser,
    /// The code is not the user's code for now (±1 step).
    #[error("wrong or expired code")]
    WrongCode,
    /// Whether the code's time step was used cannot be checked (the
    /// shared store is unreachable): refused rather than risk a replay.
    #[error("the used codes cannot be checked now")]
    Storage,
    /// The code's time step was already used.
    #[error("code already used")]
    ReplayedCode,
    /// Too many recent failures for this user or address.
    #[error("too many failures; try again later")]
    RateLimited,
}

/// A user who has just proved who they are. Only [`Authenticator::login`]
/// makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    name: String,
    allow: Allow,
}

impl AuthenticatedUser {
    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the user may send.
    pub fn allow(&self) -> &Allow {
        &self.allow
    }
}

/// Checks logins against the user directory.
#[derive(Debug)]
pub struct Authenticator {
    users: RwLock<Arc<Users>>,
    steps: Arc<dyn StepMemory>,
    /// Failures the nodes of a cluster count together, besides this
    /// process's own counts.
    shared_failures: Option<Arc<dyn SharedFailures>>,
    max_failures: usize,
    failure_window: Duration,
    by_user: FailureLimiter,
    by_peer: FailureLimiter,
    decoy: Totp,
}

fn totp(secret: &[u8]) -> Totp {
    totp_rs::Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(TOTP_DIGITS)
        .with_skew(TOTP_SKEW_STEPS)
        .with_step_duration(TOTP_STEP_SECONDS)
        .with_secret(secret.to_vec().into_boxed_slice())
        .build_noncompliant()
}

impl Authenticator {
    /// An authenticator for `users`, remembering used time steps in this
    /// process.
    pub fn new(users: Users, config: &AuthConfig) -> Self {
        Self::with_steps(users, config, Arc::new(LocalSteps::default()))
    }

    /// An authenticator for `users` remembering used time steps in `steps`
    /// (shared by the nodes of a cluster).
    pub fn with_steps(users: Users, config: &AuthConfig, steps: Arc<dyn StepMemory>) -> Self {
        let mut decoy_secret = [0u8; SECRET_BYTES];
        // A failure here only makes the decoy secret all zeros, which is as
        // good a decoy as any.
        let _ = getrandom::fill(&mut decoy_secret);
        Authenticator {
            users: RwLock::new(Arc::new(users)),
            steps,
            shared_failures: None,
            max_failures: config.max_failures.max(1),
            failure_window: config.failure_window,
            by_user: FailureLimiter::new(config.max_failures, config.failure_window),
            by_peer: FailureLimiter::new(config.max_failures, config.failure_window),
            decoy: totp(&decoy_secret),
        }
    }

    /// Also counts failures in `shared`, which the nodes of a cluster see
    /// together: a user or address past the limit on any node is refused
    /// on every node.
    pub fn with_shared_failures(mut self, shared: Arc<dyn SharedFailures>) -> Self {
        self.shared_failures = Some(shared);
        self
    }

    /// Whether the nodes together have counted `key` past the limit (an
    /// unreachable store counts as no).
    fn shared_blocked(&self, key: &str) -> bool {
        self.shared_failures.as_ref().is_some_and(|shared| {
            shared
                .failures(key)
                .is_ok_and(|count| count >= self.max_failures as u64)
        })
    }

    /// Counts a failure for `key` with the other nodes.
    fn record_shared_failure(&self, key: &str) {
        if let Some(shared) = &self.shared_failures {
            let window = self.failure_window.as_secs().max(1);
            if let Err(error) = shared.record_failure(key, window) {
                tracing::warn!(%error, "a login failure could not be counted with the other nodes");
            }
        }
    }

    /// Replaces the user directory (after `users.toml` changed or a grant).
    pub fn set_users(&self, users: Users) {
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
    }

    /// The user directory now.
    pub fn users(&self) -> Arc<Users> {
        Arc::clone(&self.users.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Checks `code` for `user`, connecting from `peer`, at `now`.
    pub fn login(
        &self,
        user: &str,
        code: &str,
        peer: IpAddr,
        now: SystemTime,
    ) -> Result<AuthenticatedUser, AuthError> {
        let instant = Instant::now();
        let peer_key = peer.to_string();
        if self.by_user.is_blocked(user, instant)
            || self.by_peer.is_blocked(&peer_key, instant)
            || self.shared_blocked(&format!("user:{user}"))
            || self.shared_blocked(&format!("peer:{peer_key}"))
        {
            return Err(AuthError::RateLimited);
        }
        let result = self.check(user, code, now);
        if result.is_err() {
            self.record_shared_failure(&format!("user:{user}"));
            self.record_shared_failure(&format!("peer:{peer_key}"));
            if self.by_user.record_failure(user, instant) {
                tracing::warn!(
                    user,
                    %peer,
                    "authentication failures: too many for this user; its logins are refused for a while"
                );
            }
            if self.by_peer.record_failure(&peer_key, instant) {
                tracing::warn!(
                    user,
                    %peer,
                    "authentication failures: too many from this address; its logins are refused for a while"
                );
            }
        }
        result
    }

    fn check(
        &self,
        user: &str,
        code: &str,
        now: SystemTime,
    ) -> Result<AuthenticatedUser, AuthError> {
        let seconds = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let users = self.users();
        let entry = users.get(user);
        // The same work for a user who does not exist.
        let step = match entry {
            Some(entry) => totp(&entry.secret).check(code, seconds),
            None => self.decoy.check(code, seconds),
        };
        let (Some(entry), Some(step)) = (entry, step) else {
            return Err(if entry.is_none() {
                AuthError::UnknownUser
            } else {
                AuthError::WrongCode
            });
        };
        match self.steps.claim_step(user, step) {
            Ok(true) => {}
            Ok(false) => return Err(AuthError::ReplayedCode),
            Err(error) => {
                tracing::warn!(user, %error, "login refused: the used TOTP steps cannot be checked");
                return Err(AuthError::Storage);
            }
        }
        Ok(AuthenticatedUser {
            name: user.to_owned(),
            allow: entry.allow.clone(),
        })
    }
}

/// The code for `secret` at `time`: what an authenticator app shows. For
/// clients and tests.
pub fn totp_code(secret: &[u8], time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    totp(secret).generate(seconds).to_string()
}

/// The `otpauth://` URI an authenticator app scans for `user`.
pub fn otpauth_uri(user: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/AgentServer:{user}?secret={}&issuer=AgentServer",
        encode_base32(secret)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn authenticator() -> (Authenticator, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let secret = add_user(&path, "alice", &["echo".into()]).unwrap();
        let users = Users::load(&path).unwrap();
        (Authenticator::new(users, &AuthConfig::default()), secret)
    }

    #[test]
    fn rfc6238_sha1_test_vector() {
        // RFC 6238, appendix B: secret "12345678901234567890", T = 59 s.
        let time = UNIX_EPOCH + Duration::from_secs(59);
        assert_eq!(totp_code(b"12345678901234567890", time), "287082");
        let time = UNIX_EPOCH + Duration::from_secs(1_111_111_109);
        assert_eq!(totp_code(b"12345678901234567890", time), "081804");
    }

    #[test]
    fn a_code_is_accepted_once_then_refused_as_replayed() {
        let (auth, secret) = authenticator();
        let now = SystemTime::now();
        let code = totp_code(&secret, now);
        let user = auth.login("alice", &code, PEER, now).unwrap();
        assert_eq!(user.name(), "alice");
        assert_eq!(
            auth.login("alice", &code, PEER, now),
            Err(AuthError::ReplayedCode)
        );
        let next = now + Duration::from_secs(TOTP_STEP_SECONDS);
        let code = totp_code(&secret, next);
        assert!(
            auth.login("alice", &code, PEER, now).is_ok(),
            "next step within skew"
        );
    }

    #[test]
    fn wrong_expired_and_unknown_all_fail() {
        let (auth, secret) = authenticator();
        let now = SystemTime::now();
        let old = totp_code(&secret, now - Duration::from_secs(3 * TOTP_STEP_SECONDS));
        assert_eq!(
            auth.login("alice", &old, PEER, now),
            Err(AuthError::WrongCode)
        );
        assert_eq!(
            auth.login("alice", "12345", PEER, now),
            Err(AuthError::WrongCode)
        );
        let code = totp_code(&secret, now);
        assert_eq!(
            auth.login("mallory", &code, PEER, now),
            Err(AuthError::UnknownUser)
        );
    }

    #[test]
    fn failures_are_rate_limited_per_user_and_per_peer() {
        let (auth, secret) = authenticator();
        let now = SystemTime::now();
        let other_peer = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        for _ in 0..5 {
            assert_eq!(
                auth.login("alice", "000000", other_peer, now).unwrap_err(),
                AuthError::WrongCode
            );
        }
        let code = totp_code(&secret, now);
        assert_eq!(
            auth.login("alice", &code, PEER, now),
            Err(AuthError::RateLimited)
        );
        // The peer that failed is blocked for every user name too.
        assert_eq!(
            auth.login("bob", "000000", other_peer, now),
            Err(AuthError::RateLimited)
        );
    }
}
