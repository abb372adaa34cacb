//! A transaction queued in its session: `MULTI` ... `EXEC` without a connection of its own.
//!
//! Between `MULTI` and `EXEC` nothing reaches a server. Each command is checked as it arrives
//! (known, right arity, one rampart forwards, allowed inside a transaction), answered `QUEUED`
//! and appended, as RESP, to the transaction's run, which starts with `MULTI`. A command
//! refused while queueing marks the transaction, as Redis does, and `EXEC` then answers
//! `EXECABORT` without sending anything. The transaction notes the shard of every key it
//! names; at `EXEC` they must all be one shard (keyless commands go anywhere), else nothing
//! runs and the error names the fix, a hash tag.
//!
//! `EXEC` appends `EXEC` to the run and sends it as one request to the shard's primary, on
//! the session's shared backend connection: the connection appends it in one piece, so Redis
//! reads `MULTI`, the commands and `EXEC` with no other client's request between them and
//! runs them atomically. The connection drops the `+OK` and `+QUEUED` replies and hands only
//! the `EXEC` reply to the client (see [`crate::upstream::sink::Sink::skip`]). Like any write
//! the run may wait in the failover hold while it is unsent; once it may have reached a
//! server it is never sent again.
//!
//! Commands rampart answers itself (INFO, COMMAND, CLIENT ID / GETNAME / SETNAME / INFO /
//! LIST, see [`answered_at_exec`]) are queued too, but not in the run: the transaction keeps
//! them with their place ([`Local`]), and at `EXEC` the session answers them, as Redis runs
//! them then, and splices its answers into the server's `EXEC` array at their places (see
//! [`crate::reply::merge::Merger::Splice`]). An `EXEC` that runs nothing (nil: a watched key
//! changed; an error) goes to the client as the server gave it. A transaction without such
//! commands is relayed as before, untouched.
//!
//! A transaction is bounded by [`MAX_COMMANDS`] commands and [`MAX_BYTES`] bytes: the command
//! that does not fit is refused and the transaction is discarded at `EXEC`.

use bytes::BytesMut;
use rampart_commands::{Command, Flags, Route};
use resp::encode;

/// Most commands one transaction queues (between `MULTI` and `EXEC`).
pub const MAX_COMMANDS: usize = 10_000;
/// Most request bytes one transaction queues (the commands as RESP).
pub const MAX_BYTES: usize = 16 << 20;

/// Redis' `EXEC` reply after a command was refused while queueing.
pub const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
/// The `EXEC` reply when the configuration was reloaded while commands were queued.
pub const RELOADED: &str = "EXECABORT Transaction discarded: the pool's configuration was reloaded while it was queued; send it again";
/// The `EXEC` reply when the transaction's keys live on more than one shard.
pub const CROSS_SHARD: &str = "EXECABORT Transaction discarded: its keys live on different shards and a transaction runs on one; give them a common hash tag (e.g. {user1}:a and {user1}:b) to put them on one shard";

/// The refusal of `CLIENT SETNAME` queued while keys are watched: rampart names the client
/// when it answers, at `EXEC`, before it knows whether a watched key changed and nothing ran.
pub const SETNAME_WATCHED: &str = "ERR rampart: 'client|setname' cannot be part of a transaction with WATCH (the name would be set even when EXEC runs nothing); set the name before WATCH or after EXEC";

/// Why a transaction will not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abort {
    /// A command was refused while queueing.
    Refused,
    /// A command did not fit the bounds.
    TooLarge,
}

/// The run `EXEC` sends: `MULTI`, the queued commands and `EXEC`, as one request.
#[derive(Debug)]
pub struct Run {
    /// The RESP bytes of the whole run.
    pub bytes: BytesMut,
    /// Replies before the `EXEC` reply: `MULTI`'s and one per queued command.
    pub skip: u32,
    /// The shard of its keys; `None` when no command names a key.
    pub shard: Option<usize>,
    /// The commands rampart answers itself, in queue order (empty for most transactions).
    pub locals: Vec<Local>,
}

/// A command rampart answers itself, queued in a transaction: answered at `EXEC` and put at
/// its place in `EXEC`'s array.
#[derive(Debug)]
pub struct Local {
    /// Its place among all the queued commands (0 for the first).
    pub at: u32,
    /// The command (a subcommand for CLIENT and COMMAND).
    pub cmd: &'static Command,
    /// Its arguments, the name first.
    pub argv: Vec<Vec<u8>>,
}

/// How a command admitted inside `MULTI` is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// In the run, for the transaction's server.
    Server,
    /// Aside, answered by rampart at `EXEC` (see [`Local`]).
    Local,
}

/// A transaction between `MULTI` and `EXEC`.
pub struct Transaction {
    /// `MULTI` and the queued commands, as RESP.
    run: BytesMut,
    commands: usize,
    /// The commands rampart answers itself, with their places.
    locals: Vec<Local>,
    /// Argument bytes of `locals` (they count against [`MAX_BYTES`] with the run).
    local_bytes: usize,
    shard: Option<usize>,
    cross: bool,
    abort: Option<Abort>,
    /// The configuration generation the shards were found in.
    generation: u64,
}

impl Transaction {
    /// A transaction just opened by `MULTI`, routing by the pool of `generation`.
    pub fn new(generation: u64) -> Self {
        let mut run = BytesMut::new();
        encode::command(&mut run, &[b"MULTI"]);
        Transaction {
            run,
            commands: 0,
            locals: Vec::new(),
            local_bytes: 0,
            shard: None,
            cross: false,
            abort: None,
            generation,
        }
    }

    /// A command was refused while queueing: `EXEC` will answer [`EXECABORT`].
    pub fn refuse(&mut self) {
        self.abort.get_or_insert(Abort::Refused);
    }

    /// Queue one command whose keys live on `shards`. `raw` is its RESP encoding when it
    /// arrived as RESP (kept as is); inline requests are encoded.
    ///
    /// # Errors
    /// The command would pass [`MAX_COMMANDS`] or [`MAX_BYTES`]: it is not queued, the
    /// transaction is discarded at `EXEC`, and the error is the reply to the command.
    pub fn push(
        &mut self,
        argv: &[&[u8]],
        raw: Option<&[u8]>,
        shards: impl IntoIterator<Item = usize>,
    ) -> Result<(), String> {
        // Past the bound nothing more is kept: the transaction will not run.
        if self.abort == Some(Abort::TooLarge) {
            return Ok(());
        }
        let len = raw.map_or_else(|| encoded_len(argv), <[u8]>::len);
        self.fits(len)?;
        match raw {
            Some(r) => self.run.extend_from_slice(r),
            None => encode::command(&mut self.run, argv),
        }
        self.commands += 1;
        for s in shards {
            match self.shard {
                None => self.shard = Some(s),
                Some(first) if first != s => self.cross = true,
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Queue `cmd`, which rampart answers itself, at its place (answered at `EXEC`).
    ///
    /// # Errors
    /// As [`Transaction::push`].
    pub fn push_local(&mut self, cmd: &'static Command, argv: &[&[u8]]) -> Result<(), String> {
        if self.abort == Some(Abort::TooLarge) {
            return Ok(());
        }
        let len = encoded_len(argv);
        self.fits(len)?;
        self.local_bytes += len;
        self.locals.push(Local {
            at: (self.commands + self.locals.len()) as u32,
            cmd,
            argv: argv.iter().map(|a| a.to_vec()).collect(),
        });
        Ok(())
    }

    /// Whether one more command of `len` bytes fits the bounds; past them the transaction
    /// keeps nothing more and is discarded at `EXEC`.
    fn fits(&mut self, len: usize) -> Result<(), String> {
        let queued = self.commands + self.locals.len();
        if queued >= MAX_COMMANDS || self.run.len() + self.local_bytes + len > MAX_BYTES {
            self.abort = Some(Abort::TooLarge);
            self.run = BytesMut::new();
            self.locals = Vec::new();
            return Err(too_large("ERR rampart: the transaction"));
        }
        Ok(())
    }

    /// `EXEC`: the run to send, with the pool now at `generation`.
    ///
    /// # Errors
    /// The reply `EXEC` gets instead, when nothing may run: a command was refused while
    /// queueing ([`EXECABORT`]), the transaction outgrew its bounds, its keys live on more
    /// than one shard ([`CROSS_SHARD`]), or a reload happened since `MULTI` ([`RELOADED`]).
    pub fn finish(mut self, generation: u64) -> Result<Run, String> {
        match self.abort {
            Some(Abort::Refused) => return Err(EXECABORT.into()),
            Some(Abort::TooLarge) => return Err(too_large("EXECABORT Transaction discarded: it")),
            None => {}
        }
        if self.cross {
            return Err(CROSS_SHARD.into());
        }
        // A reload may have moved the keys, and may deny a queued command (the user's rules,
        // the pool's policy) or rename it: keyless transactions are no exception.
        if self.commands + self.locals.len() > 0 && generation != self.generation {
            return Err(RELOADED.into());
        }
        encode::command(&mut self.run, &[b"EXEC"]);
        Ok(Run {
            bytes: self.run,
            skip: self.commands as u32 + 1,
            shard: self.shard,
            locals: self.locals,
        })
    }

    /// No command was queued (`EXEC` answers an empty array at once).
    pub fn is_empty(&self) -> bool {
        self.commands == 0 && self.locals.is_empty() && self.abort.is_none()
    }
}

/// Whether rampart answers `name` (a command it answers itself) inside a transaction, at
/// `EXEC`: INFO, COMMAND and its subcommands, CLIENT ID, GETNAME, SETNAME, INFO and LIST.
/// The other commands it answers itself change the connection in ways a queue cannot hold
/// (HELLO, AUTH, RESET, CLIENT REPLY, ...) and are refused inside `MULTI`.
pub fn answered_at_exec(name: &str) -> bool {
    matches!(
        name,
        "info" | "client|id" | "client|getname" | "client|setname" | "client|info" | "client|list"
    ) || name == "command"
        || name.starts_with("command|")
}

/// Whether `cmd` may be queued in a transaction of a pool with `one_shard` (then a command
/// that runs on every shard runs on the transaction's, the only one) and `admin_broadcast`,
/// and how; the error is the reply when it may not.
///
/// # Errors
/// Redis' own refusal for commands it does not allow inside `MULTI`; rampart's for commands
/// it answers itself but not inside a transaction, sends to several shards, or does not
/// support.
pub fn admit(cmd: &Command, one_shard: bool, admin_broadcast: bool) -> Result<Queued, String> {
    if cmd.flags.contains(Flags::NO_MULTI) {
        return Err("ERR Command not allowed inside a transaction".into());
    }
    let server = match cmd.route {
        // The server answers these inside the transaction, in the EXEC array: the same
        // replies rampart gives outside one (TIME: the clock of the transaction's server,
        // read when the transaction runs, as Redis does).
        _ if matches!(cmd.name, "ping" | "echo" | "unwatch" | "time") => Ok(()),
        Route::Local if answered_at_exec(cmd.name) => return Ok(Queued::Local),
        Route::Keys | Route::FanOut(_) => Ok(()),
        // Blocking pops never block inside a transaction: Redis runs them as plain pops.
        Route::Unsupported(_)
            if cmd.flags.contains(Flags::BLOCKING) && cmd.flags.contains(Flags::WRITE) =>
        {
            Ok(())
        }
        Route::Local => Err(format!(
            "ERR rampart: '{}' is answered by rampart itself and cannot be part of a transaction",
            cmd.name
        )),
        // A message's channel is placed as a key of the same name: the session adds its
        // shard to the transaction's (Celery's result backend stores and publishes a
        // result in one MULTI).
        Route::PubSub if matches!(cmd.name, "publish" | "spublish") => Ok(()),
        Route::PubSub => Err(format!(
            "ERR rampart: '{}' is placed by its channel, not by the transaction's keys, and cannot be part of a transaction",
            cmd.name
        )),
        Route::AllShards(_) if one_shard => Ok(()),
        // Its reply inside EXEC's array would reach the client as the server gave it, with
        // the credentials rampart leaves out of CONFIG GET outside a transaction.
        Route::Admin(_) if cmd.name == "config|get" => Err(
            "ERR rampart: 'config|get' cannot be part of a transaction (its reply is filtered by rampart)".into(),
        ),
        Route::Admin(_) if one_shard && admin_broadcast => Ok(()),
        Route::Admin(_) if one_shard => Err(format!(
            "ERR '{}' changes every shard and is disabled in this pool; set admin_broadcast: true to allow it",
            cmd.name
        )),
        Route::AllShards(_) | Route::Admin(_) => Err(format!(
            "ERR rampart: '{}' runs on every shard and cannot be part of a transaction, which runs on one",
            cmd.name
        )),
        Route::Unsupported(why) => Err(format!(
            "ERR '{}' is not supported by rampart: {why}",
            cmd.name
        )),
    };
    server.map(|()| Queued::Server)
}

/// Redis' reply to `EXEC` refused while queueing (wrong arity): the transaction is discarded.
pub fn exec_refused(err: &str) -> String {
    let why = err.strip_prefix("ERR ").unwrap_or(err);
    format!("EXECABORT Transaction discarded because of: {why}")
}

fn too_large(what: &str) -> String {
    format!(
        "{what} held more than {MAX_COMMANDS} commands or {} MiB, rampart's bound for a transaction",
        MAX_BYTES >> 20
    )
}

/// Bytes of `argv` encoded as a RESP array of bulk strings.
fn encoded_len(argv: &[&[u8]]) -> usize {
    let digits = |n: usize| n.to_string().len();
    3 + digits(argv.len())
        + argv
            .iter()
            .map(|a| 5 + digits(a.len()) + a.len())
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(name: &str) -> &'static Command {
        rampart_commands::lookup(name.as_bytes()).expect(name)
    }

    fn admit_in(cmd: &'static Command) -> Result<Queued, String> {
        admit(cmd, false, true)
    }

    #[test]
    fn encoded_len_matches_the_encoder() {
        let argv: Vec<&[u8]> = vec![b"SET", b"key", &[b'x'; 12]];
        let mut out = BytesMut::new();
        encode::command(&mut out, &argv);
        assert_eq!(encoded_len(&argv), out.len());
    }

    #[test]
    fn run_is_multi_commands_exec() {
        let mut t = Transaction::new(1);
        t.push(&[b"INCR", b"k"], None, [3]).unwrap();
        t.push(&[b"PING"], None, []).unwrap();
        let run = t.finish(1).unwrap();
        assert_eq!(
            &run.bytes[..],
            b"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nEXEC\r\n"
        );
        assert_eq!(run.skip, 3);
        assert_eq!(run.shard, Some(3));
    }

    #[test]
    fn refused_cross_shard_and_too_large_never_run() {
        let mut t = Transaction::new(1);
        t.refuse();
        assert_eq!(t.finish(1).err().as_deref(), Some(EXECABORT));
        let mut t = Transaction::new(1);
        t.push(&[b"GET", b"a"], None, [0]).unwrap();
        t.push(&[b"GET", b"b"], None, [1]).unwrap();
        assert_eq!(t.finish(1).err().as_deref(), Some(CROSS_SHARD));
        let mut t = Transaction::new(1);
        for _ in 0..MAX_COMMANDS {
            t.push(&[b"PING"], None, []).unwrap();
        }
        assert!(t.push(&[b"PING"], None, []).is_err());
        // Later commands are not kept, as Redis keeps answering QUEUED to a marked one.
        assert!(t.push(&[b"PING"], None, []).is_ok());
        assert!(t.finish(1).unwrap_err().starts_with("EXECABORT"));
        let mut t = Transaction::new(1);
        let big = vec![b'x'; MAX_BYTES];
        assert!(t.push(&[b"SET", b"k", &big], None, [0]).is_err());
        assert!(t.finish(1).is_err());
    }

    #[test]
    fn a_reload_since_multi_discards_any_queued_transaction() {
        let mut t = Transaction::new(1);
        t.push(&[b"INCR", b"k"], None, [0]).unwrap();
        assert_eq!(t.finish(2).err().as_deref(), Some(RELOADED));
        // No key: a reload may still have denied or renamed the command.
        let mut t = Transaction::new(1);
        t.push(&[b"FLUSHDB"], None, []).unwrap();
        assert_eq!(t.finish(2).err().as_deref(), Some(RELOADED));
        // Nothing queued (a watching client's MULTI EXEC): nothing to deny.
        assert!(Transaction::new(1).finish(2).is_ok());
    }

    #[test]
    fn admits_what_a_shard_can_run() {
        assert!(admit_in(cmd("incr")).is_ok());
        assert!(admit_in(cmd("mget")).is_ok());
        assert!(admit_in(cmd("ping")).is_ok());
        assert!(admit_in(cmd("unwatch")).is_ok());
        assert!(admit_in(cmd("time")).is_ok());
        assert_eq!(admit_in(cmd("info")), Ok(Queued::Local));
        let sub = |c: &str, s: &str| rampart_commands::lookup_sub(cmd(c), s.as_bytes()).expect(s);
        assert_eq!(admit_in(sub("client", "id")), Ok(Queued::Local));
        assert_eq!(admit_in(sub("command", "count")), Ok(Queued::Local));
        assert_eq!(admit_in(cmd("incr")), Ok(Queued::Server));
        assert!(admit_in(cmd("hello")).is_err());
        assert!(admit_in(sub("client", "reply")).is_err());
        assert!(admit_in(cmd("blpop")).is_ok());
        assert!(admit_in(cmd("wait")).is_err());
        assert_eq!(
            admit_in(cmd("save")).unwrap_err(),
            "ERR Command not allowed inside a transaction"
        );
        assert!(admit_in(cmd("dbsize")).is_err());
        assert!(admit_in(cmd("client")).is_err());
        // A pool of one shard runs every-shard commands in the transaction's shard.
        assert!(admit(cmd("dbsize"), true, false).is_ok());
        assert!(admit(cmd("flushall"), true, true).is_ok());
        assert!(admit(cmd("flushall"), true, false)
            .unwrap_err()
            .contains("admin_broadcast"));
        assert!(admit(cmd("flushall"), false, true).is_err());
        assert!(admit(cmd("publish"), false, false).is_ok());
        assert!(admit(cmd("spublish"), false, false).is_ok());
        assert!(admit(cmd("subscribe"), true, true).is_err());
    }
}
