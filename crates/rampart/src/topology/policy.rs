//! A pool's command policy as the data path reads it: commands denied (answered as unknown),
//! renamed (Redis' `rename-command` habit: the new name works, the old one is unknown), and
//! which of the commands refused by default ([`rampart_config::DANGEROUS`]) are allowed.
//!
//! Built once per configuration; a pool with no policy costs one branch per command.

use rampart_commands::acl::{command_count, command_id};
use rampart_commands::Command;
use rampart_config::CommandPolicy;

/// What a command name given by a client means in this pool.
pub enum Named {
    /// A command of the table (`None`: unknown, including a name renamed away).
    Table(Option<&'static Command>),
    /// A renamed command under its new name: the table's entry.
    Renamed(&'static Command),
}

/// One pool's compiled command policy.
#[derive(Debug, Default)]
pub struct Policy {
    /// Nothing denied, renamed or allowed: every check is skipped.
    empty: bool,
    /// By command id: answered as unknown.
    denied: Vec<bool>,
    /// By command id: refused by default and allowed here.
    allowed: Vec<bool>,
    /// New name (lowercase) -> the command.
    renamed: Vec<(Vec<u8>, &'static Command)>,
    /// By command id: renamed away (its own name is unknown).
    renamed_away: Vec<bool>,
}

/// By command id: the commands refused by default.
fn dangerous() -> &'static [bool] {
    static D: std::sync::OnceLock<Vec<bool>> = std::sync::OnceLock::new();
    D.get_or_init(|| {
        let mut d = vec![false; command_count()];
        for name in rampart_config::DANGEROUS {
            mark(&mut d, name);
        }
        d
    })
}

/// Sets the entry of `name` (`name` or `name|sub`) and, for a container, of every
/// subcommand.
fn mark(bits: &mut [bool], name: &str) {
    let (top, sub) = match name.split_once('|') {
        Some((t, s)) => (t, Some(s)),
        None => (name, None),
    };
    let Some(cmd) = rampart_commands::lookup(top.as_bytes()) else {
        return;
    };
    let target = match sub {
        Some(s) => match rampart_commands::lookup_sub(cmd, s.as_bytes()) {
            Some(c) => c,
            None => return,
        },
        None => cmd,
    };
    for c in std::iter::once(target).chain(target.subcommands) {
        if let Some(slot) = command_id(c).and_then(|id| bits.get_mut(id)) {
            *slot = true;
        }
    }
}

fn get(bits: &[bool], cmd: &Command) -> bool {
    command_id(cmd).is_some_and(|id| bits.get(id).copied().unwrap_or(false))
}

impl Policy {
    /// Compiles a pool's policy.
    pub fn new(conf: &CommandPolicy) -> Policy {
        let n = command_count();
        let mut p = Policy {
            empty: conf.is_empty(),
            denied: vec![false; n],
            allowed: vec![false; n],
            renamed: Vec::new(),
            renamed_away: vec![false; n],
        };
        for name in &conf.deny {
            mark(&mut p.denied, name);
        }
        for name in &conf.allow {
            mark(&mut p.allowed, name);
        }
        for (from, to) in &conf.rename {
            let Some(cmd) = rampart_commands::lookup(from.as_bytes()) else {
                continue;
            };
            if let Some(id) = command_id(cmd) {
                p.renamed_away[id] = true;
            }
            if !to.is_empty() {
                p.renamed.push((to.as_bytes().to_vec(), cmd));
            }
        }
        p
    }

    /// What `argv0` names in this pool.
    #[inline]
    pub fn lookup(&self, argv0: &[u8]) -> Named {
        let found = rampart_commands::lookup(argv0);
        if self.empty {
            return Named::Table(found);
        }
        match found {
            Some(c) if get(&self.renamed_away, c) => Named::Table(None),
            Some(c) => Named::Table(Some(c)),
            None => self
                .renamed
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(argv0))
                .map_or(Named::Table(None), |(_, c)| Named::Renamed(c)),
        }
    }

    /// `deny_commands` lists `cmd` (or its container).
    #[inline]
    pub fn denied(&self, cmd: &Command) -> bool {
        !self.empty && get(&self.denied, cmd)
    }

    /// `cmd` is refused by default and `allow_commands` does not list it.
    #[inline]
    pub fn refused(&self, cmd: &Command) -> bool {
        get(dangerous(), cmd) && (self.empty || !get(&self.allowed, cmd))
    }

    /// `cmd` is refused by default and `allow_commands` lists it.
    pub fn allowed(&self, cmd: &Command) -> bool {
        !self.empty && get(dangerous(), cmd) && get(&self.allowed, cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(a: &str, b: &str) -> &'static Command {
        let c = rampart_commands::lookup(a.as_bytes()).expect("cmd");
        rampart_commands::lookup_sub(c, b.as_bytes()).expect("sub")
    }

    #[test]
    fn deny_rename_allow() {
        let p = Policy::new(&CommandPolicy {
            deny: vec!["keys".into(), "config|get".into()],
            rename: vec![
                ("flushdb".into(), "flushdb_x".into()),
                ("debug".into(), String::new()),
            ],
            allow: vec!["config|set".into(), "bgsave".into()],
        });
        let keys = rampart_commands::lookup(b"keys").expect("keys");
        assert!(p.denied(keys));
        assert!(p.denied(sub("config", "get")) && !p.denied(sub("config", "set")));
        assert!(matches!(p.lookup(b"FLUSHDB"), Named::Table(None)));
        assert!(matches!(p.lookup(b"debug"), Named::Table(None)));
        assert!(matches!(p.lookup(b"FlushDB_X"), Named::Renamed(c) if c.name == "flushdb"));
        assert!(matches!(p.lookup(b"get"), Named::Table(Some(_))));
        assert!(!p.refused(sub("config", "set")) && p.allowed(sub("config", "set")));
        assert!(p.refused(sub("config", "rewrite")));
        let none = Policy::new(&CommandPolicy::default());
        assert!(none.refused(sub("config", "set")));
        assert!(none.refused(rampart_commands::lookup(b"shutdown").expect("shutdown")));
        assert!(none.refused(sub("module", "load")));
        assert!(!none.refused(sub("config", "get")));
        assert!(!none.refused(rampart_commands::lookup(b"flushall").expect("flushall")));
    }
}
