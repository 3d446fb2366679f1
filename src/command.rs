//! Commands typed in the chat box, parsed into a typed [`Command`].
//!
//! A message is a command when, after leading blanks, it starts with `/`
//! directly followed by a letter or digit; a lone `/` or `/ text` is an
//! ordinary message. (Leading blanks are skipped so that a stray space
//! before `/auth` never broadcasts a password.) Command names and admin
//! subcommands ignore case. Arguments are words separated by blanks, or
//! `"quoted strings"` that may hold blanks; there are no escapes.
//!
//! This module only parses: whether the caller may run a command, and what
//! it does, is the room's business.

/// The longest ban, in seconds (ten years).
pub const MAX_BAN_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// The admin subcommands and their arguments, as shown to users.
pub const ADMIN_FORMS: [&str; 7] = [
    FORM_HELP,
    FORM_INFO,
    FORM_KICK,
    FORM_BAN,
    FORM_BANS,
    FORM_UNBAN,
    FORM_LOGOUT,
];

const FORM_HELP: &str = "/admin help";
const FORM_INFO: &str = "/admin info USER";
const FORM_KICK: &str = "/admin kick USER REASON";
const FORM_BAN: &str = "/admin ban USER REASON SECONDS";
const FORM_BANS: &str = "/admin bans";
const FORM_UNBAN: &str = "/admin unban HOST";
const FORM_LOGOUT: &str = "/admin logout";

/// A parsed chat-box command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/help`: the commands the caller may use.
    Help,
    /// `/auth PASSWORD`.
    Auth(String),
    /// `/auth` without exactly one argument.
    AuthUsage,
    /// `/admin ...`, or why its arguments were refused.
    Admin(Result<AdminCommand, AdminError>),
    /// A name that is no command, as typed.
    Unknown(String),
}

/// An administrator's subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    Help,
    Info {
        user: String,
    },
    Kick {
        user: String,
        reason: String,
    },
    Ban {
        user: String,
        reason: String,
        seconds: u64,
    },
    Bans,
    Unban {
        host: String,
    },
    Logout,
}

/// Why an `/admin` line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminError {
    /// No subcommand, or one that does not exist.
    Unknown,
    /// A known subcommand with the wrong arguments (or an unclosed
    /// quote); carries its right form.
    Usage(&'static str),
    /// The SECONDS of a ban is not a whole number from 1 to
    /// [`MAX_BAN_SECONDS`]; carries what was typed.
    InvalidTime(String),
}

/// Parses a chat message; `None` means it is an ordinary message.
pub fn parse(msg: &str) -> Option<Command> {
    let rest = msg.trim_start().strip_prefix('/')?;
    if !rest.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return None;
    }
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (name, args) = rest.split_at(end);
    if !name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Some(Command::Unknown(name.to_string()));
    }
    Some(match name.to_ascii_lowercase().as_str() {
        "help" => Command::Help,
        "auth" => match split_args(args).as_deref() {
            Some([password]) => Command::Auth(password.clone()),
            _ => Command::AuthUsage,
        },
        "admin" => Command::Admin(parse_admin(args)),
        _ => Command::Unknown(name.to_string()),
    })
}

/// Parses what follows `/admin`.
fn parse_admin(args: &str) -> Result<AdminCommand, AdminError> {
    let mut words = args.split_whitespace();
    let sub = words
        .next()
        .ok_or(AdminError::Unknown)?
        .to_ascii_lowercase();
    let form = match sub.as_str() {
        "help" => FORM_HELP,
        "info" => FORM_INFO,
        "kick" => FORM_KICK,
        "ban" => FORM_BAN,
        "bans" => FORM_BANS,
        "unban" => FORM_UNBAN,
        "logout" => FORM_LOGOUT,
        _ => return Err(AdminError::Unknown),
    };

    // Everything after the subcommand word, split into arguments.
    let after = args.trim_start()[sub.len()..].to_string();
    let args = split_args(&after).ok_or(AdminError::Usage(form))?;
    let mut args = args.into_iter();
    let usage = AdminError::Usage(form);
    let command = match (sub.as_str(), args.len()) {
        ("help", 0) => AdminCommand::Help,
        ("bans", 0) => AdminCommand::Bans,
        ("logout", 0) => AdminCommand::Logout,
        ("info", 1) => AdminCommand::Info {
            user: next(&mut args),
        },
        ("unban", 1) => AdminCommand::Unban {
            host: next(&mut args),
        },
        ("kick", 2) => AdminCommand::Kick {
            user: next(&mut args),
            reason: next(&mut args),
        },
        ("ban", 3) => {
            let user = next(&mut args);
            let reason = next(&mut args);
            let seconds = parse_seconds(&next(&mut args))?;
            AdminCommand::Ban {
                user,
                reason,
                seconds,
            }
        }
        _ => return Err(usage),
    };
    Ok(command)
}

/// The next argument; only called after the count was checked.
fn next(args: &mut std::vec::IntoIter<String>) -> String {
    args.next().unwrap_or_default()
}

/// A ban length: digits only, from 1 to [`MAX_BAN_SECONDS`].
fn parse_seconds(text: &str) -> Result<u64, AdminError> {
    let invalid = || AdminError::InvalidTime(text.to_string());
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match text.parse::<u64>() {
        Ok(seconds) if (1..=MAX_BAN_SECONDS).contains(&seconds) => Ok(seconds),
        _ => Err(invalid()),
    }
}

/// Splits arguments: blank-separated words, or `"quoted strings"` that
/// keep their blanks. `None` when a quote is never closed.
pub fn split_args(text: &str) -> Option<Vec<String>> {
    let mut args = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let close = quoted.find('"')?;
            args.push(quoted[..close].to_string());
            rest = &quoted[close + 1..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            args.push(rest[..end].to_string());
            rest = &rest[end..];
        }
        rest = rest.trim_start();
    }
    Some(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(line: &str) -> Result<AdminCommand, AdminError> {
        match parse(line) {
            Some(Command::Admin(result)) => result,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    /// Ordinary messages are not commands.
    #[test]
    fn ordinary_messages_are_not_commands() {
        for msg in ["hello", "/", "/ text", "  / x", "a /help", "//x", ""] {
            assert_eq!(parse(msg), None, "{msg:?}");
        }
    }

    /// Names ignore case and leading blanks; unknown names are kept.
    #[test]
    fn command_names_are_recognised() {
        assert_eq!(parse("/help"), Some(Command::Help));
        assert_eq!(parse("  /HELP extra"), Some(Command::Help));
        assert_eq!(parse("/nope 1"), Some(Command::Unknown("nope".into())));
        assert_eq!(parse("/he!p"), Some(Command::Unknown("he!p".into())));
    }

    /// /auth takes exactly one argument, which may be quoted.
    #[test]
    fn auth_takes_one_password() {
        assert_eq!(parse("/auth s3cret"), Some(Command::Auth("s3cret".into())));
        assert_eq!(
            parse(r#"/auth "two words""#),
            Some(Command::Auth("two words".into()))
        );
        for line in ["/auth", "/auth a b", r#"/auth "open"#] {
            assert_eq!(parse(line), Some(Command::AuthUsage), "{line}");
        }
    }

    /// Every admin subcommand parses with its arguments.
    #[test]
    fn admin_subcommands_parse() {
        assert_eq!(admin("/admin help"), Ok(AdminCommand::Help));
        assert_eq!(admin("/admin BANS"), Ok(AdminCommand::Bans));
        assert_eq!(admin("/admin logout"), Ok(AdminCommand::Logout));
        assert_eq!(
            admin("/admin info Bob"),
            Ok(AdminCommand::Info { user: "Bob".into() })
        );
        assert_eq!(
            admin(r#"/admin kick Bob "too loud""#),
            Ok(AdminCommand::Kick {
                user: "Bob".into(),
                reason: "too loud".into()
            })
        );
        assert_eq!(
            admin("/admin ban Bob spam 60"),
            Ok(AdminCommand::Ban {
                user: "Bob".into(),
                reason: "spam".into(),
                seconds: 60
            })
        );
        assert_eq!(
            admin("/admin unban 127.0.0.1"),
            Ok(AdminCommand::Unban {
                host: "127.0.0.1".into()
            })
        );
    }

    /// Wrong arity names the right form; unknown subcommands say so.
    #[test]
    fn admin_mistakes_are_explained() {
        assert_eq!(admin("/admin"), Err(AdminError::Unknown));
        assert_eq!(admin("/admin frobnicate"), Err(AdminError::Unknown));
        assert_eq!(admin("/admin kick Bob"), Err(AdminError::Usage(FORM_KICK)));
        assert_eq!(admin("/admin bans x"), Err(AdminError::Usage(FORM_BANS)));
        assert_eq!(
            admin(r#"/admin kick Bob "unclosed"#),
            Err(AdminError::Usage(FORM_KICK))
        );
        assert_eq!(admin("/admin unban"), Err(AdminError::Usage(FORM_UNBAN)));
    }

    /// Ban lengths must be whole seconds from 1 to ten years.
    #[test]
    fn ban_seconds_are_checked() {
        for bad in [
            "0",
            "-5",
            "1.5",
            "soon",
            "+3",
            "315360001",
            "99999999999999999999",
        ] {
            let line = format!("/admin ban Bob spam {bad}");
            assert_eq!(
                admin(&line),
                Err(AdminError::InvalidTime(bad.into())),
                "{line}"
            );
        }
    }

    /// Quoted strings keep blanks; empty quotes give an empty argument.
    #[test]
    fn arguments_split_on_blanks_and_quotes() {
        assert_eq!(
            split_args(r#" a  "b c" "" d"#),
            Some(vec!["a".into(), "b c".into(), "".into(), "d".into()])
        );
        assert_eq!(split_args(r#"a "b"#), None);
        assert_eq!(split_args("   "), Some(vec![]));
    }
}
