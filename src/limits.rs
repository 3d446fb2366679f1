//! The in-memory limits of moderation: the per-session message rate, the
//! throttle on wrong admin passwords, and the password check itself.
//!
//! None of this is stored: a restart forgets rate counters and failed
//! attempts, which costs an attacker a restart they cannot cause. Time is
//! passed in, so the rules are tested without sleeping.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// Wrong passwords one session may try before it is locked out.
pub const SESSION_FREE_FAILURES: u32 = 3;
/// Wrong passwords one host may try (all its sessions together) before
/// it is locked out; higher, since an office may share one address.
pub const HOST_FREE_FAILURES: u32 = 10;
/// The first lockout; each further failure doubles it.
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Failures are forgotten after this long without a new one.
pub const FORGET_FAILURES: Duration = Duration::from_secs(60 * 60);

/// The send times of one session's recent chat messages.
#[derive(Debug, Default)]
pub struct RateWindow(VecDeque<Instant>);

impl RateWindow {
    /// Records a message at `now` if fewer than `limit` were sent within
    /// the last `window`; returns whether it may be delivered. A limit of
    /// 0 allows everything. Refused messages are not recorded, so the
    /// window empties as soon as the sender pauses.
    pub fn try_send(
        &mut self,
        limit: u32,
        window: Duration,
        now: Instant,
    ) -> bool {
        if limit == 0 {
            return true;
        }
        while let Some(oldest) = self.0.front() {
            if now.saturating_duration_since(*oldest) < window {
                break;
            }
            self.0.pop_front();
        }
        if self.0.len() >= limit as usize {
            return false;
        }
        self.0.push_back(now);
        true
    }
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Counts wrong passwords per key and locks a key out for a while once it
/// has used its free attempts.
#[derive(Debug)]
pub struct Throttle<K> {
    free: u32,
    strikes: HashMap<K, Strikes>,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// A throttle that allows `free` wrong attempts before locking out.
    pub fn new(free: u32) -> Self {
        Throttle {
            free,
            strikes: HashMap::new(),
        }
    }

    /// How long `key` is still locked out, if it is.
    pub fn locked(&self, key: &K, now: Instant) -> Option<Duration> {
        let until = self.strikes.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Notes a wrong attempt. Once the free attempts are used up, every
    /// further one locks the key out, twice as long as the last time.
    pub fn fail(&mut self, key: &K, now: Instant) {
        self.strikes.retain(|_, s| {
            now.saturating_duration_since(s.last) < FORGET_FAILURES
                || s.locked_until.is_some_and(|until| until > now)
        });
        let strikes = self.strikes.entry(key.clone()).or_insert(Strikes {
            failures: 0,
            last: now,
            locked_until: None,
        });
        strikes.failures += 1;
        strikes.last = now;
        if strikes.failures >= self.free {
            let doublings = (strikes.failures - self.free).min(5);
            let lockout =
                (FIRST_LOCKOUT * 2u32.pow(doublings)).min(MAX_LOCKOUT);
            strikes.locked_until = Some(now + lockout);
        }
    }

    /// Forgets the failures of `key` (after a right password).
    pub fn clear(&mut self, key: &K) {
        self.strikes.remove(key);
    }
}

/// Reads the configured digest: 64 hex digits, either case.
pub fn parse_digest(hex: &str) -> Result<[u8; 32]> {
    let bad = || {
        Error::Config(
            "admin_password_sha256 must be 64 hex digits (a SHA-256 digest)"
                .into(),
        )
    };
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| bad())?;
    }
    Ok(digest)
}

/// Whether `password` hashes to `digest`, compared in constant time.
pub fn password_matches(digest: &[u8; 32], password: &str) -> bool {
    let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
    given.ct_eq(digest).into()
}

/// A duration for people, rounded up to the second: "1 h 2 min 3 s".
pub fn describe(duration: Duration) -> String {
    let mut secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("min", 60)] {
        if secs >= size {
            parts.push(format!("{} {unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 || parts.is_empty() {
        parts.push(format!("{secs} s"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// The rate window refuses the message over the limit and accepts
    /// again once the window has passed; 0 means no limit.
    #[test]
    fn the_rate_window_trips_and_recovers() {
        let start = Instant::now();
        let mut window = RateWindow::default();
        for _ in 0..3 {
            assert!(window.try_send(3, 2 * SEC, start));
        }
        assert!(!window.try_send(3, 2 * SEC, start + SEC));
        assert!(window.try_send(3, 2 * SEC, start + 2 * SEC));
        let mut free = RateWindow::default();
        assert!((0..100).all(|_| free.try_send(0, SEC, start)));
    }

    /// The free attempts pass, then the key is locked out for a time that
    /// doubles with each further failure, up to the maximum; a success
    /// clears it, and other keys are untouched.
    #[test]
    fn the_throttle_locks_out_after_the_free_attempts() {
        let now = Instant::now();
        let mut throttle = Throttle::new(3);
        throttle.fail(&"a", now);
        throttle.fail(&"a", now);
        assert_eq!(throttle.locked(&"a", now), None);
        throttle.fail(&"a", now);
        assert_eq!(throttle.locked(&"a", now), Some(FIRST_LOCKOUT));
        assert_eq!(throttle.locked(&"b", now), None);

        let later = now + FIRST_LOCKOUT;
        assert_eq!(throttle.locked(&"a", later), None);
        throttle.fail(&"a", later);
        assert_eq!(throttle.locked(&"a", later), Some(2 * FIRST_LOCKOUT));
        for _ in 0..20 {
            throttle.fail(&"a", later);
        }
        assert_eq!(throttle.locked(&"a", later), Some(MAX_LOCKOUT));
        throttle.clear(&"a");
        assert_eq!(throttle.locked(&"a", later), None);
    }

    /// Failures long past are forgotten.
    #[test]
    fn old_failures_are_forgotten() {
        let now = Instant::now();
        let mut throttle = Throttle::new(2);
        throttle.fail(&"a", now);
        let much_later = now + FORGET_FAILURES + SEC;
        throttle.fail(&"b", much_later);
        throttle.fail(&"a", much_later);
        assert_eq!(throttle.locked(&"a", much_later), None);
    }

    /// The digest must be 64 hex digits and matches only its password.
    #[test]
    fn the_password_digest_is_checked() {
        // SHA-256 of "secret".
        let hex =
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        let digest = parse_digest(&hex.to_uppercase()).unwrap();
        assert!(password_matches(&digest, "secret"));
        assert!(!password_matches(&digest, "Secret"));
        for bad in ["", "abc", &hex[1..], &format!("{}zz", &hex[2..])] {
            assert!(parse_digest(bad).is_err(), "{bad}");
        }
    }

    /// Durations read as people write them, rounded up.
    #[test]
    fn durations_are_described() {
        assert_eq!(describe(Duration::from_millis(1)), "1 s");
        assert_eq!(describe(Duration::ZERO), "0 s");
        assert_eq!(describe(Duration::from_secs(3723)), "1 h 2 min 3 s");
        assert_eq!(describe(Duration::from_secs(90_000)), "1 d 1 h");
    }
}
