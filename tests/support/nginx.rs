//! A real nginx serving a directory on 127.0.0.1, for range-request tests.
//!
//! [`Nginx::start`] writes a config into a temporary prefix (pid file, error and access logs and
//! every temp path there; `daemon off`, `master_process off`), starts `/usr/sbin/nginx` on a free
//! port and waits until it answers; dropping it kills the process and removes the prefix. The
//! access log records, per request, the path, the `Range` header, the status and the body bytes
//! sent.

use super::btrfs_fixture::skip_or_panic;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";

/// One request of the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The path, without the leading `/`.
    pub path: String,
    /// The Range header, if any.
    pub range: Option<String>,
    /// The status sent.
    pub status: u16,
    /// Body bytes sent.
    pub sent: u64,
}

/// A running nginx, killed on drop.
pub struct Nginx {
    child: Child,
    port: u16,
    prefix: tempfile::TempDir,
}

/// A port free on 127.0.0.1 right now (another process may take it before it is used: callers
/// retry).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Waits until `port` on 127.0.0.1 accepts connections: true, or false when `child` exits first
/// or 10 s pass.
pub fn wait_for_port(port: u16, child: &mut Child) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Nginx {
    /// Starts nginx serving `root`, or returns `None` (after [`skip_or_panic`]) when nginx is
    /// not installed.
    pub fn start(root: &Path) -> Option<Nginx> {
        if !Path::new(NGINX).is_file() {
            skip_or_panic(&format!(
                "{NGINX} is needed (scripts/setup.sh installs nginx)"
            ));
            return None;
        }
        let root = fs::canonicalize(root).expect("canonicalize the served directory");
        let mut last = String::new();
        // A port taken between free_port() and nginx's bind is retried with another.
        for _ in 0..5 {
            let prefix = tempfile::tempdir().expect("nginx prefix");
            let port = free_port();
            let conf = prefix.path().join("nginx.conf");
            fs::write(&conf, config(prefix.path(), &root, port)).expect("write nginx.conf");
            let mut child = Command::new(NGINX)
                .arg("-p")
                .arg(prefix.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(prefix.path().join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx");
            if wait_for_port(port, &mut child) {
                return Some(Nginx {
                    child,
                    port,
                    prefix,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            last = fs::read_to_string(prefix.path().join("error.log")).unwrap_or_default();
        }
        panic!("nginx did not start; its error log:\n{last}");
    }

    /// The base URL, ending in `/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn access_log(&self) -> PathBuf {
        self.prefix.path().join("access.log")
    }

    /// The requests answered so far, in order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        fs::read_to_string(self.access_log())
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                assert_eq!(f.len(), 4, "access log line {l:?}");
                LoggedRequest {
                    path: f[0].trim_start_matches('/').to_string(),
                    range: (f[1] != "-").then(|| f[1].to_string()),
                    status: f[2].parse().expect("status"),
                    sent: f[3].parse().expect("bytes sent"),
                }
            })
            .collect()
    }

    /// Forgets the requests logged so far.
    pub fn clear_log(&self) {
        fs::write(self.access_log(), "").expect("truncate the access log");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(prefix: &Path, root: &Path, port: u16) -> String {
    let p = prefix.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{
    worker_connections 64;
}}
http {{
    log_format ranges '$uri\t$http_range\t$status\t$body_bytes_sent';
    access_log {p}/access.log ranges;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"#,
        root = root.display()
    )
}
