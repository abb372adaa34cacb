//! Real job-queue applications through rampart, each against a replica-set pool (a primary and
//! a replica, `read_policy: prefer-replica`): Sidekiq (Debian's `ruby-sidekiq`, its own client
//! pushing and its own server process running the jobs), RQ (`rq worker --burst`), Celery (a
//! worker and a sender, broker and result backend both through rampart) and BullMQ (a queue
//! and a worker on ioredis; also on a pool of two shards), the last three pinned by
//! `scripts/client-libs.sh`; then Sidekiq again across a Sentinel failover. The scripts they
//! run are in `tests/apps/`. A test that cannot run its application fails; every process it
//! starts is killed by PID when it ends.
//!
//! Then the same clients and applications as managed-Redis users run them: over a TLS
//! listener with a CA file, as proxy users (`users:`) whose rules an operator would write,
//! on a pool of TLS-only servers that know only rampart's own user and on a replica set:
//! redis-py (RESP2, RESP3, and by client certificate), node-redis, ioredis and Ruby's redis
//! gem, then Sidekiq and BullMQ.
//!
//! Each test prints what it measured; run with `cargo test -p rampart --test apps --
//! --nocapture` to see it.

#[path = "common/ca.rs"]
mod ca;
mod common;
#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ha::{replica_set, short_form, HaProxy, SentinelSetup, FAST_CHECKS, MASTER};
use testkit::process::ChildGuard;
use testkit::{poll_until, RedisServer, Reply, TlsRedis};

/// The scripts the applications run.
fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/apps")
}

/// A primary, one synced replica, and rampart over them with `prefer-replica` reads.
struct Pool {
    primary: RedisServer,
    _replica: RedisServer,
    proxy: HaProxy,
}

impl Pool {
    fn start() -> Pool {
        Pool::start_with("")
    }

    /// Like [`Pool::start`], with the extra pool lines `extra`.
    fn start_with(extra: &str) -> Pool {
        let (primary, mut replicas) = replica_set(1);
        let replica = replicas.remove(0);
        let body = short_form(
            &primary.addr(),
            &[replica.addr()],
            &format!("  read_policy: prefer-replica\n{FAST_CHECKS}{extra}"),
        );
        let proxy = HaProxy::start(&body);
        proxy.wait_up(&[primary.addr(), replica.addr()], Duration::from_secs(10));
        Pool {
            primary,
            _replica: replica,
            proxy,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}/0", self.proxy.addr())
    }
}

/// Runs `cmd` to its end within `timeout`, with its output in `log`; returns the output.
///
/// # Panics
/// If it cannot start, does not end in time (it is then killed), or exits with an error.
fn run_to_end(what: &str, cmd: Command, log: &Path, timeout: Duration) -> String {
    let mut child = ChildGuard::spawn(cmd, what, log);
    let status = child.wait_exit(timeout);
    child.kill();
    let out = testkit::process::read_lossy(log);
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!("{what} failed ({s}):\n{out}"),
        None => panic!("{what} did not end within {timeout:?}:\n{out}"),
    }
}

/// `SCARD key` read straight from `server`.
fn scard(server: &RedisServer, key: &str) -> i64 {
    match server.cmd(&["SCARD", key]) {
        Reply::Int(n) => n,
        other => panic!("SCARD {key}: {other:?}"),
    }
}

/// The lines of a Sidekiq log at its levels ERROR and FATAL.
fn sidekiq_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" ERROR: ") || l.contains(" FATAL: "))
        .collect()
}

/// The lines of a Sidekiq log at its level WARN (printed, for the report).
fn sidekiq_warnings(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" WARN: ")).collect()
}

/// A Sidekiq server (`sidekiq -r tests/apps/sidekiq_jobs.rb`, 5 threads) on `url`.
fn sidekiq_server(url: &str, log: &Path) -> ChildGuard {
    sidekiq_server_with(url, &[], log)
}

/// Like [`sidekiq_server`], with the environment variables `envs` (`REDIS_CA`, `DYNO`).
fn sidekiq_server_with(url: &str, envs: &[(&str, &str)], log: &Path) -> ChildGuard {
    let mut cmd = Command::new("sidekiq");
    cmd.envs(envs.iter().copied())
        .env("REDIS_URL", url)
        .env("RAILS_ENV", "production")
        .current_dir(scripts())
        .args([
            "-r",
            "./sidekiq_jobs.rb",
            "-c",
            "5",
            "-q",
            "default",
            "-t",
            "5",
        ]);
    ChildGuard::spawn(cmd, "sidekiq", log)
}

/// Runs `sidekiq_push.rb` for `n` jobs on `url`; returns the ids acknowledged and the lines
/// of the pushes that failed.
fn sidekiq_push(url: &str, n: usize, pause: &str, log: &Path) -> (Vec<u64>, Vec<String>) {
    sidekiq_push_with(url, &[], n, pause, log)
}

/// Like [`sidekiq_push`], with the environment variables `envs` (`REDIS_CA`).
fn sidekiq_push_with(
    url: &str,
    envs: &[(&str, &str)],
    n: usize,
    pause: &str,
    log: &Path,
) -> (Vec<u64>, Vec<String>) {
    let mut cmd = Command::new("ruby");
    cmd.envs(envs.iter().copied());
    cmd.env("REDIS_URL", url).current_dir(scripts()).args([
        "sidekiq_push.rb",
        &n.to_string(),
        pause,
    ]);
    let out = run_to_end("sidekiq push", cmd, log, Duration::from_secs(120));
    assert!(
        out.lines().any(|l| l == "pushed"),
        "push did not finish:\n{out}"
    );
    let acked = out
        .lines()
        .filter_map(|l| l.strip_prefix("acked ")?.parse().ok())
        .collect();
    let failed = out
        .lines()
        .filter(|l| l.starts_with("failed "))
        .map(str::to_string)
        .collect();
    (acked, failed)
}

/// 2,000 Sidekiq jobs pushed through rampart are all run by a Sidekiq server connected through
/// rampart (each adds its id to a set, counted on the primary itself), and the server logs
/// no error.
#[test]
fn sidekiq_runs_every_job() {
    const JOBS: usize = 2000;
    let pool = Pool::start();
    let dir = pool.proxy.proxy.dir().to_path_buf();
    let t0 = Instant::now();
    let (acked, failed) = sidekiq_push(&pool.url(), JOBS, "0", &dir.join("push.log"));
    assert!(
        failed.is_empty(),
        "pushes failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert_eq!(acked.len(), JOBS);
    println!("{JOBS} pushes acknowledged in {:?}", t0.elapsed());

    let log = dir.join("sidekiq.log");
    let t1 = Instant::now();
    let mut server = sidekiq_server(&pool.url(), &log);
    // Ends early when Sidekiq logs an error: that fails the test anyway.
    let done = poll_until(Duration::from_secs(90), || {
        let text = testkit::process::read_lossy(&log);
        let all = scard(&pool.primary, "apps:done") == JOBS as i64;
        (all || !sidekiq_errors(&text).is_empty()).then_some(all)
    });
    let text = testkit::process::read_lossy(&log);
    assert!(
        done == Some(true),
        "{} of {JOBS} jobs ran; sidekiq log:\n{text}\nproxy log:\n{}",
        scard(&pool.primary, "apps:done"),
        pool.proxy.log()
    );
    println!("{JOBS} jobs run in {:?}", t1.elapsed());
    assert_eq!(pool.primary.cmd(&["LLEN", "queue:default"]), Reply::Int(0));
    // A clean stop: TERM, then the server ends on its own (it reports its shutdown to Redis).
    server.signal("TERM");
    let exit = server.wait_exit(Duration::from_secs(20));
    let text = testkit::process::read_lossy(&log);
    assert!(
        exit.is_some_and(|s| s.success()),
        "sidekiq did not stop cleanly ({exit:?}):\n{text}"
    );
    println!("sidekiq warnings: {:?}", sidekiq_warnings(&text));
    let errors = sidekiq_errors(&text);
    assert!(errors.is_empty(), "sidekiq logged errors:\n{text}");
    assert_eq!(pool.primary.cmd(&["ZCARD", "retry"]), Reply::Int(0));
    assert_eq!(pool.primary.cmd(&["ZCARD", "dead"]), Reply::Int(0));
}

/// 500 Sidekiq jobs pushed through a pool that spools SADD and LPUSH while its primary is
/// down (frozen with SIGSTOP) are all acknowledged from the spool; when the primary returns
/// the spool is replayed, and a Sidekiq server connected through rampart runs every job.
#[test]
fn sidekiq_pushes_spooled_while_the_primary_is_down_all_run() {
    const JOBS: usize = 500;
    let spool = tempfile::tempdir().expect("tempdir");
    let pool = Pool::start_with(&format!(
        "  failover_hold: 500ms\n  spool_dir: {}\n  spool_commands: [SADD, LPUSH]\n",
        spool.path().display()
    ));
    let dir = pool.proxy.proxy.dir().to_path_buf();
    pool.primary.stop();
    let down = poll_until(Duration::from_secs(10), || {
        pool.proxy
            .node(&pool.primary.addr())
            .filter(|n| !n.up)
            .map(|_| ())
    });
    assert!(down.is_some(), "the proxy never saw the primary down");
    let t0 = Instant::now();
    let (acked, failed) = sidekiq_push(&pool.url(), JOBS, "0", &dir.join("push.log"));
    let pushed_in = t0.elapsed();
    pool.primary.cont();
    assert!(
        failed.is_empty(),
        "pushes failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert_eq!(acked.len(), JOBS);
    println!("{JOBS} pushes acknowledged from the spool in {pushed_in:?}");
    // The spool replays once the primary is back; writes newer than the spool wait for the
    // replay in the hold (500 ms here), so the Sidekiq server starts once it is done.
    let t1 = Instant::now();
    let replayed = poll_until(Duration::from_secs(60), || {
        (pool.primary.cmd(&["LLEN", "queue:default"]) == Reply::Int(JOBS as i64)).then_some(())
    });
    assert!(
        replayed.is_some(),
        "the spool was not replayed within 60 s: {:?} jobs queued on the primary",
        pool.primary.cmd(&["LLEN", "queue:default"])
    );
    println!("{JOBS} spooled pushes replayed in {:?}", t1.elapsed());
    let log = dir.join("sidekiq.log");
    let mut server = sidekiq_server(&pool.url(), &log);
    let done = poll_until(Duration::from_secs(90), || {
        let text = testkit::process::read_lossy(&log);
        let all = scard(&pool.primary, "apps:done") == JOBS as i64;
        (all || !sidekiq_errors(&text).is_empty()).then_some(all)
    });
    let text = testkit::process::read_lossy(&log);
    assert!(
        done == Some(true),
        "{} of {JOBS} jobs ran; sidekiq log:\n{text}\nproxy log:\n{}",
        scard(&pool.primary, "apps:done"),
        pool.proxy.log()
    );
    println!("{JOBS} spooled jobs replayed and run in {:?}", t1.elapsed());
    server.signal("TERM");
    let _ = server.wait_exit(Duration::from_secs(20));
    let errors = sidekiq_errors(&text);
    assert!(errors.is_empty(), "sidekiq logged errors:\n{text}");
}

/// 500 RQ jobs enqueued through rampart are run by `rq worker --burst` through rampart, every
/// result right, none failed.
#[test]
fn rq_runs_every_job() {
    const JOBS: usize = 500;
    let libs = common::client_libs();
    let pool = Pool::start();
    let dir = pool.proxy.proxy.dir().to_path_buf();
    let pythonpath = format!("{}:{}", libs.join("py").display(), scripts().display());
    let phase = |name: &str| {
        let mut cmd = Command::new("python3");
        cmd.env("PYTHONPATH", &pythonpath).args([
            scripts().join("rq_enqueue.py").to_string_lossy().as_ref(),
            &pool.proxy.port.to_string(),
            &JOBS.to_string(),
            name,
        ]);
        let out = run_to_end(
            name,
            cmd,
            &dir.join(format!("{name}.log")),
            Duration::from_secs(60),
        );
        assert!(out.trim_end().ends_with("ok"), "{name}:\n{out}");
    };
    let t0 = Instant::now();
    phase("enqueue");
    println!("{JOBS} jobs enqueued in {:?}", t0.elapsed());

    let mut worker = Command::new("python3");
    worker
        .env("PYTHONPATH", &pythonpath)
        .arg(libs.join("py/bin/rq"))
        .args(["worker", "--burst", "--url", &pool.url(), "apps"]);
    let t1 = Instant::now();
    let out = run_to_end(
        "rq worker",
        worker,
        &dir.join("worker.log"),
        Duration::from_secs(120),
    );
    println!("rq worker --burst ran {JOBS} jobs in {:?}", t1.elapsed());
    let problems: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("Traceback") || l.contains("ERROR") || l.contains("Error"))
        .collect();
    assert!(problems.is_empty(), "rq worker logged problems:\n{out}");
    phase("check");
}

/// An RQ worker waiting on an empty queue (its BLMOVE blocked on the primary) outlives a
/// kill -9 of the primary of a Sentinel pool: rampart closes its connection, as the dead
/// server would, so RQ reconnects (an error reply ended the worker: "found an unhandled
/// exception, quitting"); jobs enqueued after the failover all run, none failed.
#[test]
fn an_rq_worker_blocked_on_its_queue_outlives_a_kill_of_the_primary() {
    let mut s = SentinelSetup::start("  failover_hold: 10s\n");
    let (addr, port, dir) = (
        s.proxy.addr(),
        s.proxy.port,
        s.proxy.proxy.dir().to_path_buf(),
    );
    let primary = s.primary.addr();
    rq_worker_through(&addr, port, &dir, &primary, || {
        let t0 = Instant::now();
        s.primary.kill9();
        let (took, _) = s.wait_switch(t0, Duration::from_secs(30));
        println!("Sentinel named a new primary after {took:?}");
    });
}

/// An RQ worker waiting on its empty queue outlives a planned switchover of its replica
/// set (`RAMPART SWITCHOVER`): the old primary turning replica unblocks its BLMOVE with
/// Redis' `UNBLOCKED` error, which ended the worker; rampart closes the client instead, so
/// the worker reconnects and blocks on the new primary, and runs every job enqueued after.
#[test]
fn an_rq_worker_blocked_on_its_queue_outlives_a_planned_switchover() {
    let pool = Pool::start();
    let (addr, port, dir) = (
        pool.proxy.addr(),
        pool.proxy.port,
        pool.proxy.proxy.dir().to_path_buf(),
    );
    rq_worker_through(&addr, port, &dir, &pool.primary.addr(), || {
        let mut admin = testkit::Client::connect(&addr);
        admin.set_read_timeout(Some(Duration::from_secs(30)));
        let r = admin.cmd(&["RAMPART", "SWITCHOVER", ha::POOL]);
        assert!(
            matches!(&r, Reply::Simple(m) if m.contains("switched to")),
            "{r:?}\n{}",
            pool.proxy.log()
        );
    });
}

/// An RQ worker outlives an outage of its pool's only server (a `primary:` pool, no
/// Sentinel: nothing to fail over to) with `when_down: close`: while the primary is down
/// each of the worker's commands closes its connection, as HAProxy in front of the dead
/// server would, so redis-py raises `ConnectionError` and RQ waits and reconnects (an error
/// reply ended the worker: its heartbeat `HSET` raised `ResponseError`). Once the primary
/// is back, 20 jobs enqueued all run.
#[test]
fn an_rq_worker_outlives_an_outage_of_its_primary_with_when_down_close() {
    let mut primary = RedisServer::start();
    let proxy = HaProxy::start(&format!(
        "  primary: {}\n  when_down: close\n",
        primary.addr()
    ));
    let (addr, port, dir) = (proxy.addr(), proxy.port, proxy.proxy.dir().to_path_buf());
    let blocked_on = primary.addr();
    rq_worker_through(&addr, port, &dir, &blocked_on, || {
        primary.kill9();
        // Longer than the worker's first waits between reconnects (1 s, then growing).
        std::thread::sleep(Duration::from_secs(4));
        primary.restart();
    });
    let closings = proxy.log_lines(&["when_down: close"]);
    assert!(
        !closings.is_empty(),
        "the worker's commands during the outage closed it:\n{}",
        proxy.log()
    );
}

/// An RQ worker (not burst) on the pool at `addr` (port `port`, files in `dir`), blocked on
/// its empty queue on the node at `blocked_on`, goes through `fault`; then 20 jobs are
/// enqueued and must all run, and the worker must still be running.
fn rq_worker_through(
    addr: &str,
    port: u16,
    dir: &std::path::Path,
    blocked_on: &str,
    fault: impl FnOnce(),
) {
    const JOBS: usize = 20;
    let libs = common::client_libs();
    let pythonpath = format!("{}:{}", libs.join("py").display(), scripts().display());
    let url = format!("redis://{addr}/0");
    let mut worker = Command::new("python3");
    worker
        .env("PYTHONPATH", &pythonpath)
        .arg(libs.join("py/bin/rq"))
        .args(["worker", "--url", &url, "apps"]);
    let log = dir.join("worker.log");
    let mut worker = ChildGuard::spawn(worker, "rq worker", &log);
    let blocked = poll_until(Duration::from_secs(30), || {
        let mut c = testkit::Client::try_connect(blocked_on).ok()?;
        let info = c.try_cmd(&["INFO", "clients"]).ok()?;
        format!("{info:?}")
            .contains("blocked_clients:1")
            .then_some(())
    });
    assert!(
        blocked.is_some(),
        "the worker never blocked on its queue:\n{}",
        testkit::process::read_lossy(&log)
    );
    fault();
    let script = |name: &str| {
        let mut cmd = Command::new("python3");
        cmd.env("PYTHONPATH", &pythonpath).args([
            scripts().join("rq_enqueue.py").to_string_lossy().as_ref(),
            &port.to_string(),
            &JOBS.to_string(),
            name,
        ]);
        cmd
    };
    let fed = run_to_end(
        "feed",
        script("feed"),
        &dir.join("feed.log"),
        Duration::from_secs(60),
    );
    assert!(fed.trim_end().ends_with("ok"), "feed:\n{fed}");
    // The check fails (its exit status) until the worker has run every job.
    let check_log = dir.join("check.log");
    let checked = poll_until(Duration::from_secs(60), || {
        let mut check = ChildGuard::spawn(script("check"), "check", &check_log);
        let status = check.wait_exit(Duration::from_secs(30));
        check.kill();
        status.is_some_and(|s| s.success()).then_some(())
    });
    let text = testkit::process::read_lossy(&log);
    assert!(worker.try_exit().is_none(), "the rq worker exited:\n{text}");
    assert!(
        checked.is_some(),
        "the jobs enqueued after the fault did not all run:\n{text}"
    );
    worker.signal("TERM");
    let _ = worker.wait_exit(Duration::from_secs(20));
}

/// A Celery worker outlives an outage of its pool's only server (a `primary:` pool, no
/// Sentinel) with `when_down: close`: while the server is down its commands close the
/// connection, which kombu takes as a lost broker connection and retries; once the server is
/// back (empty: it was killed), tasks sent then all run.
#[test]
fn a_celery_worker_outlives_an_outage_of_its_primary_with_when_down_close() {
    let libs = common::client_libs();
    let mut primary = RedisServer::start();
    let proxy = HaProxy::start(&format!(
        "  primary: {}\n  when_down: close\n",
        primary.addr()
    ));
    let dir = proxy.proxy.dir().to_path_buf();
    let url = format!("redis://{}/0", proxy.addr());
    let pythonpath = format!("{}:{}", libs.join("py").display(), scripts().display());
    let mut worker = Command::new("python3");
    worker
        .env("PYTHONPATH", &pythonpath)
        .env("RAMPART_URL", &url)
        .args(["-m", "celery", "-A", "celery_app", "worker", "--pool=solo"])
        .args(["--loglevel=INFO", "--hostname=apps@localhost"]);
    let worker_log = dir.join("celery-worker.log");
    let mut worker = ChildGuard::spawn(worker, "celery worker", &worker_log);
    let run = |name: &str, worker_total: usize| {
        let mut run = Command::new("python3");
        run.env("PYTHONPATH", &pythonpath)
            .env("RAMPART_URL", &url)
            .arg(scripts().join("celery_run.py"))
            .args(["20".to_string(), worker_total.to_string()]);
        let out = run_to_end(
            name,
            run,
            &dir.join(format!("{name}.log")),
            Duration::from_secs(180),
        );
        assert!(
            out.trim_end().ends_with("ok"),
            "{name}:\n{out}\nworker:\n{}\nrampart:\n{}",
            testkit::process::read_lossy(&worker_log),
            proxy.log()
        );
    };
    run("before", 20);
    primary.kill9();
    std::thread::sleep(Duration::from_secs(4));
    primary.restart();
    // Each worker thread reconnects within its back-off (at most 2 s); the driver does not
    // retry, so it starts once writes on new connections (spread over the workers) succeed.
    let back = poll_until(Duration::from_secs(10), || {
        (0..8)
            .all(|_| {
                testkit::Client::try_connect(&proxy.addr())
                    .and_then(|mut c| c.try_cmd(&["SET", "back", "1"]))
                    .is_ok_and(|r| r == Reply::ok())
            })
            .then_some(())
    });
    assert!(back.is_some(), "writes never resumed:\n{}", proxy.log());
    run("after", 40);
    let log = testkit::process::read_lossy(&worker_log);
    assert!(
        worker.try_exit().is_none(),
        "the celery worker exited:\n{log}"
    );
    worker.kill();
    assert_eq!(
        log.matches("succeeded in").count(),
        40,
        "tasks the worker ran:\n{log}"
    );
}

/// 500 Celery tasks sent through rampart (Redis broker and result backend both the pool) are
/// run by a Celery worker through rampart, every result right; the worker answers broadcasts
/// (`control.ping`, `inspect().ping()`, `control.broadcast`), which travel by Pub/Sub on the
/// Redis transport, as do the results the sender waits for.
#[test]
fn celery_runs_every_task_and_answers_a_broadcast() {
    const TASKS: usize = 500;
    let libs = common::client_libs();
    let pool = Pool::start();
    let dir = pool.proxy.proxy.dir().to_path_buf();
    let pythonpath = format!("{}:{}", libs.join("py").display(), scripts().display());
    let mut worker = Command::new("python3");
    worker
        .env("PYTHONPATH", &pythonpath)
        .env("RAMPART_URL", pool.url())
        .args(["-m", "celery", "-A", "celery_app", "worker", "--pool=solo"])
        .args(["--loglevel=INFO", "--hostname=apps@localhost"]);
    let worker_log = dir.join("celery-worker.log");
    let mut worker = ChildGuard::spawn(worker, "celery worker", &worker_log);
    let mut run = Command::new("python3");
    run.env("PYTHONPATH", &pythonpath)
        .env("RAMPART_URL", pool.url())
        .arg(scripts().join("celery_run.py"))
        .arg(TASKS.to_string());
    let t0 = Instant::now();
    let out = run_to_end(
        "celery tasks",
        run,
        &dir.join("celery-run.log"),
        Duration::from_secs(180),
    );
    println!(
        "celery: {TASKS} tasks and the broadcasts in {:?}\n{out}",
        t0.elapsed()
    );
    worker.kill();
    let log = testkit::process::read_lossy(&worker_log);
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("CRITICAL") || l.contains("Traceback"))
        .collect();
    assert!(
        problems.is_empty(),
        "the celery worker logged problems:\n{log}"
    );
    assert_eq!(
        log.matches("succeeded in").count(),
        TASKS,
        "tasks the worker ran:\n{log}"
    );
}

/// Runs `tests/apps/bullmq_jobs.js` against `port` with `jobs` jobs under the key `prefix`;
/// returns its exit status and output.
fn bullmq(port: u16, jobs: usize, prefix: &str, log: &Path) -> (Option<i32>, String) {
    bullmq_with(port, &[], jobs, prefix, log)
}

/// Like [`bullmq`], with the environment variables `envs` (`RAMPART_TLS_CA`, `RAMPART_USER`,
/// `RAMPART_PASSWORD`).
fn bullmq_with(
    port: u16,
    envs: &[(&str, &str)],
    jobs: usize,
    prefix: &str,
    log: &Path,
) -> (Option<i32>, String) {
    let libs = common::client_libs();
    let mut cmd = Command::new("node");
    cmd.envs(envs.iter().copied())
        .env("NODE_PATH", libs.join("node/node_modules"))
        .arg(scripts().join("bullmq_jobs.js"))
        .args([port.to_string(), jobs.to_string(), prefix.to_string()]);
    let mut child = ChildGuard::spawn(cmd, "bullmq", log);
    let status = child.wait_exit(Duration::from_secs(90));
    child.kill();
    let out = testkit::process::read_lossy(log);
    match status {
        Some(s) => (s.code(), out),
        None => panic!("bullmq did not end within 90 s:\n{out}"),
    }
}

/// BullMQ (npm, on ioredis) through rampart: plain jobs (half added by `addBulk`, a MULTI), a
/// job that fails and is retried once, a delayed job, a prioritised one and a flow (a parent
/// run after its child), on a worker with concurrency 5 whose blocking fetch (BZPOPMIN on the
/// queue's marker) runs on dedicated connections: every job completes once with its result,
/// the queue's own counts agree, and no error event fires, closing the worker included.
/// First on a replica set; then on a pool of two shards with the key prefix BullMQ documents
/// for Redis Cluster, `{bull}` (a hash tag: every key of the queue on one shard); without it
/// the first script that names keys of two shards is refused whole with the error that
/// names the fix, and no job is added.
#[test]
fn bullmq_runs_every_job_on_a_replica_set_and_on_shards_with_a_hash_tag_prefix() {
    const JOBS: usize = 300;
    let pool = Pool::start();
    let dir = pool.proxy.proxy.dir().to_path_buf();
    let t0 = Instant::now();
    let (code, out) = bullmq(pool.proxy.port, JOBS, "bull", &dir.join("bullmq-rs.log"));
    assert_eq!(code, Some(0), "replica set:\n{out}");
    assert!(out.trim_end().ends_with("ok"), "replica set:\n{out}");
    println!(
        "bullmq, replica set: {JOBS} jobs and 5 more in {:?}\n{out}",
        t0.elapsed()
    );

    // twemproxy's `hash_tag: "{}"`, as a pool for Redis Cluster clients would have.
    let env = common::Setup::new(2).hash_tag().start();
    let t0 = Instant::now();
    let (code, out) = bullmq(env.port, JOBS, "{bull}", &dir.join("bullmq-shards.log"));
    assert_eq!(code, Some(0), "two shards, prefix {{bull}}:\n{out}");
    println!(
        "bullmq, two shards: {JOBS} jobs and 5 more in {:?}\n{out}",
        t0.elapsed()
    );
    let on = |i: usize| match env.backend(i).cmd(&["DBSIZE"]) {
        Reply::Int(n) => n,
        other => panic!("DBSIZE: {other:?}"),
    };
    let (a, b) = (on(0), on(1));
    assert!(
        a == 0 || b == 0,
        "the queue's keys spread over both shards: {a} and {b}"
    );

    let (code, out) = bullmq(env.port, JOBS, "plain", &dir.join("bullmq-plain.log"));
    assert_eq!(code, Some(2), "two shards, no hash tag:\n{out}");
    assert!(out.contains("give them a common hash tag"), "{out}");
    // Only the queue's one-key metadata hash was written (BullMQ writes it by itself when
    // the worker starts): no job, counter or list.
    let plain = |i: usize| match env.backend(i).cmd(&["KEYS", "plain:*"]) {
        Reply::Array(Some(k)) => k,
        other => panic!("KEYS: {other:?}"),
    };
    let mut written = plain(0);
    written.extend(plain(1));
    assert!(
        written.iter().all(|k| *k == Reply::bulk("plain:jobs:meta")),
        "keys written without the hash tag: {written:?}"
    );
}

/// The ids in the set `key`, read straight from `server`.
fn members(server: &RedisServer, key: &str) -> HashSet<u64> {
    match server.cmd(&["SMEMBERS", key]) {
        Reply::Array(Some(items)) => items
            .iter()
            .filter_map(|r| r.as_str()?.parse().ok())
            .collect(),
        other => panic!("SMEMBERS {key}: {other:?}"),
    }
}

/// Sidekiq keeps working across a Sentinel failover (SENTINEL FAILOVER while jobs are pushed
/// and run): every push that was acknowledged is run, except jobs Sidekiq's basic fetch had
/// already popped from the old primary, at most one per Sidekiq thread (5), as without rampart.
/// Prints how many were lost and the lines Sidekiq logged at ERROR.
#[test]
fn sidekiq_across_a_sentinel_failover() {
    const JOBS: usize = 2000;
    let s = SentinelSetup::start("  read_policy: prefer-replica\n");
    let url = format!("redis://{}/0", s.proxy.addr());
    let dir = s.proxy.proxy.dir().to_path_buf();
    let log = dir.join("sidekiq.log");
    let mut server = sidekiq_server(&url, &log);
    let pusher = {
        let (url, log) = (url.clone(), dir.join("push.log"));
        std::thread::spawn(move || sidekiq_push(&url, JOBS, "0.003", &log))
    };
    // Before the failover Sidekiq must run cleanly: an error then fails the test at once.
    let started = poll_until(Duration::from_secs(60), || {
        let text = testkit::process::read_lossy(&log);
        let ran = scard(&s.primary, "apps:done") >= 300;
        (ran || !sidekiq_errors(&text).is_empty()).then_some(ran)
    });
    if started != Some(true) {
        // The pushes end on their own (each one fails fast): let its process be reaped.
        let _ = pusher.join();
        panic!(
            "300 jobs did not run before the failover; sidekiq log:\n{}",
            testkit::process::read_lossy(&log)
        );
    }
    let t0 = Instant::now();
    assert_eq!(
        s.sentinels[0].cmd(&["SENTINEL", "FAILOVER", MASTER]),
        Reply::ok()
    );
    let (took, port) = s.wait_switch(t0, Duration::from_secs(30));
    println!("Sentinel named a new primary after {took:?}");
    let (acked, failed) = pusher
        .join()
        .unwrap_or_else(|_| panic!("the push thread panicked"));
    let primary = s.node_on(port);
    // Done when the queue is empty and the count holds still for 3 s.
    let mut last = (-1, Instant::now());
    let settled = poll_until(Duration::from_secs(90), || {
        let n = scard(primary, "apps:done");
        if n != last.0 {
            last = (n, Instant::now());
        }
        let empty = primary.cmd(&["LLEN", "queue:default"]) == Reply::Int(0);
        (empty && last.1.elapsed() > Duration::from_secs(3)).then_some(n)
    });
    server.signal("TERM");
    let exit = server.wait_exit(Duration::from_secs(20));
    let text = testkit::process::read_lossy(&log);
    assert!(
        settled.is_some(),
        "jobs did not settle; sidekiq log:\n{text}"
    );
    let done = members(primary, "apps:done");
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|id| !done.contains(id))
        .collect();
    println!(
        "{} pushes acknowledged, {} failed ({:?}), {} jobs run, {} acknowledged jobs lost {lost:?}",
        acked.len(),
        failed.len(),
        &failed[..failed.len().min(3)],
        done.len(),
        lost.len()
    );
    println!("sidekiq errors: {:#?}", sidekiq_errors(&text));
    println!("sidekiq stopped: {exit:?}");
    assert!(
        lost.len() <= 5,
        "{} acknowledged jobs never ran: {lost:?}\nfailover:{}\nproxy log:\n{}",
        lost.len(),
        s.failover_log(),
        s.proxy.log()
    );
}

/// The password of the proxy user `app` (the applications' user in the TLS tests).
const APP_PW: &str = "app-pw-4f1c";
/// The password rampart gives the TLS servers, as their ACL user `rampart`.
const BACKEND_PW: &str = "backend-pw-9e2d";

/// `sha256(pw)` in hex, as `password_sha256:` takes it.
fn sha256_hex(pw: &str) -> String {
    rampart_config::sha256(pw.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Two pools in one rampart, each also on a TLS listener (a certificate for 127.0.0.1 from
/// a test CA), each with the proxy user `app` (password [`APP_PW`], rules `rules`) and `ops`
/// (INFO only, to wait for the replica):
/// Every server is TLS-only (`backend_tls:` with the CA), and rampart logs in to each as its
/// ACL user `rampart` ([`BACKEND_PW`]; `default` is off), a user no client holds.
/// - `shards`: two servers, `hash_tag: "{}"`; its TLS listener also takes client
///   certificates (`optional`), whose common name names the user (`auth_clients_user: CN`);
/// - `rs`: a primary and its replica (replicating over TLS as `rampart`),
///   `read_policy: prefer-replica` with `read_your_writes: 2s` (the clients check their own
///   writes at once).
struct TlsPools {
    dir: tempfile::TempDir,
    ca: ca::Ca,
    proxy: testkit::Proxy,
    shards_tls: u16,
    rs_tls: u16,
    _shards: Vec<TlsRedis>,
    rs_primary: TlsRedis,
    rs_replica: TlsRedis,
}

impl TlsPools {
    fn start(rules: &str) -> TlsPools {
        TlsPools::start_users(&[("app", rules)])
    }

    /// Like [`TlsPools::start`], with the users `users` (name, rules), each with the password
    /// [`APP_PW`], in both pools.
    fn start_users(users_rules: &[(&str, &str)]) -> TlsPools {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ca::Ca::new(dir.path(), "ca");
        let listener = ca.issue("proxy", "rampart");
        let redis = ca.issue("redis", "redis");
        let backend_user = format!(">{BACKEND_PW}");
        // rampart's own user on every server; `default` is off, so nothing else gets in.
        let users_args = [
            "--user",
            "rampart",
            "on",
            &backend_user,
            "~*",
            "&*",
            "+@all",
            "--user",
            "default",
            "off",
        ];
        let shards: Vec<TlsRedis> = (0..2)
            .map(|_| TlsRedis::start(&redis, "no", &users_args))
            .collect();
        let mut primary_args = vec!["--tls-replication", "yes"];
        primary_args.extend(users_args);
        let rs_primary = TlsRedis::start(&redis, "no", &primary_args);
        let primary_port = rs_primary.port().to_string();
        let mut replica_args = primary_args.clone();
        replica_args.extend(["--replicaof", "127.0.0.1", &primary_port]);
        replica_args.extend(["--masteruser", "rampart", "--masterauth", BACKEND_PW]);
        let rs_replica = TlsRedis::start(&redis, "no", &replica_args);
        let mut users = String::from("  users:\n");
        for (name, rules) in users_rules.iter().chain(&[("ops", "on +info")]) {
            users.push_str(&format!(
                "    - name: {name}\n      password_sha256: {}\n      rules: {rules}\n",
                sha256_hex(APP_PW)
            ));
        }
        let tls = |extra: &str| {
            format!(
                "  tls:\n    cert: {}\n    key: {}\n{extra}",
                listener.cert.display(),
                listener.key.display()
            )
        };
        let [shards_port, shards_tls, rs_port, rs_tls] = [(); 4].map(|()| testkit::free_port());
        let backend = format!(
            "  redis_username: rampart\n  redis_auth: {BACKEND_PW}\n  backend_tls:\n    ca: {}\n",
            ca.pem().display()
        );
        let yaml = format!(
            "shards:\n  listen: 127.0.0.1:{shards_port}\n  tls_listen: 127.0.0.1:{shards_tls}\n{}{users}  hash_tag: \"{{}}\"\n{backend}  servers:\n   - {}:1 s0\n   - {}:1 s1\n\
             rs:\n  listen: 127.0.0.1:{rs_port}\n  tls_listen: 127.0.0.1:{rs_tls}\n{}{users}{backend}{}",
            tls(&format!(
                "    client_ca: {}\n    client_auth: optional\n    auth_clients_user: CN\n",
                ca.pem().display()
            )),
            shards[0].addr(),
            shards[1].addr(),
            tls(""),
            short_form(
                &rs_primary.addr(),
                &[rs_replica.addr()],
                &format!("  read_policy: prefer-replica\n  read_your_writes: 2s\n{FAST_CHECKS}")
            ),
        );
        let proxy = common::start_rampart(&yaml, shards_port, 2);
        for port in [shards_tls, rs_port, rs_tls] {
            testkit::wait_until(Duration::from_secs(10), "a listener", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
        // The replica serves reads once its checks have seen both offsets.
        let mut ops = testkit::Client::connect(&format!("127.0.0.1:{rs_port}"));
        assert_eq!(ops.cmd(&["AUTH", "ops", APP_PW]), Reply::ok());
        let replica_up = poll_until(Duration::from_secs(15), || {
            let info = ops.cmd(&["INFO", "pools"]);
            let text = info.as_str().unwrap_or_default();
            text.lines()
                .any(|l| l.contains(&rs_replica.addr()) && l.contains("status=up"))
                .then_some(())
        });
        assert!(
            replica_up.is_some(),
            "the replica of `rs` never came up: {:?}",
            ops.cmd(&["INFO", "pools"])
        );
        TlsPools {
            dir,
            ca,
            proxy,
            shards_tls,
            rs_tls,
            _shards: shards,
            rs_primary,
            rs_replica,
        }
    }

    /// `args` run straight on `server` with redis-cli as `rampart`; its output.
    fn cli(&self, server: &TlsRedis, args: &[&str]) -> String {
        let mut all = vec![
            "--user",
            "rampart",
            "--pass",
            BACKEND_PW,
            "--no-auth-warning",
        ];
        all.extend(args);
        let (ok, out) = testkit::redis_cli_tls(server.port(), None, &self.ca.pem(), &all);
        assert!(ok, "{args:?}: {out}");
        out
    }

    /// `args` run straight on the replica of `rs`; redis-cli's output.
    fn rs_replica_cmd(&self, args: &[&str]) -> String {
        self.cli(&self.rs_replica, args)
    }

    /// `SCARD key` read straight from the primary of `rs`.
    fn rs_scard(&self, key: &str) -> i64 {
        let out = self.cli(&self.rs_primary, &["SCARD", key]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("SCARD {key}: {out}"))
    }

    /// The TLS ports with the pools' names.
    fn tls_ports(&self) -> [(&'static str, u16); 2] {
        [("shards", self.shards_tls), ("rs", self.rs_tls)]
    }
}

/// What an operator gives an application's user when its keys and channels share a prefix.
const APP_RULES: &str = "on +@all -@dangerous ~app:* &app:*";

/// redis-py (its defaults: HELLO with AUTH, CLIENT SETINFO) over TLS with a CA, as the proxy
/// user `app`, in RESP2 and RESP3, on a pool of two TLS servers whose own user and password
/// the client never holds and on a replica set with `prefer-replica` reads: commands, a
/// pipeline, MULTI/EXEC, BLPOP woken by another client, a subscription and its message,
/// NOPERM (key, command, a refused key inside MULTI) raised as `NoPermissionError` or
/// `ExecAbortError` with the connection still serving. Then with a client certificate whose
/// common name is the user, without AUTH.
#[test]
fn redis_py_over_tls_as_a_proxy_user_on_each_pool_kind_and_by_certificate() {
    let libs = common::client_libs();
    let pools = TlsPools::start(APP_RULES);
    let app_cert = pools.ca.issue("app", "app");
    let script = scripts().join("tls_redis_py.py");
    let run = |what: &str, port: u16, extra: &[&str]| {
        let mut cmd = Command::new("python3");
        cmd.env("PYTHONPATH", libs.join("py"))
            .arg(&script)
            .arg(port.to_string())
            .arg(pools.ca.pem())
            .args(["app", APP_PW, "2,3"])
            .args(extra);
        let log = pools.dir.path().join(format!("{what}.log"));
        let out = run_to_end(what, cmd, &log, Duration::from_secs(60));
        assert!(out.trim_end().ends_with("ok"), "{what}:\n{out}");
    };
    for (name, port) in pools.tls_ports() {
        run(&format!("redis-py-{name}"), port, &[]);
    }
    let (cert, key) = (app_cert.cert.display(), app_cert.key.display());
    run(
        "redis-py-mtls",
        pools.shards_tls,
        &[&cert.to_string(), &key.to_string()],
    );
    assert!(
        !pools.proxy.stderr().contains(BACKEND_PW) && !pools.proxy.stderr().contains(APP_PW),
        "a password in the log"
    );
    let stats = pools.rs_replica_cmd(&["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_get:calls="),
        "the replica served no read:\n{stats}"
    );
}

/// node-redis (RESP2 and RESP3) and ioredis, then Ruby's redis gem (Sidekiq's client, `AUTH
/// user pass`), over TLS with a CA as the proxy user `app`, on both pools of [`TlsPools`]:
/// commands, a pipeline, MULTI/EXEC, BLPOP woken by another client, a subscription and its
/// message, NOPERM as each library's own error type with the connection still serving.
#[test]
fn node_and_ruby_clients_over_tls_as_a_proxy_user_on_each_pool_kind() {
    let libs = common::client_libs();
    let pools = TlsPools::start(APP_RULES);
    for (name, port) in pools.tls_ports() {
        let mut node = Command::new("node");
        node.env("NODE_PATH", libs.join("node/node_modules"))
            .arg(scripts().join("tls_node.js"))
            .arg(port.to_string())
            .arg(pools.ca.pem())
            .args(["app", APP_PW]);
        let what = format!("node-{name}");
        let log = pools.dir.path().join(format!("{what}.log"));
        let t0 = Instant::now();
        let out = run_to_end(&what, node, &log, Duration::from_secs(60));
        assert!(out.trim_end().ends_with("ok"), "{what}:\n{out}");
        println!("{what}: {:?}", t0.elapsed());
        let mut ruby = Command::new("ruby");
        ruby.arg(scripts().join("tls_redis_rb.rb"))
            .arg(port.to_string())
            .arg(pools.ca.pem())
            .args(["app", APP_PW]);
        let what = format!("ruby-{name}");
        let log = pools.dir.path().join(format!("{what}.log"));
        let t0 = Instant::now();
        let out = run_to_end(&what, ruby, &log, Duration::from_secs(60));
        assert!(out.trim_end().ends_with("ok"), "{what}:\n{out}");
        println!("{what}: {:?}", t0.elapsed());
    }
}

/// The rules an operator gives Sidekiq's user: its keys have no common prefix (`queues`,
/// `queue:*`, `schedule`, `retry`, `dead`, `processes`, `stat:*`, and the process' own keys
/// under its identity `HOSTNAME:PID:*`, here `DYNO`), it needs INFO at start (Sidekiq 6
/// stops when INFO is refused), and this test's job writes `apps:*`.
const SIDEKIQ_RULES: &str = "on +@all -@dangerous +info ~queue:* ~queues ~schedule ~retry ~dead ~processes ~stat:* ~worker1:* ~apps:*";
/// BullMQ's user: its key prefix (a hash tag, so a queue lives on one shard), and INFO (BullMQ
/// reads the server's version from it and stops without it).
const BULLMQ_RULES: &str = "on +@all -@dangerous +info ~{bull}:*";

/// Job queues over TLS as proxy users with the rules an operator writes for them
/// ([`SIDEKIQ_RULES`], [`BULLMQ_RULES`]): 300 Sidekiq jobs pushed by Sidekiq's client and run by
/// a Sidekiq server on the replica set (`rediss://` with a CA, `AUTH user pass`), counted on
/// the primary, with no error logged; then BullMQ (ioredis) with 300 jobs and its special
/// ones (retries, delayed, prioritised, a flow) on the two TLS shards, whose servers know
/// only rampart's own user.
#[test]
fn sidekiq_and_bullmq_over_tls_as_proxy_users_with_their_rules() {
    const JOBS: usize = 300;
    let pools = TlsPools::start_users(&[("sidekiq", SIDEKIQ_RULES), ("bullmq", BULLMQ_RULES)]);
    let dir = pools.dir.path();
    let ca = pools.ca.pem();
    let ca = ca.to_string_lossy();
    let url = format!("rediss://sidekiq:{APP_PW}@127.0.0.1:{}/0", pools.rs_tls);
    let envs = [("REDIS_CA", ca.as_ref()), ("DYNO", "worker1")];
    let t0 = Instant::now();
    let (acked, failed) = sidekiq_push_with(&url, &envs, JOBS, "0", &dir.join("push.log"));
    assert!(
        failed.is_empty(),
        "pushes failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert_eq!(acked.len(), JOBS);
    let log = dir.join("sidekiq.log");
    let mut server = sidekiq_server_with(&url, &envs, &log);
    let done = poll_until(Duration::from_secs(60), || {
        let text = testkit::process::read_lossy(&log);
        let all = pools.rs_scard("apps:done") == JOBS as i64;
        (all || !sidekiq_errors(&text).is_empty()).then_some(all)
    });
    server.signal("TERM");
    let exit = server.wait_exit(Duration::from_secs(20));
    let text = testkit::process::read_lossy(&log);
    assert!(
        done == Some(true),
        "{} of {JOBS} jobs ran; sidekiq log:\n{text}\nproxy log:\n{}",
        pools.rs_scard("apps:done"),
        pools.proxy.stderr()
    );
    assert!(
        exit.is_some_and(|s| s.success()),
        "sidekiq did not stop cleanly ({exit:?}):\n{text}"
    );
    assert!(
        sidekiq_errors(&text).is_empty(),
        "sidekiq logged errors:\n{text}"
    );
    println!(
        "sidekiq over TLS: {JOBS} jobs pushed and run in {:?}",
        t0.elapsed()
    );

    let t0 = Instant::now();
    let envs = [
        ("RAMPART_TLS_CA", ca.as_ref()),
        ("RAMPART_USER", "bullmq"),
        ("RAMPART_PASSWORD", APP_PW),
    ];
    let (code, out) = bullmq_with(
        pools.shards_tls,
        &envs,
        JOBS,
        "{bull}",
        &dir.join("bullmq.log"),
    );
    assert_eq!(code, Some(0), "bullmq over TLS:\n{out}");
    assert!(out.trim_end().ends_with("ok"), "bullmq over TLS:\n{out}");
    println!(
        "bullmq over TLS: {JOBS} jobs and 5 more in {:?}\n{out}",
        t0.elapsed()
    );
}

/// A Sentinel pool served over TLS to proxy users: redis-py over TLS as `app` (its defaults,
/// RESP3) writes, reads back, counts and hears its own messages while an admin user runs
/// `RAMPART SWITCHOVER`: no command fails, the counter on the new primary equals the
/// rounds the client saw, and its subscription hears messages published after the switch.
#[test]
fn redis_py_over_tls_keeps_working_through_a_sentinel_switchover() {
    let libs = common::client_libs();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca::Ca::new(dir.path(), "ca");
    let listener = ca.issue("proxy", "rampart");
    let tls_port = testkit::free_port();
    let setup = Instant::now();
    let s = SentinelSetup::start(&format!(
        "  failover_hold: 10s\n  tls_listen: 127.0.0.1:{tls_port}\n  tls:\n    cert: {}\n    key: {}\n  users:\n    - name: default\n      nopass: true\n      rules: on +info\n    - name: app\n      password_sha256: {}\n      rules: {APP_RULES}\n    - name: ops\n      password_sha256: {}\n      rules: on +@all ~* &*\n",
        listener.cert.display(),
        listener.key.display(),
        sha256_hex(APP_PW),
        sha256_hex(BACKEND_PW),
    ));
    println!("Sentinel pool up in {:?}", setup.elapsed());
    let stop = dir.path().join("stop");
    let log = dir.path().join("switchover.log");
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONPATH", libs.join("py"))
        .arg(scripts().join("tls_switchover.py"))
        .arg(tls_port.to_string())
        .arg(ca.pem())
        .args(["app", APP_PW])
        .arg(&stop);
    let mut client = ChildGuard::spawn(cmd, "redis-py", &log);
    let started = poll_until(Duration::from_secs(10), || {
        testkit::process::read_lossy(&log)
            .contains("started")
            .then_some(())
    });
    assert!(
        started.is_some(),
        "the client did not start:\n{}",
        testkit::process::read_lossy(&log)
    );
    let mut admin = testkit::Client::connect(&s.proxy.addr());
    admin.set_read_timeout(Some(Duration::from_secs(25)));
    assert_eq!(admin.cmd(&["AUTH", "ops", BACKEND_PW]), Reply::ok());
    let t0 = Instant::now();
    let reply = admin.cmd(&["RAMPART", "SWITCHOVER", MASTER]);
    assert!(
        matches!(&reply, Reply::Simple(t) if t.contains("switched to")),
        "{reply:?}\n{}",
        s.proxy.log()
    );
    let (_, new_port) = s.wait_switch(t0, Duration::from_secs(10));
    println!("RAMPART SWITCHOVER done in {:?}", t0.elapsed());
    // Two more seconds of traffic on the new primary.
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&stop, "").expect("stop file");
    let exit = client.wait_exit(Duration::from_secs(20));
    client.kill();
    let out = testkit::process::read_lossy(&log);
    println!("switchover over TLS: {out}");
    assert!(
        exit.is_some_and(|e| e.success()),
        "the client saw errors ({exit:?}):\n{out}\nproxy log:\n{}",
        s.proxy.log()
    );
    let rounds: i64 = out
        .lines()
        .find_map(|l| l.strip_prefix("rounds ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary:\n{out}"));
    let on_new = s.replica_on(new_port).cmd(&["GET", "app:n"]);
    assert_eq!(on_new, Reply::bulk(rounds.to_string()), "{out}");
}
