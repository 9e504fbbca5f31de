//! Several replicas on one machine, behind a real load balancer: three `scoria up` processes
//! behind HAProxy (Debian's package) with health checks on `/readyz`, under load:
//!
//! 1. one replica is killed (SIGKILL): every request still succeeds, within the retry policy
//!    below;
//! 2. a rolling restart through SIGTERM, one replica at a time, each replaced on its port
//!    once the old one has drained: no request fails.
//!
//! The retry policy (deploy/README.md): HAProxy buffers each request and retries it, at most
//! 3 times and on another replica, when the connection fails or is closed without an answer,
//! or the replica answers 503 (starting, draining or full: nothing was computed).
//! Scoring is idempotent, so replaying a POST is safe. A replica that has received SIGTERM
//! stops accepting connections and finishes what it has, and fails its health check.
//!
//! Needs `haproxy` on PATH (`apt-get install haproxy`; `.ci/run` installs it).

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A replica on `port` (the same port each time, as HAProxy's server lines say).
fn replica(port: u16) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scoria"));
    cmd.current_dir(root())
        .args([
            "up",
            "--manifest",
            "spin.toml",
            "--drain-timeout",
            "10",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"));
    Server::spawn(cmd, port)
}

fn haproxy_config(listen: u16, servers: &[u16]) -> String {
    let mut cfg = format!(
        r#"global
    maxconn 512
    # Requests are replayed only if they fit in a buffer whole: room for a photo.
    tune.bufsize 1048576
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # Retry a request on another replica when it cannot be delivered, gets no answer, or
    # gets 503 (a replica starting, draining or full says 503 before doing any work).
    option http-buffer-request
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response junk-response response-timeout 503
frontend scoring
    bind 127.0.0.1:{listen}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 200ms fall 2 rise 2
"#
    );
    for (i, port) in servers.iter().enumerate() {
        cfg.push_str(&format!("    server r{i} 127.0.0.1:{port} check\n"));
    }
    cfg
}

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Clients sending photos through the load balancer until stopped; every status is kept.
struct Load {
    stop: Arc<AtomicBool>,
    statuses: Arc<Mutex<Vec<u16>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, statuses, url) = (stop.clone(), statuses.clone(), url.clone());
                std::thread::spawn(move || {
                    let client = client();
                    let photo = photo("chelsea.jpg");
                    while !stop.load(Ordering::SeqCst) {
                        let status = client
                            .post(&url)
                            .header("content-type", "image/jpeg")
                            .body(photo.clone())
                            .send()
                            .map(|r| r.status().as_u16())
                            .unwrap_or(0);
                        statuses.lock().unwrap().push(status);
                    }
                })
            })
            .collect();
        Load {
            stop,
            statuses,
            threads,
        }
    }

    /// `(requests, failures)` so far.
    fn counts(&self) -> (usize, usize) {
        let s = self.statuses.lock().unwrap();
        (s.len(), s.iter().filter(|&&c| c != 200).count())
    }

    /// The statuses that were not 200 (0: no answer).
    fn failures(&self) -> Vec<u16> {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|&c| c != 200)
            .collect()
    }

    fn finish(self) -> Vec<u16> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.statuses).unwrap().into_inner().unwrap()
    }
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_replicas_behind_haproxy_survive_a_kill_and_a_rolling_restart() {
    let ports = [free_port(), free_port(), free_port()];
    let mut replicas: Vec<Server> = ports.iter().map(|&p| replica(p)).collect();
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config(listen, &ports)).unwrap();
    let _lb = Haproxy(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy is not installed: apt-get install haproxy"),
    );
    let base = format!("http://127.0.0.1:{listen}");
    wait_until("HAProxy to serve", || {
        client()
            .get(format!("{base}/readyz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });

    let load = Load::start(format!("{base}/classify"), 4);
    wait_until("the first answers", || load.counts().0 >= 20);

    // 1. A replica dies without warning.
    replicas[0].child.kill().unwrap();
    replicas[0].child.wait().unwrap();
    let at_kill = load.counts().0;
    wait_until("answers after the kill", || load.counts().0 >= at_kill + 40);
    let (n, failed) = load.counts();
    assert_eq!(
        failed,
        0,
        "{failed} of {n} requests failed after a replica was killed: {:?}",
        load.failures()
    );
    replicas[0] = replica(ports[0]);

    // 2. Rolling restart: SIGTERM, wait for the drain and exit, start the new one, wait until
    // it is ready and back in rotation, then the next.
    for i in 0..replicas.len() {
        replicas[i].terminate();
        let status = replicas[i].child.wait().unwrap();
        assert!(status.success(), "replica {i} exited with {status} after SIGTERM");
        replicas[i] = replica(ports[i]);
        let before = load.counts().0;
        wait_until("answers after a restart", || load.counts().0 >= before + 20);
    }

    let statuses = load.finish();
    let failed: Vec<&u16> = statuses.iter().filter(|&&c| c != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed (0 = no answer): {failed:?}",
        failed.len(),
        statuses.len()
    );
    eprintln!(
        "{} requests through HAProxy, one replica killed and all three restarted: none failed",
        statuses.len()
    );
}
