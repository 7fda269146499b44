//! A real OCI registry (Debian's `docker-registry`, the CNCF distribution registry) on
//! 127.0.0.1, for `oci://` tests.
//!
//! [`Registry::start`] writes a config into a temporary directory (filesystem storage there,
//! optionally htpasswd basic auth and TLS with a certificate from a CA made there with
//! `openssl`), starts the registry on a free port and waits until it answers; dropping it kills
//! the process and removes the directory.

use super::btrfs_fixture::skip_or_panic;
use super::nginx::{free_port, wait_for_port};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const REGISTRY: &str = "/usr/bin/docker-registry";
pub const HTPASSWD: &str = "/usr/bin/htpasswd";
pub const OPENSSL: &str = "/usr/bin/openssl";

/// A running registry, killed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    tls: bool,
    dir: tempfile::TempDir,
}

/// Makes `ca.pem` (a CA) and `server.pem`/`server.key` (for IP 127.0.0.1, signed by it) in
/// `dir`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new(OPENSSL)
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509", "-days", "2", "-subj", "/CN=subvol test CA"];
    a.extend(ec);
    a.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    a.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(&a);
    let mut a = vec!["req", "-subj", "/CN=127.0.0.1"];
    a.extend(ec);
    a.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&a);
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}

impl Registry {
    /// Starts a registry; with `user` (name, password) it requires basic auth for them, with
    /// `tls` it serves HTTPS with a certificate from a CA of its own ([`Registry::ca`]). `None`
    /// (after [`skip_or_panic`]) when the registry, `htpasswd` or `openssl` is not installed.
    pub fn start(user: Option<(&str, &str)>, tls: bool) -> Option<Registry> {
        if !Path::new(REGISTRY).is_file() {
            skip_or_panic(&format!(
                "{REGISTRY} is needed (scripts/setup.sh installs docker-registry)"
            ));
            return None;
        }
        if user.is_some() && !Path::new(HTPASSWD).is_file() {
            skip_or_panic(&format!(
                "{HTPASSWD} is needed (scripts/setup.sh installs apache2-utils)"
            ));
            return None;
        }
        if tls && !Path::new(OPENSSL).is_file() {
            skip_or_panic(&format!(
                "{OPENSSL} is needed (scripts/setup.sh installs openssl)"
            ));
            return None;
        }
        let mut last = String::new();
        // A port taken between free_port() and the registry's bind is retried with another.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("registry directory");
            let port = free_port();
            let mut auth = String::new();
            if let Some((name, password)) = user {
                let out = Command::new(HTPASSWD)
                    .args(["-B", "-b", "-n", name, password])
                    .output()
                    .expect("run htpasswd");
                assert!(out.status.success(), "htpasswd failed");
                let file = dir.path().join("htpasswd");
                fs::write(&file, &out.stdout).expect("write htpasswd");
                auth = format!(
                    "auth:\n  htpasswd:\n    realm: subvol-test\n    path: {}\n",
                    file.display()
                );
            }
            let mut http_tls = String::new();
            if tls {
                make_certificates(dir.path());
                http_tls = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    dir.path().join("server.pem").display(),
                    dir.path().join("server.key").display()
                );
            }
            let conf = dir.path().join("config.yml");
            fs::write(
                &conf,
                format!(
                    "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: 127.0.0.1:{port}\n{http_tls}{auth}",
                    dir.path().join("store").display()
                ),
            )
            .expect("write the registry config");
            let log = fs::File::create(dir.path().join("registry.log")).expect("registry log");
            let mut child = Command::new(REGISTRY)
                .arg("serve")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            if wait_for_port(port, &mut child) {
                return Some(Registry {
                    child,
                    port,
                    tls,
                    dir,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            last = fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        }
        panic!("docker-registry did not start; its log:\n{last}");
    }

    /// `oci://127.0.0.1:PORT/NAME` with TLS, else `oci+http://...`.
    pub fn url(&self, name: &str) -> String {
        let scheme = if self.tls { "oci" } else { "oci+http" };
        format!("{scheme}://127.0.0.1:{}/{name}", self.port)
    }

    /// The CA that signed the TLS certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The registry's config file (for `docker-registry garbage-collect`).
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// `http://127.0.0.1:PORT/v2/` (plain HTTP registries).
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}/v2/", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The data file of a blob in the registry's storage.
    pub fn blob_data(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("store/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// A scratch directory that lives as long as the registry.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What [`Proxy`] does in front of a registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Token authentication: every `/v2/` request needs `Authorization: Bearer TOKEN`, else
    /// 401 with a `Bearer realm=".../token"` challenge; `/token` hands out TOKEN for the basic
    /// credentials [`PROXY_USER`]:[`PROXY_PASSWORD`] (and logs the scopes asked for).
    Bearer,
    /// Range headers are dropped: the registry answers every request with the whole blob.
    NoRange,
}

pub const PROXY_USER: &str = "tokenuser";
pub const PROXY_PASSWORD: &str = "token-pass";

/// A Python reverse proxy in front of a registry, killed on drop.
pub struct Proxy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

const PROXY: &str = r#"
import base64, http.server, json, socketserver, sys, urllib.error, urllib.request
upstream, mode, scopes = sys.argv[1], sys.argv[2], sys.argv[3]
USER, PASSWORD, TOKEN = sys.argv[4], sys.argv[5], "t0ken-" + "x" * 20

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a):
        return None
opener = urllib.request.build_opener(NoRedirect)

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def reply(self, status, headers, body):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        host = self.headers.get("Host")
        if self.path.startswith("/token"):
            want = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != want:
                return self.reply(401, [], b'{"errors":[{"code":"UNAUTHORIZED"}]}')
            with open(scopes, "a") as f:
                f.write(self.path + "\n")
            tok = json.dumps({"token": TOKEN, "expires_in": 300}).encode()
            return self.reply(200, [("Content-Type", "application/json")], tok)
        if mode == "bearer" and self.headers.get("Authorization") != "Bearer " + TOKEN:
            ch = f'Bearer realm="http://{host}/token",service="subvol-test"'
            return self.reply(401, [("WWW-Authenticate", ch)], b'{"errors":[{"code":"UNAUTHORIZED"}]}')
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("authorization", "connection", "content-length")
                   and not (mode == "norange" and k.lower() == "range")}
        req = urllib.request.Request(upstream + self.path, data=body, headers=headers,
                                     method=self.command)
        try:
            resp = opener.open(req)
        except urllib.error.HTTPError as e:
            resp = e
        data = resp.read()
        hs = [(k, v) for k, v in resp.headers.items()
              if k.lower() not in ("content-length", "transfer-encoding", "connection")]
        self.reply(resp.status if hasattr(resp, "status") else resp.code, hs, data)
    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address):
        # A client closing a connection it no longer needs is no error of the test.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)
s = S(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

impl Proxy {
    /// Starts a proxy in `mode` in front of the plain-HTTP `registry`; `None` (after
    /// [`skip_or_panic`]) without python3.
    pub fn start(registry: &Registry, mode: ProxyMode) -> Option<Proxy> {
        use std::io::{BufRead, BufReader};
        if !Path::new("/usr/bin/python3").is_file() {
            skip_or_panic("/usr/bin/python3 is needed for the registry proxy");
            return None;
        }
        assert!(!registry.tls, "the proxy talks plain HTTP to the registry");
        let dir = tempfile::tempdir().expect("proxy directory");
        let script = dir.path().join("proxy.py");
        fs::write(&script, PROXY).expect("write proxy.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(format!("http://127.0.0.1:{}", registry.port))
            .arg(match mode {
                ProxyMode::Bearer => "bearer",
                ProxyMode::NoRange => "norange",
            })
            .arg(dir.path().join("scopes.log"))
            .arg(PROXY_USER)
            .arg(PROXY_PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("proxy stdout"))
            .read_line(&mut line)
            .expect("read the proxy's port");
        let port = line.trim().parse().expect("proxy port");
        Some(Proxy { child, port, dir })
    }

    /// `oci+http://127.0.0.1:PORT/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("oci+http://127.0.0.1:{}/{name}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The token requests served (path and query), in order.
    pub fn token_requests(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("scopes.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
