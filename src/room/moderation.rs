//! Moderation: chat-box commands, administrators, kicks, bans, the rate
//! limit and the per-host session cap.
//!
//! Replies go to the caller alone as system_msg events; the words classic
//! clients look for ("invalid command", "unknown user", ...) are in them.
//! Bans live in the store (see [`crate::store::BanRecord`]); an expired
//! one is ignored wherever it is met and removed by the idle sweep. The
//! per-host count is derived from the roster every time, so no way of
//! ending a session can leak a slot, and a restart counts what it loaded.
//!
//! A ban ends every live session of the banned host, not only the named
//! user's, since the ban refuses the host anyway. Banning a user who
//! shares the administrator's own address is refused ("yourself"): it
//! would end the administrator's session too and lock them out.

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{cut, Room, Roster, REASON_MAX_CHARS};
use crate::command::{AdminCommand, AdminError, Command, ADMIN_FORMS};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::event::{unix_ms, Event, EventKind};
use crate::limits::{
    describe, parse_digest, password_matches, Throttle, HOST_FREE_FAILURES,
    SESSION_FREE_FAILURES,
};
use crate::mailbox::{Letter, Recipients};
use crate::store::{
    encode, head_key, BanRecord, ClientRecord, SessionId, StoredClient,
};

/// The moderation settings and the in-memory password throttles.
pub(super) struct Moderation {
    digest: Option<[u8; 32]>,
    rate_messages: u32,
    rate_window: Duration,
    max_per_host: u32,
    throttles: Mutex<Throttles>,
}

struct Throttles {
    sessions: Throttle<SessionId>,
    hosts: Throttle<String>,
}

impl Moderation {
    /// Reads the settings; a malformed admin digest is a config error.
    pub(super) fn new(settings: &Settings) -> Result<Moderation> {
        let digest = match &settings.admin_password_sha256 {
            Some(hex) if !hex.0.trim().is_empty() => {
                Some(parse_digest(&hex.0)?)
            }
            _ => None,
        };
        Ok(Moderation {
            digest,
            rate_messages: settings.rate_limit_messages,
            rate_window: settings.rate_limit_window(),
            max_per_host: settings.max_sessions_per_host,
            throttles: Mutex::new(Throttles {
                sessions: Throttle::new(SESSION_FREE_FAILURES),
                hosts: Throttle::new(HOST_FREE_FAILURES),
            }),
        })
    }

    fn throttles(&self) -> MutexGuard<'_, Throttles> {
        // Throttle updates are map operations that leave it consistent.
        self.throttles.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A user in the room, as an administrator sees them.
struct Member {
    session: SessionId,
    record: ClientRecord,
    idle: Duration,
}

impl Room {
    /// Refuses a login from a banned host, with the time remaining.
    pub(super) fn check_ban(&self, host: &str) -> Result<()> {
        refuse_banned(self.active_ban(host)?)
    }

    /// The ban of `host` if it still holds; an expired one is removed.
    fn active_ban(&self, host: &str) -> Result<Option<BanRecord>> {
        let Some(ban) = self.store.ban(host)? else {
            return Ok(None);
        };
        if ban.until_ms > unix_ms() {
            return Ok(Some(ban));
        }
        self.store.remove_ban_if(host, &ban)?;
        Ok(None)
    }

    /// The bans that still hold, by host; expired ones are removed.
    pub fn bans(&self) -> Result<Vec<(String, BanRecord)>> {
        let now = unix_ms();
        let mut active = Vec::new();
        for (host, ban) in self.store.bans()? {
            if ban.until_ms > now {
                active.push((host, ban));
            } else {
                self.store.remove_ban_if(&host, &ban)?;
            }
        }
        Ok(active)
    }

    /// Removes every expired ban; part of the idle sweep.
    pub(super) fn purge_expired_bans(&self) -> Result<()> {
        let before = self.store.bans()?.len();
        let after = self.bans()?.len();
        if before > after {
            tracing::info!(removed = before - after, "expired bans removed");
        }
        Ok(())
    }

    /// Live sessions `host` holds: the count the cap is checked against.
    pub fn host_sessions(&self, host: &str) -> usize {
        count_host(&self.roster(), host)
    }

    /// Refuses one more session for a host that is at its cap. The live
    /// session `replacing`, which leaves once the new one joined, does not
    /// count.
    pub(super) fn check_host_cap(
        &self,
        roster: &Roster,
        host: &str,
        replacing: Option<SessionId>,
    ) -> Result<()> {
        let max = self.moderation.max_per_host;
        let replaced = replacing
            .and_then(|session| roster.clients.get(&session))
            .filter(|c| c.record.ended.is_none() && c.record.host == host);
        let held = count_host(roster, host) - usize::from(replaced.is_some());
        if max > 0 && held >= max as usize {
            return Err(Error::TooManyConnections(max));
        }
        Ok(())
    }

    /// Marks a stored session joined, unless its host was banned while
    /// it was being stored: a ban ends only joined sessions, so this
    /// check (under the roster lock) is what closes that race.
    pub(super) fn complete_join(
        &self,
        session: SessionId,
        host: &str,
    ) -> Result<()> {
        let mut roster = self.roster();
        // Only a read here: no store write under the roster lock.
        let ban = self.store.ban(host)?.filter(|b| b.until_ms > unix_ms());
        refuse_banned(ban)?;
        if let Some(client) = roster.clients.get_mut(&session) {
            client.joined = true;
        }
        Ok(())
    }

    /// Undoes a join that failed halfway; nobody saw it join.
    pub(super) async fn abandon_join(&self, session: SessionId) {
        self.forget(session);
        let removed = {
            let _writing = self.store.writing();
            self.store.clients.remove(head_key(session))
        };
        if let Err(e) = removed {
            tracing::error!(error = %e, "could not remove a failed join");
        }
        if let Err(e) = self.office.delete(session).await {
            tracing::error!(error = %e, "could not remove a failed join");
        }
    }

    /// Counts a chat message against the sender's rate limit; returns
    /// whether it may be delivered.
    pub(super) fn within_rate(&self, session: SessionId) -> bool {
        let limit = self.moderation.rate_messages;
        let window = self.moderation.rate_window;
        let mut roster = self.roster();
        roster
            .clients
            .get_mut(&session)
            .is_none_or(|c| c.sent.try_send(limit, window, Instant::now()))
    }

    /// Tells a sender over the rate limit that the message was dropped,
    /// and fails with [`Error::TooFast`] so the send is not answered "ok".
    pub(super) async fn refuse_too_fast(
        &self,
        session: SessionId,
    ) -> Result<()> {
        tracing::warn!(session, "message over the rate limit dropped");
        let text = format!(
            "You are sending too fast: at most {} messages per {}. \
             That message was not delivered; slow down.",
            self.moderation.rate_messages,
            describe(self.moderation.rate_window)
        );
        self.tell(session, text).await?;
        Err(Error::TooFast)
    }

    /// Runs a command typed by `session`; commands are never broadcast.
    pub(super) async fn run_command(
        &self,
        session: SessionId,
        command: Command,
    ) -> Result<()> {
        let caller = self.member(session).ok_or(Error::BadSession)?;
        match command {
            Command::Help => self.tell(session, help_text(&caller)).await,
            Command::Auth(password) => self.auth(&caller, &password).await,
            Command::AuthUsage => {
                let text = "Usage: /auth PASSWORD (quote a password that \
                            has spaces).";
                self.tell(session, text.into()).await
            }
            Command::Admin(_) if !caller.record.admin => {
                let text = "Invalid command: /admin is for administrators. \
                            Type /help for the commands you may use.";
                self.tell(session, text.into()).await
            }
            Command::Admin(Ok(admin)) => self.admin(&caller, admin).await,
            Command::Admin(Err(error)) => {
                self.tell(session, admin_error_text(&error)).await
            }
            Command::Unknown(name) => {
                let text = format!(
                    "Invalid command: /{}. Type /help for the commands you \
                     may use.",
                    cut(&name, 32)
                );
                self.tell(session, text).await
            }
        }
    }

    /// Sends a system_msg to one session.
    async fn tell(&self, session: SessionId, text: String) -> Result<()> {
        let event = Event::now(EventKind::SystemMsg { text });
        self.office.send(session, event).await
    }

    /// A joined, active session with its record and idle time.
    fn member(&self, session: SessionId) -> Option<Member> {
        let roster = self.roster();
        let client = roster.clients.get(&session)?;
        (client.joined && client.record.ended.is_none()).then(|| Member {
            session,
            record: client.record.clone(),
            idle: client.last_action.elapsed(),
        })
    }

    /// The member with this nick, ignoring case.
    fn member_named(&self, nick: &str) -> Option<Member> {
        let session = *self.roster().by_nick.get(&nick.to_ascii_lowercase())?;
        self.member(session)
    }

    /// `/auth PASSWORD`: makes the caller an administrator when the
    /// password is right. Wrong attempts are counted per session and per
    /// host; over the allowance they are refused for a while.
    async fn auth(&self, caller: &Member, password: &str) -> Result<()> {
        let session = caller.session;
        let host = caller.record.host.clone();
        let Some(digest) = &self.moderation.digest else {
            let text = "No admin password is configured on this server, \
                        so nobody can authenticate.";
            return self.tell(session, text.into()).await;
        };
        if caller.record.admin {
            let text = "You are already authenticated as an administrator.";
            return self.tell(session, text.into()).await;
        }

        // Refuse without checking while the session or host is locked out.
        let now = Instant::now();
        let locked = {
            let throttles = self.moderation.throttles();
            let by_session = throttles.sessions.locked(&session, now);
            by_session.max(throttles.hosts.locked(&host, now))
        };
        if let Some(wait) = locked {
            tracing::warn!(%host, "admin password attempt refused: locked out");
            let text = format!(
                "Too many wrong password attempts; try again in {}.",
                describe(wait)
            );
            return self.tell(session, text).await;
        }

        if !password_matches(digest, password) {
            {
                let mut throttles = self.moderation.throttles();
                throttles.sessions.fail(&session, now);
                throttles.hosts.fail(&host, now);
            }
            let nick = &caller.record.nick;
            tracing::warn!(%nick, %host, "wrong admin password");
            return self.tell(session, "Wrong password.".into()).await;
        }
        {
            let mut throttles = self.moderation.throttles();
            throttles.sessions.clear(&session);
            throttles.hosts.clear(&host);
        }
        self.set_admin(caller, true).await
    }

    /// Grants or drops admin rights, stores that, and tells everyone.
    async fn set_admin(&self, caller: &Member, admin: bool) -> Result<()> {
        let nick = caller.record.nick.clone();
        if !self.update_record(caller.session, |r| r.admin = admin)? {
            return Err(Error::BadSession);
        }
        tracing::info!(%nick, admin, "admin rights changed");
        let (to_everyone, note) = if admin {
            let note = "You are now authenticated as an administrator. \
                        Type /admin help for the commands.";
            (EventKind::AdminLoggedIn { nick }, note)
        } else {
            let note = "You are no longer an administrator.";
            (EventKind::AdminLoggedOut { nick }, note)
        };
        let letters = vec![
            Letter {
                to: Recipients::One(caller.session),
                event: Event::now(EventKind::SystemMsg { text: note.into() }),
            },
            Letter {
                to: Recipients::AllExcept(Vec::new()),
                event: Event::now(to_everyone),
            },
        ];
        // The post waits for the disk, which covers the record too.
        self.office.post(letters).await
    }

    /// Changes an active session's record in memory and in the store,
    /// both under the roster lock, so a concurrent end of the session
    /// can never be overwritten by an older copy. Returns false when the
    /// session is not active. The caller makes it durable.
    fn update_record(
        &self,
        session: SessionId,
        change: impl FnOnce(&mut ClientRecord),
    ) -> Result<bool> {
        let mut roster = self.roster();
        let Some(client) = roster.clients.get_mut(&session) else {
            return Ok(false);
        };
        if client.record.ended.is_some() {
            return Ok(false);
        }
        let mut record = client.record.clone();
        change(&mut record);
        let value = encode(&StoredClient::V1(record.clone()))?;
        {
            let _writing = self.store.writing();
            self.store.clients.insert(head_key(session), value)?;
        }
        client.record = record;
        Ok(true)
    }

    /// Runs an administrator's subcommand.
    async fn admin(
        &self,
        caller: &Member,
        command: AdminCommand,
    ) -> Result<()> {
        let session = caller.session;
        match command {
            AdminCommand::Help => {
                let text =
                    format!("Admin commands: {}.", ADMIN_FORMS.join(", "));
                self.tell(session, text).await
            }
            AdminCommand::Info { user } => {
                let text = match self.member_named(&user) {
                    Some(member) => info_text(&member),
                    None => unknown_user(&user),
                };
                self.tell(session, text).await
            }
            AdminCommand::Kick { user, reason } => {
                self.kick(caller, &user, &reason).await
            }
            AdminCommand::Ban {
                user,
                reason,
                seconds,
            } => self.ban(caller, &user, &reason, seconds).await,
            AdminCommand::Bans => {
                let text = bans_text(&self.bans()?);
                self.tell(session, text).await
            }
            AdminCommand::Unban { host } => self.unban(caller, &host).await,
            AdminCommand::Logout => self.set_admin(caller, false).await,
        }
    }

    /// `/admin kick USER REASON`: USER leaves with "kicked: REASON" and
    /// learns why on their next wait.
    async fn kick(
        &self,
        caller: &Member,
        user: &str,
        reason: &str,
    ) -> Result<()> {
        let Some(target) = self.member_named(user) else {
            return self.tell(caller.session, unknown_user(user)).await;
        };
        if target.session == caller.session {
            let text = "You cannot kick yourself.";
            return self.tell(caller.session, text.into()).await;
        }
        let notice =
            format!("You were kicked by {}: {}", caller.record.nick, reason);
        let left = format!("kicked: {reason}");
        if !self.end_session(target.session, &left, &notice).await? {
            return self.tell(caller.session, unknown_user(user)).await;
        }
        tracing::info!(
            by = %caller.record.nick, nick = %target.record.nick, %reason,
            "kicked"
        );
        let text = format!("Kicked {}.", target.record.nick);
        self.tell(caller.session, text).await
    }

    /// `/admin ban USER REASON SECONDS`: stores the ban of USER's host,
    /// then ends every live session of that host.
    async fn ban(
        &self,
        caller: &Member,
        user: &str,
        reason: &str,
        seconds: u64,
    ) -> Result<()> {
        let Some(target) = self.member_named(user) else {
            return self.tell(caller.session, unknown_user(user)).await;
        };
        let host = target.record.host.clone();
        if target.session == caller.session || host == caller.record.host {
            let text = format!(
                "You cannot ban yourself: {} shares your address {}. Use \
                 /admin kick instead.",
                target.record.nick, host
            );
            return self.tell(caller.session, text).await;
        }

        // The ban is on disk before anyone is told or ended.
        let length = Duration::from_secs(seconds);
        let ban = BanRecord {
            until_ms: unix_ms().saturating_add(seconds.saturating_mul(1000)),
            reason: cut(reason, 256),
            nick: target.record.nick.clone(),
            by: caller.record.nick.clone(),
        };
        self.store.put_ban(&host, &ban)?;
        self.store.commit().await?;
        tracing::info!(
            by = %caller.record.nick, nick = %ban.nick, %host, seconds,
            "banned"
        );

        let ended = self.end_host(&host, &ban, length).await?;
        let text = format!(
            "Banned {host} (last nick {}) for {}: {}. Sessions ended: {ended}.",
            ban.nick,
            describe(length),
            ban.reason
        );
        self.tell(caller.session, text).await
    }

    /// Ends every joined, live session of a banned host.
    async fn end_host(
        &self,
        host: &str,
        ban: &BanRecord,
        length: Duration,
    ) -> Result<usize> {
        let sessions: Vec<SessionId> = {
            let roster = self.roster();
            roster
                .clients
                .iter()
                .filter(|(_, c)| c.joined && c.record.ended.is_none())
                .filter(|(_, c)| c.record.host == host)
                .map(|(session, _)| *session)
                .collect()
        };
        let left = cut(&format!("banned: {}", ban.reason), REASON_MAX_CHARS);
        let notice = format!(
            "You were banned by {} for {}: {}",
            ban.by,
            describe(length),
            ban.reason
        );
        let mut ended = 0;
        for session in sessions {
            if self.end_session(session, &left, &notice).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// `/admin unban HOST`.
    async fn unban(&self, caller: &Member, host: &str) -> Result<()> {
        let host = canonical_host(host);
        let text = if self.active_ban(&host)?.is_some() {
            self.store.remove_ban(&host)?;
            self.store.commit().await?;
            tracing::info!(by = %caller.record.nick, %host, "unbanned");
            format!("Removed ban on {host}.")
        } else {
            format!("No ban on {host}: not found.")
        };
        self.tell(caller.session, text).await
    }
}

/// [`Error::Banned`] with the time remaining when there is a ban.
fn refuse_banned(ban: Option<BanRecord>) -> Result<()> {
    match ban {
        Some(ban) => Err(Error::Banned {
            remaining_secs: ban
                .until_ms
                .saturating_sub(unix_ms())
                .div_ceil(1000),
        }),
        None => Ok(()),
    }
}

/// Sessions of `host` in the roster that have not ended (a join in
/// progress counts, so two racing joins cannot both take the last slot).
fn count_host(roster: &Roster, host: &str) -> usize {
    roster
        .clients
        .values()
        .filter(|c| c.record.ended.is_none() && c.record.host == host)
        .count()
}

/// An address written the way the server records it ("::1" for any
/// spelling of it); anything else is kept as typed.
fn canonical_host(host: &str) -> String {
    host.parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .unwrap_or_else(|_| host.to_string())
}

fn help_text(caller: &Member) -> String {
    let mut text = String::from(
        "Commands: /help (this list); /auth PASSWORD (become an \
         administrator).",
    );
    if caller.record.admin {
        text.push_str(" As an administrator: ");
        text.push_str(&ADMIN_FORMS.join(", "));
        text.push('.');
    }
    text
}

fn admin_error_text(error: &AdminError) -> String {
    match error {
        AdminError::Unknown => format!(
            "Unknown admin command. The admin commands are: {}.",
            ADMIN_FORMS.join(", ")
        ),
        AdminError::Usage(form) => {
            format!("Unknown admin command form; the right form is: {form}")
        }
        AdminError::InvalidTime(typed) => format!(
            "Invalid time \"{}\": SECONDS must be a whole number from 1 to \
             {}.",
            cut(typed, 32),
            crate::command::MAX_BAN_SECONDS
        ),
    }
}

fn unknown_user(nick: &str) -> String {
    format!("Unknown user {}: not found in the room.", cut(nick, 32))
}

fn info_text(member: &Member) -> String {
    let last_ms = unix_ms().saturating_sub(member.idle.as_millis() as u64);
    format!(
        "{}: host {}, last action {} ago (unix ms {}), administrator: {}.",
        member.record.nick,
        member.record.host,
        describe(member.idle),
        last_ms,
        if member.record.admin { "yes" } else { "no" }
    )
}

fn bans_text(bans: &[(String, BanRecord)]) -> String {
    if bans.is_empty() {
        return "There are no bans.".into();
    }
    let now = unix_ms();
    let mut text = format!("Bans ({}):", bans.len());
    for (host, ban) in bans {
        let left = Duration::from_millis(ban.until_ms.saturating_sub(now));
        text.push_str(&format!(
            "\n{host}: last nick {}, reason \"{}\", {} remaining",
            ban.nick,
            ban.reason,
            describe(left)
        ));
    }
    text
}
