//! `wmoe serve`: an OpenAI-compatible HTTP server (tokio + axum).
//!
//! `engine` is the boundary to the GPU: one thread owns the device and serves jobs (prompt
//! tokens in, token events out); everything else is the HTTP side, per request: the chat
//! template, tokenization, detokenization and stop strings (`text`, `pipeline`), the
//! reasoning and tool-call parser, OpenAI's response and stream shapes (`openai`), request
//! checks (`request`), limits and the API key (`http`), the accept loop with its connection
//! limit and idle timeout (`listener`), `/metrics`, and the chat page at `/` (`ui`).

pub mod engine;
mod http;
mod listener;
mod metrics;
mod openai;
mod pipeline;
mod request;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use engine::{Busy, Engine, EngineOptions, Event, Job};
pub use http::{check_request, App, Limits, ModelText};
pub use metrics::Stats;

use crate::chat::ChatTemplate;
use crate::error::{Error, Result};
use crate::runtime::ModelFiles;

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (max, idle) = (app.limits.max_connections, app.limits.idle_timeout);
    let router = http::router(Arc::new(app));
    listener::serve(listener, router, max, idle, shutdown).await
}

/// `wmoe serve`: reads the model files (`open`) and loads the model on the engine thread
/// (again from `open` should the device be lost), listens on `host:port`, says where on
/// stderr, and serves until SIGINT or SIGTERM.
pub fn run(
    open: impl Fn() -> Result<ModelFiles> + Send + 'static,
    template: ChatTemplate,
    engine: EngineOptions,
    limits: Limits,
    host: &str,
    port: u16,
) -> Result<()> {
    let describe = move |f: &ModelFiles| ModelText::new(f, template);
    let (engine, text) = Engine::start(open, describe, engine)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Input(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind((host, port))
            .await
            .map_err(|e| Error::Input(format!("cannot listen on {host}:{port}: {e}")))?;
        let addr: SocketAddr = listener
            .local_addr()
            .map_err(|e| Error::Input(format!("no local address: {e}")))?;
        eprintln!(
            "wmoe serve: {} on http://{addr}/v1 ({} slot(s), context {}); chat page: http://{addr}/",
            text.name,
            engine.slots(),
            limits.context
        );
        let app = App {
            text,
            engine,
            limits,
        };
        serve(listener, app, shutdown_signal())
            .await
            .map_err(|e| Error::Input(format!("the server failed: {e}")))?;
        eprintln!("wmoe serve: shut down");
        Ok(())
    })
}

/// SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}
