//! Serving the Observer service on TCP (Hubble's port is 4244) and/or a unix socket.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;

use crate::observer::observer_server::ObserverServer;
use crate::service::ObserverService;
use crate::source::FlowSource;

/// Hubble's TCP port for the Observer API.
pub const DEFAULT_PORT: u16 = 4244;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Neither a TCP address nor a unix socket path was given.
    #[error("nothing to listen on: give a TCP address, a unix socket path or both")]
    NoListener,
    /// Binding the TCP listener failed.
    #[error("binding TCP {addr}: {source}")]
    BindTcp {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Preparing or binding the unix socket failed.
    #[error("binding unix socket {path}: {source}")]
    BindUnix {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The gRPC server failed while serving.
    #[error("serving the Observer API: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The Observer API bound to its listeners, ready to run.
pub struct HubbleServer<S: FlowSource> {
    service: ObserverService<S>,
    tcp: Option<TcpListener>,
    unix: Option<(UnixListener, PathBuf)>,
}

impl<S: FlowSource> std::fmt::Debug for HubbleServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubbleServer")
            .field("tcp", &self.tcp_local_addr())
            .field("unix", &self.unix_path())
            .finish()
    }
}

/// Removes a stale socket file at `path` (only a socket: never another kind of file) and makes
/// its parent directory.
fn prepare_unix_path(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl<S: FlowSource> HubbleServer<S> {
    /// Binds the listeners for `service`: TCP at `tcp_addr` (port 0 picks a free port) and/or a
    /// unix socket at `unix_path` (a stale socket there is replaced).
    pub async fn bind(
        service: ObserverService<S>,
        tcp_addr: Option<SocketAddr>,
        unix_path: Option<PathBuf>,
    ) -> Result<Self, ServeError> {
        if tcp_addr.is_none() && unix_path.is_none() {
            return Err(ServeError::NoListener);
        }
        let tcp = match tcp_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::BindTcp { addr, source })?,
            ),
            None => None,
        };
        let unix = match unix_path {
            Some(path) => {
                let bind = prepare_unix_path(&path).and_then(|()| UnixListener::bind(&path));
                match bind {
                    Ok(listener) => Some((listener, path)),
                    Err(source) => return Err(ServeError::BindUnix { path, source }),
                }
            }
            None => None,
        };
        Ok(HubbleServer { service, tcp, unix })
    }

    /// The bound TCP address, if listening on TCP.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The unix socket path, if listening on one.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_ref().map(|(_, p)| p.as_path())
    }

    /// Serves until `shutdown` completes (then stops accepting, ends follow streams, lets other
    /// open calls finish and removes the unix socket) or a listener fails.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let closer = self.service.clone();
        let svc = ObserverServer::new(self.service);
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            // An error means the sender is gone, which also means stop.
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let tcp = self.tcp.map(|listener| {
            Server::builder()
                .add_service(svc.clone())
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stopped(stop_rx.clone()),
                )
        });
        let (unix, unix_path) = match self.unix {
            Some((listener, path)) => (
                Some(
                    Server::builder()
                        .add_service(svc.clone())
                        .serve_with_incoming_shutdown(
                            UnixListenerStream::new(listener),
                            stopped(stop_rx.clone()),
                        ),
                ),
                Some(path),
            ),
            None => (None, None),
        };
        let serve = async {
            let tcp = async {
                match tcp {
                    Some(server) => server.await,
                    None => Ok(()),
                }
            };
            let unix = async {
                match unix {
                    Some(server) => server.await,
                    None => Ok(()),
                }
            };
            tokio::try_join!(tcp, unix).map(|_| ())
        };
        tokio::pin!(serve);
        let result = tokio::select! {
            result = &mut serve => result,
            () = shutdown => {
                let _ = stop_tx.send(true);
                // Graceful shutdown waits for open calls; follow streams would never end.
                closer.close_streams();
                serve.await
            }
        };
        if let Some(path) = unix_path {
            let _ = std::fs::remove_file(path);
        }
        Ok(result?)
    }
}

/// Serves the Observer API over `source` on TCP (`tcp_addr`, e.g. `0.0.0.0:4244`) and/or a unix
/// socket (`unix_path`) until a listener fails.
pub async fn serve<S: FlowSource>(
    source: Arc<S>,
    tcp_addr: Option<SocketAddr>,
    unix_path: Option<PathBuf>,
) -> Result<(), ServeError> {
    let server = HubbleServer::bind(ObserverService::new(source), tcp_addr, unix_path).await?;
    server.run_until(std::future::pending()).await
}
