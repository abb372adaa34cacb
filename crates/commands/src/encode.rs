//! RESP2 encodings of `COMMAND INFO` and `COMMAND DOCS` entries, byte-compatible with Redis.
//!
//! Redis prints maps as flat arrays in RESP2 and omits documentation fields it has no value
//! for; both are done here the same way. Subcommands are listed sorted by name, whereas Redis
//! lists them in the order of its hash table, which changes with each process start.

use crate::{Arg, BeginSearch, Command, FindKeys, KeySpec};

fn header(out: &mut Vec<u8>, kind: u8, n: i64) {
    out.push(kind);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn array(out: &mut Vec<u8>, len: usize) {
    header(out, b'*', len as i64);
}

fn int(out: &mut Vec<u8>, n: i32) {
    header(out, b':', i64::from(n));
}

fn bulk(out: &mut Vec<u8>, s: &str) {
    header(out, b'$', s.len() as i64);
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn status(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn statuses<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a str> + Clone) {
    array(out, items.clone().count());
    for s in items {
        status(out, s);
    }
}

/// Appends the `COMMAND INFO` entry of `cmd` (the ten-element array, without the outer array of
/// the reply): name, arity, flags, first key, last key, step, ACL categories, tips, key specs
/// and subcommands.
pub fn encode_info(cmd: &Command, out: &mut Vec<u8>) {
    array(out, 10);
    bulk(out, cmd.name);
    int(out, cmd.arity);
    statuses(out, cmd.flags.names());
    int(out, cmd.first_key);
    int(out, cmd.last_key);
    int(out, cmd.key_step);
    statuses(out, cmd.acl_categories.iter().copied());
    array(out, cmd.tips.len());
    for tip in cmd.tips {
        bulk(out, tip);
    }
    array(out, cmd.keys.len());
    for spec in cmd.keys {
        key_spec(spec, out);
    }
    array(out, cmd.subcommands.len());
    for sub in cmd.subcommands {
        encode_info(sub, out);
    }
}

fn key_spec(spec: &KeySpec, out: &mut Vec<u8>) {
    array(out, if spec.notes.is_empty() { 6 } else { 8 });
    if !spec.notes.is_empty() {
        bulk(out, "notes");
        bulk(out, spec.notes);
    }
    bulk(out, "flags");
    statuses(out, spec.flags.names());
    bulk(out, "begin_search");
    array(out, 4);
    bulk(out, "type");
    match spec.begin {
        BeginSearch::Index(pos) => {
            bulk(out, "index");
            bulk(out, "spec");
            array(out, 2);
            bulk(out, "index");
            int(out, pos);
        }
        BeginSearch::Keyword { keyword, startfrom } => {
            bulk(out, "keyword");
            bulk(out, "spec");
            array(out, 4);
            bulk(out, "keyword");
            bulk(out, keyword);
            bulk(out, "startfrom");
            int(out, startfrom);
        }
        BeginSearch::Unknown => {
            bulk(out, "unknown");
            bulk(out, "spec");
            array(out, 0);
        }
    }
    bulk(out, "find_keys");
    array(out, 4);
    bulk(out, "type");
    let fields: [(&str, i32); 3] = match spec.find {
        FindKeys::Range {
            lastkey,
            keystep,
            limit,
        } => {
            bulk(out, "range");
            [("lastkey", lastkey), ("keystep", keystep), ("limit", limit)]
        }
        FindKeys::KeyNum {
            keynumidx,
            firstkey,
            keystep,
        } => {
            bulk(out, "keynum");
            [
                ("keynumidx", keynumidx),
                ("firstkey", firstkey),
                ("keystep", keystep),
            ]
        }
        FindKeys::Unknown => {
            bulk(out, "unknown");
            bulk(out, "spec");
            array(out, 0);
            return;
        }
    };
    bulk(out, "spec");
    array(out, 6);
    for (name, value) in fields {
        bulk(out, name);
        int(out, value);
    }
}

/// Appends the `COMMAND DOCS` documentation map of `cmd` (the value only: the reply itself is a
/// map from command name to this), with subcommands nested by their full names.
pub fn encode_docs(cmd: &Command, out: &mut Vec<u8>) {
    let present = [
        true,
        true,
        true,
        !cmd.complexity.is_empty(),
        !cmd.doc_flags.is_empty(),
        !cmd.deprecated_since.is_empty(),
        !cmd.replaced_by.is_empty(),
        !cmd.history.is_empty(),
        !cmd.arguments.is_empty(),
        !cmd.subcommands.is_empty(),
    ];
    array(out, 2 * present.iter().filter(|p| **p).count());
    bulk(out, "summary");
    bulk(out, cmd.summary);
    bulk(out, "since");
    bulk(out, cmd.since);
    bulk(out, "group");
    bulk(out, cmd.group);
    if !cmd.complexity.is_empty() {
        bulk(out, "complexity");
        bulk(out, cmd.complexity);
    }
    if !cmd.doc_flags.is_empty() {
        bulk(out, "doc_flags");
        statuses(out, cmd.doc_flags.names());
    }
    if !cmd.deprecated_since.is_empty() {
        bulk(out, "deprecated_since");
        bulk(out, cmd.deprecated_since);
    }
    if !cmd.replaced_by.is_empty() {
        bulk(out, "replaced_by");
        bulk(out, cmd.replaced_by);
    }
    if !cmd.history.is_empty() {
        bulk(out, "history");
        array(out, cmd.history.len());
        for (version, change) in cmd.history {
            array(out, 2);
            bulk(out, version);
            bulk(out, change);
        }
    }
    if !cmd.arguments.is_empty() {
        bulk(out, "arguments");
        args(cmd.arguments, out);
    }
    if !cmd.subcommands.is_empty() {
        bulk(out, "subcommands");
        array(out, 2 * cmd.subcommands.len());
        for sub in cmd.subcommands {
            bulk(out, sub.name);
            encode_docs(sub, out);
        }
    }
}

fn args(list: &[Arg], out: &mut Vec<u8>) {
    array(out, list.len());
    for a in list {
        let optional = [
            a.display_text.is_some(),
            a.key_spec_index >= 0,
            a.token.is_some(),
            a.summary.is_some(),
            a.since.is_some(),
            a.deprecated_since.is_some(),
            !a.flags.is_empty(),
            !a.args.is_empty(),
        ];
        array(out, 4 + 2 * optional.iter().filter(|p| **p).count());
        bulk(out, "name");
        bulk(out, a.name);
        bulk(out, "type");
        bulk(out, a.kind.name());
        if let Some(text) = a.display_text {
            bulk(out, "display_text");
            bulk(out, text);
        }
        if a.key_spec_index >= 0 {
            bulk(out, "key_spec_index");
            int(out, a.key_spec_index);
        }
        let texts = [
            ("token", a.token),
            ("summary", a.summary),
            ("since", a.since),
            ("deprecated_since", a.deprecated_since),
        ];
        for (field, value) in texts {
            if let Some(value) = value {
                bulk(out, field);
                bulk(out, value);
            }
        }
        if !a.flags.is_empty() {
            bulk(out, "flags");
            statuses(out, a.flags.names());
        }
        if !a.args.is_empty() {
            bulk(out, "arguments");
            args(a.args, out);
        }
    }
}
