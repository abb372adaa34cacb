#!/usr/bin/env python3
"""Regenerate crates/commands/src/generated.rs from a live redis-server.

The command table of rampart is Redis' own metadata: this script starts a
throw-away redis-server (listening on a unix socket in a temporary
directory, no TCP port), reads `COMMAND INFO` and `COMMAND DOCS` for every
command, and writes the result as static Rust data. Routing classes are not
part of this output; they live in the hand-written crates/commands/src/class.rs.

Usage (from the repository root):

    python3 tools/gen-commands.py [--redis-server PATH] [--socket PATH] [--out FILE]

--socket uses an already running server instead of starting one.
Only the Python standard library is needed.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

OUT_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "commands", "src", "generated.rs")

# Canonical output orders, as Redis prints them. The generator checks that
# every flag list it reads follows these orders, so encode_info can rebuild
# the lists from bit sets.
COMMAND_FLAGS = [
    "write", "readonly", "denyoom", "module", "admin", "pubsub", "noscript", "blocking",
    "loading", "stale", "skip_monitor", "skip_slowlog", "asking", "fast", "no_auth",
    "no_mandatory_keys", "no_async_loading", "no_multi", "movablekeys", "allow_busy",
]
KEY_FLAGS = [
    "RO", "RW", "OW", "RM", "access", "update", "insert", "delete", "not_key",
    "incomplete", "variable_flags",
]
ARG_FLAGS = ["optional", "multiple", "multiple_token"]
DOC_FLAGS = ["deprecated", "syscmd"]
ARG_TYPES = {
    "string": "String", "integer": "Integer", "double": "Double", "key": "Key",
    "pattern": "Pattern", "unix-time": "UnixTime", "pure-token": "PureToken",
    "oneof": "OneOf", "block": "Block",
}
RUST_FLAG = {n: n.upper() for n in COMMAND_FLAGS}
RUST_KEY_FLAG = {n: n.upper() for n in KEY_FLAGS}
RUST_ARG_FLAG = {n: n.upper() for n in ARG_FLAGS}


class Resp:
    """A minimal RESP2 client: enough to read COMMAND replies."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._read()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ValueError("unexpected RESP type %r" % kind)


def pairs(flat):
    """A RESP2 map (flat array) as a dict, keeping order."""
    return dict(zip(flat[0::2], flat[1::2]))


def check_order(names, canon, what):
    idx = [canon.index(n) for n in names]
    if idx != sorted(idx):
        sys.exit("%s out of canonical order: %r" % (what, names))


def rs(s):
    """A Rust string literal."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u{%x}" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def bits(names, canon, rust, ty):
    check_order(names, canon, ty)
    if not names:
        return "%s::EMPTY" % ty
    expr = "%s::%s" % (ty, rust[names[0]])
    for n in names[1:]:
        expr += ".union(%s::%s)" % (ty, rust[n])
    return expr


def strs(items):
    return "&[" + ", ".join(rs(i) for i in items) + "]"


def key_spec(spec, ind):
    m = pairs(spec)
    notes = m.get("notes", "")
    flags = bits(m["flags"], KEY_FLAGS, RUST_KEY_FLAG, "KeyFlags")
    bs = pairs(m["begin_search"])
    bss = pairs(bs["spec"])
    if bs["type"] == "index":
        begin = "BeginSearch::Index(%d)" % bss["index"]
    elif bs["type"] == "keyword":
        begin = "BeginSearch::Keyword { keyword: %s, startfrom: %d }" % (rs(bss["keyword"]), bss["startfrom"])
    elif bs["type"] == "unknown":
        begin = "BeginSearch::Unknown"
    else:
        sys.exit("unknown begin_search type %r" % bs["type"])
    fk = pairs(m["find_keys"])
    fks = pairs(fk["spec"])
    if fk["type"] == "range":
        find = "FindKeys::Range { lastkey: %d, keystep: %d, limit: %d }" % (fks["lastkey"], fks["keystep"], fks["limit"])
    elif fk["type"] == "keynum":
        find = "FindKeys::KeyNum { keynumidx: %d, firstkey: %d, keystep: %d }" % (fks["keynumidx"], fks["firstkey"], fks["keystep"])
    elif fk["type"] == "unknown":
        find = "FindKeys::Unknown"
    else:
        sys.exit("unknown find_keys type %r" % fk["type"])
    expected = ["notes"] if "notes" in m else []
    if list(m.keys()) != expected + ["flags", "begin_search", "find_keys"]:
        sys.exit("unexpected key spec fields %r" % list(m.keys()))
    pad = " " * ind
    return "%sKeySpec { notes: %s, flags: %s, begin: %s, find: %s },\n" % (pad, rs(notes), flags, begin, find)


ARG_FIELDS = ["name", "type", "display_text", "key_spec_index", "token", "summary", "since",
              "deprecated_since", "flags", "arguments"]


def arg(a, ind):
    m = pairs(a)
    unknown = [k for k in m if k not in ARG_FIELDS]
    if unknown:
        sys.exit("unexpected argument fields %r" % unknown)
    pad = " " * ind
    fields = [
        "name: %s" % rs(m["name"]),
        "kind: ArgType::%s" % ARG_TYPES[m["type"]],
        "display_text: %s" % opt(m, "display_text"),
        "key_spec_index: %d" % m.get("key_spec_index", -1),
        "token: %s" % opt(m, "token"),
        "summary: %s" % opt(m, "summary"),
        "since: %s" % opt(m, "since"),
        "deprecated_since: %s" % opt(m, "deprecated_since"),
        "flags: %s" % bits(m.get("flags", []), ARG_FLAGS, RUST_ARG_FLAG, "ArgFlags"),
    ]
    nested = m.get("arguments", [])
    if not nested:
        return pad + "Arg { " + ", ".join(fields) + ", args: &[] },\n"
    s = pad + "Arg { " + ", ".join(fields) + ",\n"
    s += args_field("args", nested, ind + 4)
    return s + pad + "},\n"


def opt(m, field):
    """An optional string: Redis may report a field with an empty value (MIGRATE's "")."""
    return "Some(%s)" % rs(m[field]) if field in m else "None"


def args_field(field, items, ind):
    pad = " " * ind
    if not items:
        return pad + "%s: &[],\n" % field
    s = pad + "%s: &[\n" % field
    for a in items:
        s += arg(a, ind + 4)
    return s + pad + "],\n"


DOC_FIELDS = ["summary", "since", "group", "complexity", "doc_flags", "deprecated_since",
              "replaced_by", "history", "arguments", "subcommands"]


def command(info, docs, ind):
    name, arity, flags, first, last, step, acl, tips, specs, subs = info
    d = pairs(docs)
    unknown = [k for k in d if k not in DOC_FIELDS]
    if unknown:
        sys.exit("unexpected docs fields for %s: %r" % (name, unknown))
    pad = " " * ind
    sub_docs = pairs(d.get("subcommands", []))
    s = pad + "Command {\n"
    p = pad + "    "
    fl = bits(flags, COMMAND_FLAGS, RUST_FLAG, "Flags")
    has_keys = "true" if (first != 0 or "movablekeys" in flags) else "false"
    s += p + "name: %s,\n" % rs(name)
    s += p + "arity: %d,\n" % arity
    s += p + "flags: %s,\n" % fl
    s += p + "route: class::of(%s, %s, %s),\n" % (rs(name), fl, has_keys)
    s += p + "first_key: %d,\n" % first
    s += p + "last_key: %d,\n" % last
    s += p + "key_step: %d,\n" % step
    s += p + "acl_categories: %s,\n" % strs(acl)
    s += p + "tips: %s,\n" % strs(tips)
    if specs:
        s += p + "keys: &[\n"
        for sp in specs:
            s += key_spec(sp, ind + 8)
        s += p + "],\n"
    else:
        s += p + "keys: &[],\n"
    s += p + "summary: %s,\n" % rs(d.get("summary", ""))
    s += p + "since: %s,\n" % rs(d.get("since", ""))
    s += p + "group: %s,\n" % rs(d.get("group", ""))
    s += p + "complexity: %s,\n" % rs(d.get("complexity", ""))
    s += p + "doc_flags: %s,\n" % bits(d.get("doc_flags", []), DOC_FLAGS, {"deprecated": "DEPRECATED", "syscmd": "SYSCMD"}, "DocFlags")
    s += p + "deprecated_since: %s,\n" % rs(d.get("deprecated_since", ""))
    s += p + "replaced_by: %s,\n" % rs(d.get("replaced_by", ""))
    hist = d.get("history", [])
    s += p + "history: &[" + ", ".join("(%s, %s)" % (rs(v), rs(t)) for v, t in hist) + "],\n"
    s += args_field("arguments", d.get("arguments", []), ind + 4)
    if subs:
        s += p + "subcommands: &[\n"
        for sub in sorted(subs, key=lambda x: x[0]):
            s += command(sub, sub_docs[sub[0]], ind + 8)
        s += p + "],\n"
    else:
        s += p + "subcommands: &[],\n"
    s += pad + "},\n"
    return s


def start_server(binary, tmp):
    sock = os.path.join(tmp, "redis.sock")
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if os.path.exists(sock):
            try:
                return proc, Resp(sock)
            except OSError:
                pass
        time.sleep(0.02)
    proc.kill()
    sys.exit("redis-server did not start")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--socket", help="use a running server on this unix socket")
    ap.add_argument("--out", default=OUT_DEFAULT)
    opts = ap.parse_args()
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        if opts.socket:
            conn = Resp(opts.socket)
        else:
            proc, conn = start_server(opts.redis_server, tmp)
        try:
            version = pairs([x for l in conn.call("INFO", "server").splitlines() if ":" in l for x in l.split(":", 1)])["redis_version"]
            infos = conn.call("COMMAND", "INFO")
            docs = pairs(conn.call("COMMAND", "DOCS"))
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
    infos.sort(key=lambda x: x[0])
    body = []
    for info in infos:
        body.append(command(info, docs[info[0]], 4))
    text = (
        "// @generated by tools/gen-commands.py from redis-server %s (`COMMAND INFO` and\n"
        "// `COMMAND DOCS`). Do not edit by hand: re-run `python3 tools/gen-commands.py` from the\n"
        "// repository root. Routing classes come from the hand-written `class.rs`.\n\n"
        "use crate::class;\n"
        "use crate::{Arg, ArgFlags, ArgType, BeginSearch, Command, DocFlags, FindKeys, Flags, KeyFlags, KeySpec};\n\n"
        "/// The Redis version this table was read from.\n"
        "pub(crate) const REDIS_VERSION: &str = %s;\n\n"
        "/// Every command, sorted by name; subcommands sorted by name inside their container.\n"
        "pub(crate) static COMMANDS: &[Command] = &[\n%s];\n"
    ) % (version, rs(version), "".join(body))
    with open(opts.out, "w") as f:
        f.write(text)
    print("wrote %d commands to %s" % (len(infos), os.path.relpath(opts.out)), file=sys.stderr)


if __name__ == "__main__":
    main()
