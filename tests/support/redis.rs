//! A real `redis-server` as a child process, for the tests of the shared delivery state.
//!
//! ```ignore
//! #[path = "../support/redis.rs"]
//! mod redis_server;
//!
//! let redis = redis_server::RedisServer::start();
//! // state: {backend: redis, url: <redis.url()>}
//! redis.stop();        // Redis goes away; the port stays reserved for…
//! redis.start_again(); // …the same server address again (empty: nothing is saved)
//! ```
//!
//! Each server listens on a free port of 127.0.0.1 with its own temp dir, persists
//! nothing (`--save "" --appendonly no`) and is killed when dropped. The binary is
//! `$REDIS_SERVER`, else `redis-server` on `PATH`; when there is none, starting panics with
//! the install instruction, so that a run which asked for these tests cannot pass without
//! them. Readiness and [`RedisServer::command`] speak RESP over a plain `TcpStream`: no
//! Redis client library is needed.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to answer PING after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`RedisServer::start_again`] keeps trying to bind the old port.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);
/// Read and write timeout of one command.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const POLL_EVERY: Duration = Duration::from_millis(20);

/// A `redis-server` child process on 127.0.0.1. Killed (and reaped) on drop.
pub struct RedisServer {
    port: u16,
    password: Option<String>,
    binary: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    // Declared last: removed after the process is gone.
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server without a password on a free port; returns once it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_inner(None)
    }

    /// Starts a server with `--requirepass password`; [`url`](Self::url) carries it.
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_inner(Some(password.to_string()))
    }

    fn start_inner(password: Option<String>) -> RedisServer {
        let binary = redis_binary();
        let dir = tempfile::Builder::new()
            .prefix("alertmanager-wecom-redis-")
            .tempdir()
            .expect("temp dir for redis-server");
        let log = dir.path().join("redis-server.log");
        let mut server = RedisServer {
            port: 0,
            password,
            binary,
            child: None,
            log,
            dir,
        };
        // Another process can take the port between our probe and the server's bind: try
        // again on another one.
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(why) => assert!(
                    attempt < ATTEMPTS,
                    "redis-server did not start, {ATTEMPTS} times: {why}; its output:\n{}",
                    server.log()
                ),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0`, or `redis://:PASSWORD@127.0.0.1:PORT/0` (the password
    /// percent-encoded) when the server has one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{}@127.0.0.1:{}/0", percent_encode(password), self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// `redis://127.0.0.1:PORT/0` even when the server has a password (to test a missing
    /// or wrong one).
    pub fn url_without_password(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Whether the server process is running (between `start`/`start_again` and `stop`).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits for it to exit. The
    /// port stays this server's: [`start_again`](Self::start_again) reuses it. Its data is
    /// gone: nothing is saved.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop); stops it
    /// first if it is running) and returns once it answers PING. Keeps trying for a while
    /// if the port cannot be bound yet (a socket of the old server in TIME_WAIT, or a
    /// client's connection attempt in the way).
    pub fn start_again(&mut self) {
        self.stop();
        let deadline = Instant::now() + REBIND_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(why) => assert!(
                    Instant::now() < deadline,
                    "redis-server did not start again on port {} within {REBIND_TIMEOUT:?}: \
                     {why}; its output:\n{}",
                    self.port,
                    self.log()
                ),
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything the server wrote (all runs, appended).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// The server's working directory (its temp dir).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends one command (authenticating first when the server has a password) on a new
    /// connection and returns the reply, e.g. `command(&["DBSIZE"])`.
    pub fn command(&self, args: &[&str]) -> Result<Reply, String> {
        let mut connection = Connection::open(self.port)?;
        if let Some(password) = &self.password {
            match connection.call(&["AUTH", password])? {
                Reply::Simple(ok) if ok == "OK" => {}
                other => return Err(format!("AUTH answered {other:?}")),
            }
        }
        connection.call(args)
    }

    /// The keys matching `pattern` (KEYS: fine for a test server), sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        match self.command(&["KEYS", pattern]) {
            Ok(Reply::Array(Some(items))) => {
                let mut keys: Vec<String> = items
                    .into_iter()
                    .map(|item| match item {
                        Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
                        other => panic!("KEYS {pattern}: unexpected item {other:?}"),
                    })
                    .collect();
                keys.sort();
                keys
            }
            other => panic!("KEYS {pattern}: {other:?}"),
        }
    }

    /// Spawns the server on `self.port` and waits until it answers PING; `Err` if it exited
    /// first (typically: the port is taken) — it is then reaped and `self.child` is `None`.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open redis-server's log file");
        let err = out.try_clone().expect("clone log file");
        let mut command = Command::new(&self.binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--daemonize")
            .arg("no")
            // DEBUG SLEEP lets a test stall the server (a slow Redis), from loopback only.
            .arg("--enable-debug-command")
            .arg("local")
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(password) = &self.password {
            command.arg("--requirepass").arg(password);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("just spawned");
            if let Some(status) = child.try_wait().expect("redis-server's status") {
                self.child = None;
                return Err(format!("it exited ({status}) on port {}", self.port));
            }
            if self.answers_ping() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!("no PONG on port {} after {READY_TIMEOUT:?}", self.port));
            }
            thread::sleep(POLL_EVERY);
        }
    }

    /// Whether the server answers PING with PONG now.
    pub fn answers_ping(&self) -> bool {
        matches!(self.command(&["PING"]), Ok(Reply::Simple(pong)) if pong == "PONG")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `$REDIS_SERVER`, else `redis-server` on PATH. Panics with the install instruction when
/// there is none.
fn redis_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("REDIS_SERVER") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "these tests need a real Redis and none was found (redis-server on PATH, or \
                 $REDIS_SERVER): apt-get install -y redis-server"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Everything but RFC 3986's unreserved characters as `%XX`.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// RESP, just enough for tests

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$…`; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*…`; `None` for the null array.
    Array(Option<Vec<Reply>>),
}

struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    fn open(port: u16) -> Result<Connection, String> {
        let address = ("127.0.0.1", port);
        let stream = TcpStream::connect(address).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(Connection {
            reader: BufReader::new(stream),
            writer,
        })
    }

    fn call(&mut self, args: &[&str]) -> Result<Reply, String> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        self.writer
            .write_all(&request)
            .map_err(|e| format!("write: {e}"))?;
        read_reply(&mut self.reader)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.writer.shutdown(Shutdown::Both);
    }
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    let n = reader.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("connection closed".into());
    }
    let line = line
        .strip_suffix("\r\n")
        .ok_or_else(|| format!("reply line without CRLF: {line:?}"))?;
    let (kind, rest) = line.split_at(1.min(line.len()));
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| format!("bad number in reply line {line:?}"))
    };
    Ok(match kind {
        "+" => Reply::Simple(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Integer(number()?),
        "$" => match number()? {
            -1 => Reply::Bulk(None),
            len if len >= 0 => {
                let mut bytes = vec![0; len as usize + 2];
                reader.read_exact(&mut bytes).map_err(|e| format!("read: {e}"))?;
                bytes.truncate(len as usize);
                Reply::Bulk(Some(bytes))
            }
            _ => return Err(format!("bad bulk length in {line:?}")),
        },
        "*" => match number()? {
            -1 => Reply::Array(None),
            len if len >= 0 => Reply::Array(Some(
                (0..len).map(|_| read_reply(reader)).collect::<Result<_, _>>()?,
            )),
            _ => return Err(format!("bad array length in {line:?}")),
        },
        _ => return Err(format!("not a RESP reply: {line:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs redis-server: apt-get install -y redis-server; run with --ignored"]
    fn a_server_answers_stops_and_starts_again_on_the_same_port_empty() {
        let mut redis = RedisServer::start();
        let port = redis.port();
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/0"));
        assert_eq!(
            redis.command(&["SET", "e2e:key", "value with spaces\r\n"]),
            Ok(Reply::Simple("OK".into()))
        );
        assert_eq!(
            redis.command(&["GET", "e2e:key"]),
            Ok(Reply::Bulk(Some(b"value with spaces\r\n".to_vec())))
        );
        assert_eq!(redis.keys("e2e:*"), ["e2e:key"]);

        redis.stop();
        assert!(!redis.is_running());
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "stopped");
        assert!(!redis.answers_ping());

        redis.start_again();
        assert_eq!(redis.port(), port);
        assert!(redis.answers_ping());
        assert_eq!(
            redis.command(&["GET", "e2e:key"]),
            Ok(Reply::Bulk(None)),
            "nothing saved"
        );
    }

    #[test]
    #[ignore = "needs redis-server: apt-get install -y redis-server; run with --ignored"]
    fn a_password_is_required_and_carried_in_the_url() {
        let redis = RedisServer::start_with_password("TESTSECRET p@ss/word");
        assert_eq!(
            redis.url(),
            format!("redis://:TESTSECRET%20p%40ss%2Fword@127.0.0.1:{}/0", redis.port())
        );
        assert!(redis.answers_ping(), "with AUTH");
        let mut anonymous = Connection::open(redis.port()).unwrap();
        assert!(
            matches!(anonymous.call(&["PING"]), Ok(Reply::Error(e)) if e.starts_with("NOAUTH")),
            "without AUTH"
        );
    }
}
