//! The local API server: one JSON request per connection on a unix socket.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use plexus_api::{Request, Response};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};
use tracing::warn;

use crate::{endpoints::Agent, observer::ObserverHandle};

/// Serves the API until the listener fails.
pub async fn serve(
    socket: PathBuf,
    agent: Arc<Mutex<Agent>>,
    obs: ObserverHandle,
) -> anyhow::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket file left by a crashed agent would make bind fail.
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "API listening");
    loop {
        let (stream, _) = listener.accept().await?;
        let (agent, obs) = (agent.clone(), obs.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, agent, obs).await {
                warn!(error = %e, "API connection");
            }
        });
    }
}

async fn connection(
    stream: UnixStream,
    agent: Arc<Mutex<Agent>>,
    obs: ObserverHandle,
) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let resp = match serde_json::from_str::<Request>(&line) {
        // A capture waits for packets: it must not hold the agent meanwhile.
        Ok(Request::Capture(req)) => crate::capture::capture(agent, obs, req).await,
        Ok(req) => {
            tokio::task::spawn_blocking(move || match agent.lock() {
                Ok(mut a) => a.handle(req),
                Err(_) => Response::Error {
                    message: "agent state poisoned".into(),
                },
            })
            .await?
        }
        Err(e) => {
            warn!(error = %e, "bad API request");
            Response::Error {
                message: format!("bad request: {e}"),
            }
        }
    };
    let mut out = serde_json::to_vec(&resp)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    Ok(())
}
