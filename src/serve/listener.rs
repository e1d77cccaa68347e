//! The accept loop: at most N connections served at once (the next one is accepted when one
//! closes; the rest wait in the kernel's backlog), each dropped when a request's head does
//! not arrive within the idle timeout — a client that connects and sends nothing, sends its
//! headers a byte at a time, or keeps an idle connection open — so no one holds a place
//! among the N for long without asking for anything. The timer runs only while the server
//! waits for a request head, never while it reads a body or answers.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Serves `router` on `listener` until `shutdown` completes; then accepts no more, lets each
/// connection finish the request it is answering, and returns when all have closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    idle_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let open = Arc::new(Semaphore::new(max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let next = async {
            let permit = open
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            (permit, accept(&listener).await)
        };
        let (permit, stream) = tokio::select! {
            next = next => next,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(idle_timeout);
            let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stopping.changed() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    let _ = stop.send(true);
    drop(stopping);
    // Every connection task holds a receiver until it ends.
    stop.closed().await;
    Ok(())
}

/// The next connection.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            // Out of file descriptors and the like: wait a moment, as axum's own loop does.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
