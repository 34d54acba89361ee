//! A real `redis-server` for tests: started on a free port in a temporary
//! directory, killed on drop. Tests of the worker, the end-to-end suite and the
//! sandbox use real Redis, never a mock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failing loudly is the point

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` owned by one test; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    aof: bool,
}

impl RedisServer {
    pub fn start(aof: bool) -> Self {
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            aof,
        };
        s.spawn(true);
        s
    }

    /// Starts `redis-server` and waits for `PING`. A process that exits at once (the port was
    /// taken between [`free_port`] and the bind, which happens when many suites run at the same
    /// time) is started again: on a new port when `may_move`, else on the same one. The deadline
    /// is generous because a loaded 2-core machine can take seconds to start a process.
    fn spawn(&mut self, may_move: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = self
                .command()
                .spawn()
                .expect("redis-server must be installed");
            let up = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                if self.answers_as(child.id()) {
                    break true;
                }
                assert!(
                    Instant::now() < deadline,
                    "redis-server did not come up on port {}",
                    self.port
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            if up {
                self.child = Some(child);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server kept exiting on start (port {})",
                self.port
            );
            if may_move {
                self.port = free_port();
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Our process (`pid`, not another suite's server that took the port) answers `PING` with
    /// PONG, not LOADING: AOF replay finishes before Redis answers.
    fn answers_as(&self, pid: u32) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut c) = client.get_connection() else {
            return false;
        };
        if redis::cmd("PING").query::<String>(&mut c).is_err() {
            return false;
        }
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut c)
            .unwrap_or_default();
        info.lines()
            .any(|l| l.trim() == format!("process_id:{pid}"))
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(if self.aof { "yes" } else { "no" })
            .arg("--dir")
            .arg(self.dir.path());
        if self.aof {
            // Every acknowledged write is on disk before Redis answers: a SIGKILL loses nothing.
            cmd.arg("--appendfsync").arg("always");
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn(false);
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
