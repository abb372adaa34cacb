//! Users at the proxy: who a new connection is, `AUTH` against the pool's `users:`, the
//! per-command check's replies, and the `ACL` command, answered from the pool's users in
//! Redis 7.0's formats.
//!
//! - `ACL WHOAMI`, `ACL CAT [category]`, `ACL USERS`, `ACL HELP`: for anyone allowed to run them.
//! - `ACL LIST`, `ACL GETUSER`: for an admin user (rules that allow every `@admin` command,
//!   or all commands); others get `NOPERM`. Passwords are shown only as `#<sha256>`, as
//!   Redis shows them. In a pool without users they are refused (there is nothing to list
//!   but the backend password's stand-in).
//! - Every other subcommand (`SETUSER`, `DELUSER`, `LOAD`, `SAVE`, `LOG`, ...) is refused:
//!   users are defined in rampart's configuration, and the backends' users are not the
//!   clients' business.

use std::sync::Arc;

use bytes::BytesMut;
use rampart_commands::acl::{category_commands, hex, Denied, CATEGORIES};
use rampart_commands::Command;
use rampart_config::{Pool, User};
use resp::encode;

use crate::session::local::{Answer, Local};
use crate::text::sanitize;

/// Redis' reply to a wrong user name or password.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Who a new connection of `conf`'s pool is: whether it is authenticated, and as which user.
/// Without `users:`, twemproxy's rule (authenticated unless `redis_auth` is set, no user).
/// With `users:`, the `default` user if it is listed, `on` and `nopass`; otherwise nobody
/// until `AUTH`.
pub fn initial(conf: &Pool) -> (bool, Option<Arc<User>>) {
    if conf.users.is_empty() {
        return (conf.redis_auth.is_none(), None);
    }
    match conf.users.iter().find(|u| u.name == "default") {
        Some(d) if d.rules.enabled && d.rules.nopass => (true, Some(Arc::clone(d))),
        _ => (false, None),
    }
}

/// `AUTH [user] password` in a pool with users: the user (`default` when not named) must
/// exist, be `on` and accept the password. Returns whether it did; the caller counts and
/// logs a failure.
pub fn auth(ctx: &mut Local<'_>, user: Option<&[u8]>, password: &[u8], out: &mut BytesMut) -> bool {
    let name = user.unwrap_or(b"default");
    let found = ctx
        .pool
        .conf
        .users
        .iter()
        .find(|u| u.name.as_bytes() == name)
        .filter(|u| u.accepts(password));
    match found {
        Some(u) => {
            ctx.client.user = Some(Arc::clone(u));
            ctx.client.authed = true;
            encode::simple(out, b"OK");
            true
        }
        None => {
            encode::error(out, WRONGPASS);
            false
        }
    }
}

/// The reply to a call the user's rules deny (Redis 7.0's wording).
pub fn noperm(cmd: &Command, denied: Denied) -> String {
    match denied {
        Denied::Command => format!(
            "NOPERM this user has no permissions to run the '{}' command",
            cmd.name
        ),
        Denied::Key(_) => {
            "NOPERM this user has no permissions to access one of the keys used as arguments".into()
        }
        Denied::Channel(_) => {
            "NOPERM this user has no permissions to access one of the channels used as arguments"
                .into()
        }
    }
}

/// `ACL HELP`'s lines.
const HELP: [&str; 8] = [
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CAT [<category>]",
    "    List all commands that belong to <category>, or all command categories",
    "    when no category is specified.",
    "GETUSER <username>, LIST, USERS",
    "    The users of this pool (GETUSER and LIST: admin users only).",
    "WHOAMI",
    "    Return the current connection username.",
];

/// Answer an `ACL` subcommand (`cmd` is its table entry).
pub fn answer(ctx: &mut Local<'_>, cmd: &Command, argv: &[&[u8]]) -> Answer {
    let mut out = BytesMut::new();
    let resp3 = ctx.client.resp3;
    match cmd.name {
        "acl|whoami" => match &ctx.client.user {
            Some(u) => encode::bulk(&mut out, u.name.as_bytes()),
            None => encode::bulk(&mut out, b"default"),
        },
        "acl|cat" if argv.len() == 2 => {
            encode::array_header(&mut out, CATEGORIES.len());
            for c in CATEGORIES {
                encode::bulk(&mut out, c.as_bytes());
            }
        }
        "acl|cat" if argv.len() == 3 => {
            match category_commands(&String::from_utf8_lossy(argv[2])) {
                Some(names) => {
                    encode::array_header(&mut out, names.len());
                    for n in names {
                        encode::bulk(&mut out, n.as_bytes());
                    }
                }
                None => encode::error(
                    &mut out,
                    &format!("ERR Unknown category '{}'", sanitize(argv[2], 128)),
                ),
            }
        }
        "acl|cat" => wrong_arity(&mut out, cmd),
        "acl|help" => {
            encode::array_header(&mut out, HELP.len());
            for l in HELP {
                encode::simple(&mut out, l.as_bytes());
            }
        }
        "acl|users" | "acl|list" | "acl|getuser" => {
            if let Some(e) = listing_refused(ctx, cmd) {
                encode::error(&mut out, &e);
                return Answer::Reply(out);
            }
            let mut users: Vec<&Arc<User>> = ctx.pool.conf.users.iter().collect();
            users.sort_by(|a, b| a.name.cmp(&b.name));
            match cmd.name {
                "acl|users" => {
                    encode::array_header(&mut out, users.len());
                    for u in users {
                        encode::bulk(&mut out, u.name.as_bytes());
                    }
                }
                "acl|list" => {
                    encode::array_header(&mut out, users.len());
                    for u in users {
                        let line = format!(
                            "user {} {}",
                            u.name,
                            u.rules.describe(&u.hashes)
                        );
                        encode::bulk(&mut out, line.as_bytes());
                    }
                }
                _ => match users.iter().find(|u| u.name.as_bytes() == argv[2]) {
                    Some(u) => getuser(&mut out, u, resp3),
                    None => encode::null_for(&mut out, resp3),
                },
            }
        }
        other => encode::error(
            &mut out,
            &format!(
                "ERR rampart: ACL {} is not available through rampart: users are configured in rampart's configuration (users: of pool '{}')",
                other.trim_start_matches("acl|").to_ascii_uppercase(),
                ctx.pool.conf.name
            ),
        ),
    }
    Answer::Reply(out)
}

/// Why `ACL USERS`, `LIST` or `GETUSER` is refused to this client, if it is.
fn listing_refused(ctx: &Local<'_>, cmd: &Command) -> Option<String> {
    if ctx.pool.conf.users.is_empty() {
        return Some(format!(
            "ERR rampart: pool '{}' has no users at the proxy (users: in rampart's configuration)",
            ctx.pool.conf.name
        ));
    }
    let admin = ctx.client.user.as_ref().is_some_and(|u| u.rules.is_admin());
    (cmd.name != "acl|users" && !admin).then(|| {
        format!(
            "NOPERM this user has no permissions to run the '{}' command (ACL LIST and GETUSER are for users whose rules allow +@admin)",
            cmd.name
        )
    })
}

/// `ACL GETUSER`'s reply: a map (RESP3) or flat array of `flags` (a set), `passwords`
/// (their SHA-256 in hex), `commands`, `keys`, `channels` and `selectors` (none).
fn getuser(out: &mut BytesMut, u: &User, resp3: bool) {
    if resp3 {
        encode::map_header(out, 6);
    } else {
        encode::array_header(out, 12);
    }
    encode::bulk(out, b"flags");
    let flags = u.rules.flags();
    if resp3 {
        encode::set_header(out, flags.len());
    } else {
        encode::array_header(out, flags.len());
    }
    for f in flags {
        encode::bulk(out, f.as_bytes());
    }
    encode::bulk(out, b"passwords");
    let hashes: Vec<String> = u.all_hashes().map(hex).collect();
    encode::array_header(out, hashes.len());
    for h in hashes {
        encode::bulk(out, h.as_bytes());
    }
    for (k, v) in [
        ("commands", u.rules.commands_text()),
        ("keys", u.rules.keys_text()),
        ("channels", u.rules.channels_text()),
    ] {
        encode::bulk(out, k.as_bytes());
        encode::bulk(out, v.as_bytes());
    }
    encode::bulk(out, b"selectors");
    encode::array_header(out, 0);
}

fn wrong_arity(out: &mut BytesMut, cmd: &Command) {
    encode::error(
        out,
        &format!("ERR wrong number of arguments for '{}' command", cmd.name),
    );
}
