//! Extra CA certificates for builds behind a TLS-intercepting proxy.
//!
//! The classic builder has no build secrets, and a certificate passed as a
//! build argument or copied into the context would stay in the image (its
//! history or a layer). So the bundle is served over plain HTTP on the
//! engine's bridge gateway for as long as the builds run; the templates'
//! `with-build-ca` wrapper fetches it into a temporary file at the start of a
//! `RUN` and deletes it before that `RUN` ends. Only its URL, which is fixed
//! per machine, is a build argument. This module serves one file and nothing
//! else; it binds only the bridge address, never every interface.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::engine::{Engine, EngineError};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(
        "cannot read the build CA bundle {path}: {source} (set build.ca_bundle in labforge.toml to a PEM file)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the build CA bundle {path} holds no PEM certificate")]
    NotPem { path: PathBuf },
    #[error(
        "the build CA bundle {path} holds a private key; give a file with the certificates only (every build container could read it)"
    )]
    PrivateKey { path: PathBuf },
    #[error("the engine's bridge network has no gateway address to serve the build CA bundle on")]
    NoGateway,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(
        "cannot serve the build CA bundle on {addr}: {source} (another labforge build may be running; set build.ca_port to a free port)"
    )]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// The running server; it stops when dropped.
pub struct CaServer {
    url: String,
    task: JoinHandle<()>,
}

impl CaServer {
    /// Serve `bundle` at `http://<bridge gateway>:<port>/ca.pem`.
    pub async fn start(engine: &Engine, bundle: &Path, port: u16) -> Result<CaServer, CaError> {
        let pem = std::fs::read(bundle).map_err(|source| CaError::Read {
            path: bundle.to_path_buf(),
            source,
        })?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(CaError::NotPem {
                path: bundle.to_path_buf(),
            });
        }
        if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
            return Err(CaError::PrivateKey {
                path: bundle.to_path_buf(),
            });
        }
        let gateway = engine.bridge_gateway().await?.ok_or(CaError::NoGateway)?;
        CaServer::serve(&gateway, port, pem).await
    }

    /// Serve `pem` on `host:port` (port 0: any free one).
    pub async fn serve(host: &str, port: u16, pem: Vec<u8>) -> Result<CaServer, CaError> {
        // `SocketAddr` brackets an IPv6 gateway (`[fd00::1]:7519`).
        let addr = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port).to_string(),
            Err(_) => format!("{host}:{port}"),
        };
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| CaError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local: SocketAddr = listener.local_addr().map_err(|source| CaError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let url = format!("http://{local}/ca.pem");
        tracing::info!(ca.url = %url, "serving the build CA bundle");
        let pem = Arc::new(pem);
        let task = tokio::spawn(async move {
            loop {
                let (mut socket, peer) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        // E.g. out of file descriptors: back off, never spin.
                        tracing::warn!(error = %e, "build CA server: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let pem = Arc::clone(&pem);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    // Read the request head (bounded); the body is never used.
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                        let read = tokio::time::timeout(
                            std::time::Duration::from_secs(10),
                            socket.read(&mut buf),
                        );
                        match read.await {
                            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                            Ok(Ok(n)) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let first = request.split(|&b| b == b'\n').next().unwrap_or_default();
                    let ok =
                        first.starts_with(b"GET /ca.pem ") || first.starts_with(b"HEAD /ca.pem ");
                    let head_only = first.starts_with(b"HEAD ");
                    tracing::debug!(peer = %peer, ok, "build CA request");
                    let response: Vec<u8> = if ok {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/x-pem-file\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            pem.len()
                        )
                        .into_bytes();
                        if !head_only {
                            r.extend_from_slice(&pem);
                        }
                        r
                    } else {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    };
                    let _ = socket.write_all(&response).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Ok(CaServer { url, task })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for CaServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_bundle_and_nothing_else() {
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec();
        let server = CaServer::serve("127.0.0.1", 0, pem.clone())
            .await
            .expect("test value");
        let get = |path: &str| {
            let addr = server
                .url()
                .trim_start_matches("http://")
                .split('/')
                .next()
                .expect("test value")
                .to_string();
            let path = path.to_string();
            async move {
                let mut s = tokio::net::TcpStream::connect(addr)
                    .await
                    .expect("test value");
                s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                    .await
                    .expect("test value");
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.expect("test value");
                String::from_utf8(out).expect("test value")
            }
        };
        let ok = get("/ca.pem").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with(std::str::from_utf8(&pem).expect("test value")));
        let other = get("/etc/passwd").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    }

    #[tokio::test]
    async fn a_busy_port_is_a_clear_error() {
        let first = CaServer::serve("127.0.0.1", 0, b"x".to_vec())
            .await
            .expect("test value");
        let port: u16 = first
            .url()
            .rsplit(':')
            .next()
            .expect("test value")
            .trim_end_matches("/ca.pem")
            .parse()
            .expect("test value");
        let err = CaServer::serve("127.0.0.1", port, b"x".to_vec())
            .await
            .err()
            .expect("test value");
        assert!(err.to_string().contains("build.ca_port"), "{err}");
    }
}
