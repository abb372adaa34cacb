//! What a Redis-speaking server answers, checked through rampart against a real redis-server:
//! blocking calls, AUTH before and after, SELECT, INFO fields, SLOWLOG entries, the RAMPART
//! command, and the limits Redis puts on clients that have not authenticated.

mod common;

use common::{assert_pings, Setup};
use testkit::Reply;

/// Every spelling of a blocking call is refused with wording that fits the command, and the
/// connection (and the shared server connection behind it) keeps serving.
#[test]
fn blocking_calls_are_refused_in_their_own_words() {
    let env = Setup::new(2).start();
    let mut p = env.client();
    let always = [
        vec!["BLPOP", "l", "0"],
        vec!["brpoplpush", "a", "b", "0"],
        vec!["BZPOPMIN", "z", "0"],
        vec!["BLMPOP", "0", "1", "l", "LEFT"],
    ];
    for c in &always {
        let want = format!(
            "ERR rampart: '{}' is a blocking command, which rampart does not support yet",
            c[0].to_ascii_lowercase()
        );
        assert_eq!(p.cmd(c), Reply::Error(want), "{c:?}");
        assert_pings(&mut p);
    }
    assert_eq!(
        p.cmd(&["XGROUP", "CREATE", "s", "streams", "$", "MKSTREAM"]),
        Reply::ok()
    );
    let block_option = [
        vec!["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
        vec!["XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "s", "$"],
        vec![
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
            ">",
        ],
        // A group named like a keyword does not hide the BLOCK option behind it.
        vec![
            "xreadgroup",
            "group",
            "streams",
            "c",
            "block",
            "0",
            "streams",
            "s",
            ">",
        ],
        vec![
            "XREADGROUP",
            "GROUP",
            "streams",
            "c",
            "COUNT",
            "1",
            "NOACK",
            "BLOCK",
            "10",
            "STREAMS",
            "s",
            ">",
        ],
    ];
    for c in &block_option {
        let want = format!(
            "ERR rampart: '{}' with BLOCK is a blocking call, which rampart does not support yet; call it without BLOCK",
            c[0].to_ascii_lowercase()
        );
        assert_eq!(p.cmd(c), Reply::Error(want), "{c:?}");
        assert_pings(&mut p);
    }
    // Without BLOCK they run; a consumer named "block" is a name, not the option.
    assert_eq!(
        p.cmd(&[
            "XREADGROUP",
            "GROUP",
            "streams",
            "block",
            "STREAMS",
            "s",
            ">"
        ]),
        Reply::Array(None)
    );
    assert_eq!(
        p.cmd(&["XREAD", "COUNT", "1", "STREAMS", "s", "0"]),
        Reply::Array(None)
    );
    match p.cmd(&["WAIT", "1", "0"]) {
        Reply::Error(e) => assert!(e.contains("'wait'") && e.contains("blocks"), "{e}"),
        other => panic!("WAIT: {other:?}"),
    }
    assert_pings(&mut p);
}
